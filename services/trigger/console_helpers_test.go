package trigger

import (
	"context"
	"fmt"
	"testing"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// consoleDay is one seeded day and what the console must show for it.
type consoleDay struct {
	project, ingestion, date string
	status                   vocab.Status // the store status to reach
	mapped                   int64
	rejected                 map[string]int64
	wantClass                string
}

// consoleSeed is the days the console tests seed: alpha's ev_daily has a
// loaded, an empty, a failed and a running day; beta has one loaded day.
var consoleSeed = []consoleDay{
	{"alpha", "ev_daily", "2024-03-05", vocab.StatusSuccessful, 8, map[string]int64{"missing_event_name": 2, "bad_timestamp": 1}, "loaded"},
	{"alpha", "ev_daily", "2024-03-06", vocab.StatusLoadedEmpty, 0, nil, "loaded-empty"},
	{"alpha", "ev_daily", "2024-03-07", vocab.StatusFailed, 0, nil, "failed"},
	{"alpha", "ev_daily", "2024-03-08", vocab.StatusScheduled, 0, nil, "running"},
	{"beta", "beta_ev_api", "2024-03-05", vocab.StatusSuccessful, 4, nil, "loaded"},
}

// warehouseNow is the watcher's latest count seeded for alpha's loaded day.
const warehouseNow = 12

// seedConsole writes consoleSeed through the store's own write path.
func seedConsole(tb testing.TB, st store.Store) {
	tb.Helper()
	ctx := context.Background()
	for i, d := range consoleSeed {
		runID := fmt.Sprintf("run-%s-%s", d.ingestion, d.date)
		u := store.RunUpdate{RunID: runID, Project: d.project, Ingestion: d.ingestion, Type: "events", Date: d.date,
			Trigger: vocab.TriggerScheduled, Fence: int64(i + 1), Status: vocab.StatusScheduled, At: testNow}
		if err := st.UpdateRun(ctx, u); err != nil {
			tb.Fatalf("seed run %s: %v", runID, err)
		}
		switch d.status {
		case vocab.StatusScheduled:
			continue
		case vocab.StatusFailed:
			u.Status, u.ErrorCategory, u.ErrorMessage = vocab.StatusFailed, vocab.CategoryQuery, "relation events does not exist"
			if err := st.UpdateRun(ctx, u); err != nil {
				tb.Fatalf("seed failed run %s: %v", runID, err)
			}
			continue
		}
		b := &schemas.MappedBatch{RunID: runID, ExtractID: "x-" + runID, Project: d.project, Ingestion: d.ingestion, Date: d.date,
			Trigger: string(u.Trigger), Fence: u.Fence, Kind: schemas.KindRows, Type: "events", Seq: 0}
		for p := range d.mapped {
			b.Events = append(b.Events, schemas.Event{Position: p, EventName: "purchase", TimeMs: testNow.UnixMilli(),
				UnitIDs: []schemas.UnitID{{IDType: "userID", Value: fmt.Sprint("u", p)}}, MetadataJSON: "{}"})
		}
		var rejected int64
		for reason, n := range d.rejected {
			b.Rejected = append(b.Rejected, schemas.ReasonCount{Reason: reason, Count: n})
			rejected += n
		}
		b.RowCount = d.mapped + rejected
		if err := st.StageBatches(ctx, []*schemas.MappedBatch{b}); err != nil {
			tb.Fatalf("stage %s: %v", runID, err)
		}
		out, err := st.CompleteRun(ctx, store.RunEnd{RunID: runID, ExtractID: b.ExtractID, Project: d.project, Ingestion: d.ingestion,
			Type: "events", Date: d.date, Trigger: u.Trigger, Fence: u.Fence, Batches: 1, Rows: b.RowCount, At: testNow})
		if err != nil || out != store.Swapped {
			tb.Fatalf("complete %s: outcome %v, %v", runID, out, err)
		}
	}
	if err := st.RecordWarehouseCount(ctx, "alpha", "ev_daily", "2024-03-05", warehouseNow, "", testNow); err != nil {
		tb.Fatalf("record warehouse count: %v", err)
	}
}
