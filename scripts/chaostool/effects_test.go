package main

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/postgres"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// TestEffectChecksCatchWhatRunsGetWrong builds a store whose runs are
// right (the checks find nothing), then breaks each effect the way a bug
// would and expects each check to say so: a second terminal status, a
// run counted in usage that never became visible, a loaded day going
// back, a webhook missing, repeated or unwanted. A repeat across a
// SIGKILLed notifier is counted, not failed.
func TestEffectChecksCatchWhatRunsGetWrong(t *testing.T) {
	ctx := t.Context()
	pool := scratchStore(t)
	st := postgres.New(pool, postgres.Options{Schema: storeSchma})
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	rc, err := startReceiver()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.close()
	e := &effects{pool: pool, schema: storeSchma, hooks: rc, liveNotifiers: func() map[int]bool { return nil }}
	at := time.Now().Add(-time.Minute)
	run := func(id string, trigger vocab.Trigger, statuses ...vocab.Status) {
		for i, status := range statuses {
			err := st.UpdateRun(ctx, store.RunUpdate{RunID: id, Project: demo.ProjectName, Ingestion: demo.WebEvents, Type: "events",
				Date: "2024-05-01", Trigger: trigger, Fence: 1, Status: status, At: at.Add(time.Duration(i) * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := st.MarkNotified(ctx, demo.ProjectName, id, at); err != nil {
			t.Fatal(err)
		}
	}
	exec := func(sql string, args ...any) {
		if _, err := pool.Exec(ctx, strings.ReplaceAll(sql, "{s}", storeSchma), args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	run("failed1", vocab.TriggerScheduled, vocab.StatusScheduled, vocab.StatusStarted, vocab.StatusFailed)
	run("running", vocab.TriggerReload, vocab.StatusScheduled, vocab.StatusStarted)
	post := func(id string) { rc.mu.Lock(); rc.got[id] = append(rc.got[id], time.Now()); rc.mu.Unlock() }
	post(demo.ProjectName + "/failed1/failed")
	if got := mustCheck(t, e); len(got) != 0 {
		t.Fatalf("a store whose runs are right: %v", got)
	}

	// A second terminal status, a history going back.
	exec(`UPDATE {s}.runs SET history = history || '[{"status":"IMPORT_SUCCESSFUL","timestamp":"2024-05-01T00:00:00Z"}]' WHERE run_id = 'failed1'`)
	exec(`UPDATE {s}.runs SET history = history || '[{"status":"IMPORT_SCHEDULED","timestamp":"2024-05-01T00:00:00Z"}]' WHERE run_id = 'running'`)
	// Usage of a run that never became visible.
	exec(`INSERT INTO {s}.usage (xid, project, ingestion, ds, trigger, run_id, rows_loaded, loaded_at) VALUES (1, $1, $2, '2024-05-01', 'reload', 'running', 10, now())`,
		demo.ProjectName, demo.WebEvents)
	// A day seen loaded that goes back.
	exec(`UPDATE {s}.days SET status = 'IMPORT_SUCCESSFUL', visible_xid = 1`)
	if _, err := e.days(ctx); err != nil {
		t.Fatal(err)
	}
	exec(`UPDATE {s}.days SET status = 'IMPORT_STARTED'`)
	// A reload that ended and was never received; a repeat with no
	// notifier killed in between; a POST no run needs.
	run("reload1", vocab.TriggerReload, vocab.StatusScheduled, vocab.StatusStarted, vocab.StatusFailed)
	post(demo.ProjectName + "/failed1/failed")
	post(demo.ProjectName + "/nobody/reload")
	got := strings.Join(mismatchStrings(mustCheck(t, e)), "\n")
	for _, want := range []string{
		"history of run failed1: run FAILED with 2 terminal statuses",
		"history of run running: goes back to IMPORT_SCHEDULED",
		"usage: run running never became visible but the ledger counts it",
		"day went back from loaded to IMPORT_STARTED",
		"demo/reload1/failed (FAILED, trigger reload) not received: marked notified but never received",
		"demo/failed1/failed: received 2 times",
		"demo/nobody/reload: received, but no run that ended needs this notification",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the checks did not report %q; they said:\n%s", want, got)
		}
	}

	// A repeat across a SIGKILLed notifier is the documented gap: counted,
	// not failed.
	e.begin()
	exec(`DELETE FROM {s}.usage`)
	exec(`UPDATE {s}.runs SET history = '[{"status":"IMPORT_SCHEDULED","timestamp":"2024-05-01T00:00:00Z"},{"status":"FAILED","timestamp":"2024-05-01T00:00:01Z"}]' WHERE status = 'FAILED'`)
	exec(`UPDATE {s}.runs SET history = '[{"status":"IMPORT_STARTED","timestamp":"2024-05-01T00:00:00Z"}]' WHERE run_id = 'running'`)
	rc.mu.Lock()
	delete(rc.got, demo.ProjectName+"/nobody/reload")
	rc.mu.Unlock()
	post(demo.ProjectName + "/reload1/failed")
	rc.disrupt()
	post(demo.ProjectName + "/reload1/failed")
	got = strings.Join(mismatchStrings(mustCheck(t, e)), "\n")
	if strings.Contains(got, "reload1") || strings.Contains(got, "history") || strings.Contains(got, "usage") {
		t.Errorf("after the repairs the checks still said:\n%s", got)
	}
	if s := rc.summary(); !strings.Contains(s, "2 repeats of an id already received (1 across a SIGKILLed notifier") {
		t.Errorf("summary %q, want the excused repeat counted", s)
	}

	// A run due under the claim of a notifier no longer running waits for
	// the claim (held), and is a mismatch once final.
	run("empty1", vocab.TriggerScheduled, vocab.StatusScheduled)
	exec(`UPDATE {s}.runs SET status = 'LOADED_EMPTY_DATA', history = '[{"status":"LOADED_EMPTY_DATA","timestamp":"2024-05-01T00:00:00Z"}]',
		notify_state = 'due', notify_owner = 'host/4194305/abcd', notify_until = now() + interval '5 minutes' WHERE run_id = 'empty1'`)
	e.begin()
	got = strings.Join(mismatchStrings(mustCheck(t, e)), "\n")
	if strings.Contains(got, "empty1") || e.heldUntil().IsZero() {
		t.Errorf("a run held by a dead notifier's claim: held until %v, checks said:\n%s", e.heldUntil(), got)
	}
	e.final = true
	got = strings.Join(mismatchStrings(mustCheck(t, e)), "\n")
	if !strings.Contains(got, "demo/empty1/empty (LOADED_EMPTY_DATA, trigger scheduled) not received: still due, claimed until") {
		t.Errorf("a held webhook at the end: the checks said:\n%s", got)
	}
}

func mustCheck(t *testing.T, e *effects) []mismatch {
	t.Helper()
	got, err := e.check(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func mismatchStrings(ms []mismatch) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.String()
	}
	return out
}

// scratchStore is a database of its own on the local PostgreSQL, dropped
// when the test ends; the test skips without PostgreSQL outside CI.
func scratchStore(t *testing.T) *pgxpool.Pool {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:5432", 2*time.Second)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("PostgreSQL is not reachable (%v)", err)
		}
		t.Fatal(err)
	}
	c.Close()
	ctx := context.Background()
	name := "sluice_chaos_effects_" + strconv.Itoa(os.Getpid())
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/"+name+"?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		if c, err := pgx.Connect(ctx, adminDSN); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	return pool
}
