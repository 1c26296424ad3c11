package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/pkg/vocab"
)

// effects checks, after every scenario, what runs produce besides the
// rows of a day (issue 12): usage, run histories, day statuses and
// webhooks, store-wide (every ingestion, every run).
type effects struct {
	pool   *pgxpool.Pool
	schema string // the store's
	hooks  *receiver
	// liveNotifiers are the pids of the processes running a notifier now
	// (the loader, or sluice run --target=all).
	liveNotifiers func() map[int]bool

	mu sync.Mutex
	// extra are checks scenarios add (the Snowflake day); they stay for
	// the rest of the suite.
	extra []func(ctx context.Context) ([]mismatch, error)
	// loaded are the days seen with visible rows: such a day's status
	// stays loaded (the store keeps no day transitions, so the suite
	// samples them).
	loaded map[string]bool
	// sticky are problems seen once (a repeated webhook, a day seen going
	// back) that stay until the scenario ends, however later reads look.
	sticky []mismatch
	// held are webhooks waiting for a dead notifier's claim to run out,
	// by id, with the claim's end: the last check waits for them.
	held map[string]time.Time
	// final makes held webhooks mismatches.
	final bool
}

// begin starts a scenario: its sticky problems start empty.
func (e *effects) begin() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sticky = nil
}

func (e *effects) stick(m mismatch) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stickLocked(m)
}

func (e *effects) stickLocked(m mismatch) {
	for _, old := range e.sticky {
		if old == m {
			return
		}
	}
	e.sticky = append(e.sticky, m)
}

func (e *effects) addCheck(f func(ctx context.Context) ([]mismatch, error)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.extra = append(e.extra, f)
}

// heldUntil is when the last held webhook's claim runs out, zero when
// none is held.
func (e *effects) heldUntil() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	var last time.Time
	for _, t := range e.held {
		if t.After(last) {
			last = t
		}
	}
	return last
}

func (e *effects) tbl(name string) string { return pgx.Identifier{e.schema, name}.Sanitize() }

