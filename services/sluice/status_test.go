package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// statusStore holds a loaded day with rejections, a failed day and a day
// whose window closed without rows.
func statusStore(t *testing.T) store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := duckstore.Open(ctx, filepath.Join(t.TempDir(), "s.duckdb"), duckstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2024, 3, 2, 18, 30, 0, 0, time.UTC)
	b := &schemas.MappedBatch{RunID: "run-loaded", ExtractID: "x1", Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: "2024-03-01",
		Trigger: string(vocab.TriggerScheduled), Fence: 1, Kind: schemas.KindRows, Type: "events", RowCount: 5,
		Rejected: []schemas.ReasonCount{{Reason: "missing_event_name", Count: 2}, {Reason: "timestamp_out_of_range", Count: 1}}}
	for i := range 2 {
		b.Events = append(b.Events, schemas.Event{Position: int64(i), EventName: "e", TimeMs: 1709251200000,
			UnitIDs: []schemas.UnitID{{IDType: "userID", Value: "u"}}, MetadataJSON: "{}"})
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.UpdateRun(ctx, store.RunUpdate{RunID: "run-loaded", Project: demo.ProjectName, Ingestion: demo.WebEvents, Type: "events",
		Date: "2024-03-01", Trigger: vocab.TriggerScheduled, Fence: 1, Status: vocab.StatusScheduled, At: at.Add(-time.Minute)}))
	must(st.StageBatches(ctx, []*schemas.MappedBatch{b}))
	if _, err := st.CompleteRun(ctx, store.RunEnd{RunID: "run-loaded", ExtractID: "x1", Project: demo.ProjectName, Ingestion: demo.WebEvents,
		Type: "events", Date: "2024-03-01", Trigger: vocab.TriggerScheduled, Fence: 1, Batches: 1, Rows: 5, MaxRejectedShare: 1, At: at}); err != nil {
		t.Fatal(err)
	}
	must(st.RecordWarehouseCount(ctx, demo.ProjectName, demo.WebEvents, "2024-03-01", 7, "", at.Add(time.Hour)))
	must(st.UpdateRun(ctx, store.RunUpdate{RunID: "run-failed", Project: demo.ProjectName, Ingestion: demo.WebEvents, Type: "events",
		Date: "2024-03-02", Trigger: vocab.TriggerAPI, Status: vocab.StatusFailed, ErrorCategory: vocab.CategoryQuery,
		ErrorMessage: strings.Repeat("relation does not exist; ", 10), At: at}))
	must(st.UpdateRun(ctx, store.RunUpdate{RunID: "nodata-x", Project: demo.ProjectName, Ingestion: demo.DailyMetrics, Type: "metrics",
		Date: "2024-03-02", Trigger: vocab.TriggerScheduled, Status: vocab.StatusNoDataYet, Message: "no rows for 2024-03-02 by 16:00", At: at}))
	return st
}

func TestStatus(t *testing.T) {
	st := statusStore(t)
	settings := demo.Config(demo.ConfigOptions{APIKey: "k"})
	ctx := context.Background()
	tests := []struct {
		name string
		o    statusOptions
		want []string
		not  []string
	}{
		{"days", statusOptions{from: "2024-03-01", to: "2024-03-03"}, []string{
			"demo/web_events (events): daily at 10:00, days from midnight to midnight Etc/GMT+8",
			"demo/web_events_api (events): api_triggered",
			"2024-03-01 web_events       IMPORT_SUCCESSFUL          5         7         2         3 03-02 18:30",
			"    rejected: missing_event_name=2, timestamp_out_of_range=1",
			"2024-03-02 web_events       FAILED                     -         -         0         0 -",
			"    error: QUERY_ERROR: relation does not exist;",
			"2024-03-02 daily_metrics    NO_DATA_YET",
			"    no rows for 2024-03-02 by 16:00",
		}, nil},
		{"one source", statusOptions{source: demo.DailyMetrics, from: "2024-03-01", to: "2024-03-03"},
			[]string{"NO_DATA_YET"}, []string{"web_events"}},
		{"runs", statusOptions{runs: true, limit: 10}, []string{
			"run-loaded                       2024-03-01 web_events     scheduled IMPORT_SUCCESSFUL          2",
			"    scheduled 03-02 18:29:00 → successful 18:30:00",
			"    extracted 5, loaded 2, rejected 3 (missing_event_name=2, timestamp_out_of_range=1)",
			"run-failed", "api", "    error: QUERY_ERROR",
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := status(ctx, settings, st, tt.o, &out); err != nil {
				t.Fatal(err)
			}
			text := out.String()
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("output lacks %q:\n%s", w, text)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(text, w) {
					t.Errorf("output has %q:\n%s", w, text)
				}
			}
			for _, line := range strings.Split(text, "\n") {
				if n := utf8.RuneCountInString(line); n > statusWidth {
					t.Errorf("line of %d columns: %q", n, line)
				}
			}
		})
	}

	t.Run("json carries the schedule and time zone", func(t *testing.T) {
		var out bytes.Buffer
		if err := status(ctx, settings, st, statusOptions{source: demo.WebEvents, from: "2024-03-01", to: "2024-03-01", json: true}, &out); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Days []struct {
				Date      string `json:"ds"`
				Timezone  string `json:"timezone"`
				Schedule  string `json:"schedule"`
				RowsCount int64  `json:"rowCount"`
				Now       *int64 `json:"warehouseCountNow"`
			} `json:"days"`
		}
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Days) != 1 || got.Days[0].Timezone != config.DefaultTimezone || got.Days[0].Schedule != "daily at 10:00" ||
			got.Days[0].RowsCount != 2 || got.Days[0].Now == nil || *got.Days[0].Now != 7 {
			t.Errorf("json %s", out.String())
		}
	})

	t.Run("an unknown source is a usage error", func(t *testing.T) {
		err := status(ctx, settings, st, statusOptions{source: "nope"}, &bytes.Buffer{})
		if _, ok := err.(usageError); !ok {
			t.Errorf("err %v, want a usage error", err)
		}
	})
}
