package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// TestReloadReasons changes loaded days in the warehouse and checks that
// exactly the changed days reload, an api_triggered ingestion included,
// each reload run saying why (count or content, old and new figures).
func TestReloadReasons(t *testing.T) {
	lastDay := civil.DateOf(time.Now().UTC()).AddDays(-1)
	spec := demo.Spec{Days: 3, LastDay: lastDay, EventsPerDay: 1000, MetricsPerDay: 200, BadRowEvery: 100, Seed: 11}
	s := startE2E(t, spec, config.Pipeline{CatchUpDays: 3, WatchInterval: 200 * time.Millisecond, ReloadThreshold: 0.05})
	days := spec.Dates()
	countDay, contentDay, quietDay := days[0], days[1], days[2]

	// The api_triggered ingestion loads the count day on request only.
	resp, body := s.post("/v1/mark_data_ready_dwh", fmt.Sprintf(`{"datestamps": %q, "type": "events", "sources": [%q]}`, countDay, demo.WebEventsAPI))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("mark_data_ready: %d %s", resp.StatusCode, body)
	}
	apiBefore := s.assertEventsMatch(demo.WebEventsAPI, countDay)
	quietBefore := s.waitDay(demo.WebEvents, quietDay, "loaded", loaded)
	contentBefore := s.waitDay(demo.WebEvents, contentDay, "fingerprinted", func(d store.Day) bool { return loaded(d) && d.Fingerprint != "" })
	s.waitDay(demo.WebEvents, countDay, "loaded", loaded)

	ctx := context.Background()
	if _, err := demo.AlterPostgres(ctx, s.warehouse, s.whSchema, spec, demo.Alteration{Table: demo.TableEvents, Day: countDay, AddShare: 0.10, Round: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := demo.AlterPostgres(ctx, s.warehouse, s.whSchema, spec, demo.Alteration{Table: demo.TableEvents, Day: contentDay, ChangeShare: 0.2, Round: 1}); err != nil {
		t.Fatal(err)
	}

	reloadRun := func(ingestion string, day civil.Date, want string) {
		t.Helper()
		good, bad := s.warehouseEvents(day)
		s.waitDay(ingestion, day, "reloaded", func(d store.Day) bool {
			return loaded(d) && d.Extracted == int64(len(good)+bad) && runTrigger(s, ingestion, day, d.VisibleRunID) == vocab.TriggerReload
		})
		s.assertEventsMatch(ingestion, day)
		for _, r := range s.runsOf(ingestion, day) {
			if r.Trigger == vocab.TriggerReload && r.Status == vocab.StatusSuccessful {
				if !strings.Contains(r.Message, want) {
					t.Errorf("%s %s: reload run message %q does not say %q", ingestion, day, r.Message, want)
				}
				return
			}
		}
		t.Errorf("%s %s: no successful reload run", ingestion, day)
	}
	// More rows: both ingestions reading the table reload, api_triggered too.
	apiGood, apiBad := s.warehouseEvents(countDay)
	reloadRun(demo.WebEvents, countDay, fmt.Sprintf("count changed in the warehouse: %d rows loaded, %d now", apiBefore.Extracted, len(apiGood)+apiBad))
	reloadRun(demo.WebEventsAPI, countDay, "count changed in the warehouse")
	// Same count, new values: a content reload.
	reloadRun(demo.WebEvents, contentDay, "content changed in the warehouse")
	if d := s.waitDay(demo.WebEvents, contentDay, "loaded", loaded); d.Extracted != contentBefore.Extracted {
		t.Errorf("content change moved the count %d → %d", contentBefore.Extracted, d.Extracted)
	}
	// The untouched day did not reload.
	if d := s.waitDay(demo.WebEvents, quietDay, "loaded", loaded); d.VisibleRunID != quietBefore.VisibleRunID {
		t.Errorf("%s reloaded without a change: run %s → %s", quietDay, quietBefore.VisibleRunID, d.VisibleRunID)
	}
}

func runTrigger(s *e2eStack, ingestion string, day civil.Date, runID string) vocab.Trigger {
	for _, r := range s.runsOf(ingestion, day) {
		if r.RunID == runID {
			return r.Trigger
		}
	}
	return ""
}
