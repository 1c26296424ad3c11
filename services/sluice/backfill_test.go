package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// TestBackfillAndRequest drives `sluice backfill` and `sluice request`
// against every service running over kfake, Redis and PostgreSQL.
func TestBackfillAndRequest(t *testing.T) {
	lastDay := civil.DateOf(time.Now().UTC()).AddDays(-1)
	spec := demo.Spec{Days: 3, LastDay: lastDay, EventsPerDay: 300, MetricsPerDay: 50, BadRowEvery: 50, Seed: 11}
	s := startE2E(t, spec, config.Pipeline{CatchUpDays: 3})
	days := spec.Dates()
	ctx := t.Context()

	t.Run("backfill twice replaces the days without duplicating a row", func(t *testing.T) {
		// Let the schedule's catch-up finish first, or its run, queued
		// behind the backfill's, would be the newer one and win.
		for _, day := range days {
			s.waitDay(demo.WebEvents, day, "caught up", loaded)
			deadline := time.Now().Add(60 * time.Second)
			for !s.allFinished(demo.WebEvents, day) {
				if time.Now().After(deadline) {
					t.Fatalf("runs of %s never finished: %+v", day, s.runsOf(demo.WebEvents, day))
				}
				time.Sleep(20 * time.Millisecond) // polling the running pipeline
			}
		}
		for round := 1; round <= 2; round++ {
			var stdout, stderr bytes.Buffer
			err := backfill(ctx, s.in, backfillOptions{source: demo.WebEvents, from: days[0], to: days[2], wait: true,
				poll: 50 * time.Millisecond, timeout: 90 * time.Second}, &stdout, &stderr)
			if err != nil {
				t.Fatalf("round %d: %v\nstderr:\n%s", round, err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if len(lines) != 3 {
				t.Fatalf("round %d: stdout %q, want one line per day", round, stdout.String())
			}
			progress := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(progress) != 3 || !strings.Contains(progress[0], "loaded") {
				t.Errorf("round %d: progress (stderr not a terminal: a line per day) %q", round, stderr.String())
			}
			for i, day := range days {
				d := s.assertEventsMatch(demo.WebEvents, day)
				runID := strings.Fields(lines[i])[1]
				if !strings.HasPrefix(lines[i], day.String()) {
					t.Errorf("line %q is not for %s", lines[i], day)
				}
				r, err := s.in.Store.Run(ctx, demo.ProjectName, runID)
				if err != nil || r.Trigger != vocab.TriggerBackfill || r.Status != vocab.StatusSuccessful {
					t.Errorf("round %d %s: run %s %+v (%v), want a successful backfill", round, day, runID, r, err)
				}
				if d.VisibleRunID != runID {
					t.Errorf("round %d %s: day shows run %s, want the backfill's %s", round, day, d.VisibleRunID, runID)
				}
			}
		}
		usage, err := s.in.Store.Usage(ctx, demo.ProjectName, days[0].String(), days[2].String())
		if err != nil {
			t.Fatal(err)
		}
		var backfilled int64
		for _, u := range usage {
			if u.Trigger == vocab.TriggerBackfill && u.Ingestion == demo.WebEvents {
				backfilled += u.RowsLoaded
			}
		}
		if backfilled == 0 {
			t.Errorf("usage ledger has no backfilled rows: %+v", usage)
		}
	})

	t.Run("a backfill over more than a year or an unknown source is refused", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		if code := dispatch(ctx, []string{"backfill", "--config", "unused.yaml", "--source", demo.WebEvents, "--from", "2023-01-01", "--to", "2024-01-02"}, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "at most 366") {
			t.Errorf("367 days: exit %d, stderr %q", code, stderr.String())
		}
		err := backfill(ctx, s.in, backfillOptions{source: "nope", from: days[0], to: days[0]}, &stdout, &stderr)
		if _, ok := err.(usageError); !ok {
			t.Errorf("unknown source: %v, want a usage error", err)
		}
	})

	t.Run("sluice request publishes a raw request that loads the day", func(t *testing.T) {
		var stdout bytes.Buffer
		day := days[2]
		if err := request(ctx, s.in, requestOptions{source: demo.WebEventsAPI, date: day, reason: "dbt run 42"}, &stdout); err != nil {
			t.Fatal(err)
		}
		var runID string
		for _, line := range strings.Split(stdout.String(), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "run_id" {
				runID = f[1]
			}
		}
		if !strings.HasPrefix(runID, "req-") {
			t.Fatalf("stdout %q names no run", stdout.String())
		}
		d := s.assertEventsMatch(demo.WebEventsAPI, day)
		if d.VisibleRunID != runID {
			t.Errorf("day shows run %s, want the request's %s", d.VisibleRunID, runID)
		}
		r, err := s.in.Store.Run(ctx, demo.ProjectName, runID)
		if err != nil || r.Trigger != vocab.TriggerRequest || r.Fence == 0 {
			t.Errorf("run %+v (%v): want trigger request with a lease fence", r, err)
		}
	})
}

func (s *e2eStack) allFinished(ingestion string, day civil.Date) bool {
	for _, r := range s.runsOf(ingestion, day) {
		if !r.Status.Terminal() {
			return false
		}
	}
	return true
}

// TestBackfillExitsNonZeroOnFailure follows runs straight from a store.
func TestBackfillExitsNonZeroOnFailure(t *testing.T) {
	ctx := context.Background()
	st, err := duckstore.Open(ctx, filepath.Join(t.TempDir(), "s.duckdb"), duckstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2024, 1, 3, 12, 0, 0, 0, time.UTC)
	for _, u := range []store.RunUpdate{
		{RunID: "r1", Status: vocab.StatusFailed, ErrorCategory: vocab.CategoryQuery, ErrorMessage: "syntax error"},
		{RunID: "r2", Status: vocab.StatusScheduled},
	} {
		u.Project, u.Ingestion, u.Type, u.Trigger, u.At = "p", "src", "events", vocab.TriggerBackfill, at
		u.Date = map[string]string{"r1": "2024-01-01", "r2": "2024-01-02"}[u.RunID]
		if err := st.UpdateRun(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	var stderr bytes.Buffer
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond) // r2 never finishes
	defer cancel()
	err = followBackfill(tctx, st, "p", []backfillDay{{"2024-01-01", "r1"}, {"2024-01-02", "r2"}}, time.Millisecond, newBackfillProgress(&stderr))
	if err == nil || !strings.Contains(err.Error(), "1 of 2 days unfinished") {
		t.Errorf("err %v, want one day unfinished", err)
	}
	if !strings.Contains(stderr.String(), "2024-01-01 failed: QUERY_ERROR: syntax error") {
		t.Errorf("progress %q does not show the failure", stderr.String())
	}
	err = followBackfill(ctx, st, "p", []backfillDay{{"2024-01-01", "r1"}}, time.Millisecond, newBackfillProgress(&stderr))
	if err == nil || !strings.Contains(err.Error(), "1 of 1 days did not load") {
		t.Errorf("err %v, want a failed backfill", err)
	}
	p := &backfillProgress{done: 5, rows: 1200, failed: 1}
	if bar := p.Bar(10); bar != "[###############...............] 5/10 days  1200 rows loaded  1 failed" {
		t.Errorf("bar %q", bar)
	}
}