// check runs every effect check and returns what does not hold.
func (e *effects) check(ctx context.Context) ([]mismatch, error) {
	var out []mismatch
	for _, f := range []func(context.Context) ([]mismatch, error){e.usage, e.histories, e.days} {
		got, err := f(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	if e.hooks != nil {
		e.mu.Lock()
		final := e.final
		e.mu.Unlock()
		got, held, err := e.hooks.check(ctx, e, final)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		e.mu.Lock()
		e.held = held
		e.mu.Unlock()
	}
	e.mu.Lock()
	extra := e.extra
	out = append(out, e.sticky...)
	e.mu.Unlock()
	for _, f := range extra {
		got, err := f(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

// usage checks the usage ledger against the runs that became visible:
// each such run (its one extraction that swapped in, visible now or
// replaced since) has exactly one ledger line, of that extraction, with
// the rows it loaded (for the visible one, the rows a reader sees; for a
// replaced one, what its staged batches mapped); no other run has one.
func (e *effects) usage(ctx context.Context) ([]mismatch, error) {
	rows, err := e.pool.Query(ctx, `
		WITH swapped AS (
			SELECT x.xid, x.project, x.run_id, x.ingestion, x.ds::text AS ds, x.state,
				(SELECT coalesce(sum(b.mapped), 0) FROM `+e.tbl("batches")+` b WHERE b.xid = x.xid) AS mapped,
				CASE WHEN x.state = 'visible' THEN
					(SELECT count(*) FROM `+e.tbl("events")+` v WHERE v.xid = x.xid) +
					(SELECT count(*) FROM `+e.tbl("metrics")+` v WHERE v.xid = x.xid) END AS seen,
				count(*) OVER (PARTITION BY x.project, x.run_id) AS swaps
			FROM `+e.tbl("extractions")+` x WHERE x.state IN ('visible', 'replaced')),
		ledger AS (
			SELECT project, run_id, min(ingestion) AS ingestion, min(ds)::text AS ds, count(*) AS lines,
				sum(rows_loaded)::bigint AS rows_loaded, min(xid) AS xid
			FROM `+e.tbl("usage")+` GROUP BY project, run_id)
		SELECT coalesce(s.run_id, l.run_id), coalesce(s.ingestion, l.ingestion), coalesce(s.ds, l.ds),
			coalesce(s.state, ''), coalesce(s.xid, 0), coalesce(s.mapped, 0), s.seen, coalesce(s.swaps, 0),
			coalesce(l.lines, 0), coalesce(l.rows_loaded, 0), coalesce(l.xid, 0)
		FROM swapped s FULL JOIN ledger l ON l.project = s.project AND l.run_id = s.run_id`)
	if err != nil {
		return nil, fmt.Errorf("read the usage ledger: %w", err)
	}
	var out []mismatch
	for rows.Next() {
		var runID, ingestion, day, state string
		var xid, mapped, swaps, lines, loaded, ledgerXID int64
		var seen *int64
		if err := rows.Scan(&runID, &ingestion, &day, &state, &xid, &mapped, &seen, &swaps, &lines, &loaded, &ledgerXID); err != nil {
			return nil, err
		}
		bad := func(format string, args ...any) {
			out = append(out, mismatch{ingestion, day, "usage: run " + runID + " " + fmt.Sprintf(format, args...)})
		}
		want := mapped
		if seen != nil {
			want = *seen
		}
		switch {
		case state == "":
			bad("never became visible but the ledger counts it (%d lines, %d rows)", lines, loaded)
		case swaps > 1:
			bad("swapped in %d extractions", swaps)
		case lines != 1:
			bad("became visible (%s) and has %d ledger lines, want 1", state, lines)
		case ledgerXID != xid:
			bad("is counted for extraction %d, its rows came from %d", ledgerXID, xid)
		case loaded != want:
			bad("is counted for %d rows, its %s extraction loaded %d", loaded, state, want)
		}
	}
	return out, rows.Err()
}

// histories checks every run's history: statuses never go back (vocab
// Rank), a run that ended has exactly one terminal status, its last, equal
// to the run's status, and a run that has not ended has none.
func (e *effects) histories(ctx context.Context) ([]mismatch, error) {
	rows, err := e.pool.Query(ctx, `SELECT run_id, ingestion, ds, status, history::text FROM `+e.tbl("runs"))
	if err != nil {
		return nil, fmt.Errorf("read run histories: %w", err)
	}
	var out []mismatch
	for rows.Next() {
		var runID, ingestion, day, status, raw string
		if err := rows.Scan(&runID, &ingestion, &day, &status, &raw); err != nil {
			return nil, err
		}
		var history []struct {
			Status vocab.Status `json:"status"`
		}
		if err := json.Unmarshal([]byte(raw), &history); err != nil {
			return nil, fmt.Errorf("history of run %s: %w", runID, err)
		}
		bad := func(format string, args ...any) {
			out = append(out, mismatch{ingestion, day, "history of run " + runID + ": " + fmt.Sprintf(format, args...) + " " + raw})
		}
		terminal, rank := 0, 0
		for i, h := range history {
			if h.Status.Rank() == 0 {
				bad("unknown status %q", h.Status)
			}
			if h.Status.Rank() < rank {
				bad("goes back to %s at entry %d", h.Status, i+1)
			}
			rank = max(rank, h.Status.Rank())
			if h.Status.Terminal() {
				terminal++
			}
		}
		ended := vocab.Status(status).Terminal()
		switch {
		case ended && terminal != 1:
			bad("run %s with %d terminal statuses, want 1", status, terminal)
		case ended && history[len(history)-1].Status != vocab.Status(status):
			bad("run %s but its last entry is %s", status, history[len(history)-1].Status)
		case !ended && terminal != 0:
			bad("run %s (not ended) with %d terminal statuses", status, terminal)
		}
	}
	return out, rows.Err()
}

// days samples every day's status: one that has had visible rows stays
// loaded (a failed reload keeps the old rows and their status). The
// store keeps no history of a day's transitions, so the suite catches a
// day going back only when it reads it: at every check and, during the
// faults, every 500 ms (watchDays).
func (e *effects) days(ctx context.Context) ([]mismatch, error) {
	rows, err := e.pool.Query(ctx, `SELECT ingestion, ds::text, status, visible_xid IS NOT NULL FROM `+e.tbl("days"))
	if err != nil {
		return nil, fmt.Errorf("read day statuses: %w", err)
	}
	defer rows.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.loaded == nil {
		e.loaded = map[string]bool{}
	}
	for rows.Next() {
		var ingestion, day, status string
		var visible bool
		if err := rows.Scan(&ingestion, &day, &status, &visible); err != nil {
			return nil, err
		}
		key := ingestion + " " + day
		loaded := vocab.Status(status).Loaded()
		switch {
		case e.loaded[key] && (!loaded || !visible):
			e.stickLocked(mismatch{ingestion, day, fmt.Sprintf("day went back from loaded to %s (visible rows: %t)", status, visible)})
			e.loaded[key] = false // report once; it counts again once loaded
		case loaded && visible:
			e.loaded[key] = true
		case loaded != visible:
			e.stickLocked(mismatch{ingestion, day, fmt.Sprintf("day %s but visible rows: %t", status, visible)})
		}
	}
	return nil, rows.Err()
}

// watchDays samples day statuses every 500 ms until the returned stop is
// called: the faults of a scenario are when a day could go back.
func (e *effects) watchDays(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sleep(ctx, 500*time.Millisecond) {
			if _, err := e.days(ctx); err != nil && ctx.Err() == nil {
				logf("sample day statuses: %v", err)
			}
		}
	}()
	return func() { cancel(); <-done }
}
