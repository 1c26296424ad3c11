package main

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// change is one alteration of a loaded day in the warehouse.
type change struct {
	table          string // demo.TableEvents or demo.TableMetrics
	day            int    // index into the spec's days, modulo their number
	add, del, edit float64
}

func (c change) String() string {
	what := ""
	switch {
	case c.add > 0:
		what = fmt.Sprintf("+%.0f%% rows", c.add*100)
	case c.del > 0:
		what = fmt.Sprintf("-%.0f%% rows", c.del*100)
	default:
		what = fmt.Sprintf("%.0f%% rows edited", c.edit*100)
	}
	return fmt.Sprintf("%s d%d %s", c.table, c.day, what)
}

// scenario is a warehouse change (so there is work: the watcher must see
// it and reload) and faults injected while that work runs.
type scenario struct {
	name     string
	changes  []change
	faults   func(ctx context.Context, s *suite) []string
	fullOnly bool
	// ownChanges: the faults make the changes themselves (s.alter), at
	// the moments they need them.
	ownChanges bool
	// after runs once the scenario has reconciled (or not).
	after func(ctx context.Context, s *suite)
}

func (s *suite) scenarios() ([]scenario, error) {
	startKills, startChanges := 3, []change{{table: demo.TableEvents, day: 1, add: 0.10}, {table: demo.TableMetrics, day: 0, del: 0.10}, {table: demo.TableEvents, day: 2, edit: 0.10}}
	if s.o.short {
		startKills, startChanges = 2, startChanges[:2]
	}
	termChanges := []change{{table: demo.TableEvents, day: 0, add: 0.10}, {table: demo.TableMetrics, day: 2, edit: 0.20}}
	all := []scenario{
		{name: "first load, services SIGKILLed", faults: func(ctx context.Context, s *suite) []string { return s.killServices(ctx) }},
		{name: "reloads, services SIGKILLed",
			changes: []change{{table: demo.TableEvents, day: 0, add: 0.10}, {table: demo.TableMetrics, day: 1, del: 0.10}, {table: demo.TableEvents, day: 2, edit: 0.20}},
			faults:  func(ctx context.Context, s *suite) []string { return s.killServices(ctx) }},
		{name: "reloads, broker kill -9 + restart",
			changes: []change{{table: demo.TableEvents, day: 1, add: 0.12}, {table: demo.TableMetrics, day: 0, edit: 0.20}},
			faults:  func(ctx context.Context, s *suite) []string { return s.restartBroker(ctx, 2) }},
		{name: "reloads, Redis flushed",
			changes: []change{{table: demo.TableEvents, day: 2, del: 0.10}, {table: demo.TableMetrics, day: 2, add: 0.10}},
			faults:  func(ctx context.Context, s *suite) []string { return s.flushRedis(ctx, 3) }},
		{name: "reloads, warehouse query errors",
			changes: []change{{table: demo.TableEvents, day: 0, edit: 0.20}, {table: demo.TableMetrics, day: 1, add: 0.10}},
			faults:  func(ctx context.Context, s *suite) []string { return s.warehouseErrors(ctx, 2) }},
		{name: "reloads, extractor SIGKILLed in its first second", changes: startChanges, ownChanges: true,
			faults: func(ctx context.Context, s *suite) []string {
				return s.killExtractorOnStart(ctx, startChanges, startKills)
			}},
		{name: "Snowflake day, extractor SIGKILLed mid-stream",
			faults: func(ctx context.Context, s *suite) []string { return s.snowflakeMidStream(ctx) }},
		{name: "reloads, SIGTERM of sluice run --target=all", changes: termChanges, ownChanges: true,
			faults: func(ctx context.Context, s *suite) []string { return s.sigtermAll(ctx, termChanges) },
			after:  func(ctx context.Context, s *suite) { s.backToServices(ctx) }},
		{name: "reloads, PostgreSQL restart", fullOnly: true,
			changes: []change{{table: demo.TableEvents, day: 1, del: 0.10}, {table: demo.TableMetrics, day: 0, add: 0.10}},
			faults:  func(ctx context.Context, s *suite) []string { return s.restartPostgres(ctx) }},
		{name: "reloads, everything at once", fullOnly: true,
			changes: []change{{table: demo.TableEvents, day: 0, add: 0.10}, {table: demo.TableEvents, day: 3, edit: 0.10}, {table: demo.TableMetrics, day: 2, del: 0.10}},
			faults: func(ctx context.Context, s *suite) []string {
				return s.concurrently(ctx, func(ctx context.Context, s *suite) []string { return s.killServices(ctx) }, func(ctx context.Context, s *suite) []string { return s.restartBroker(ctx, 1) },
					func(ctx context.Context, s *suite) []string { return s.flushRedis(ctx, 2) })
			}},
	}
	var out []scenario
	for _, sc := range all {
		if sc.fullOnly && s.o.short {
			continue
		}
		out = append(out, sc)
	}
	if s.o.only == "" {
		return out, nil
	}
	var picked []scenario
	for _, sel := range strings.Split(s.o.only, ",") {
		sel = strings.TrimSpace(sel)
		found := false
		for i, sc := range out {
			if sel == strconv.Itoa(i+1) || (sel != "" && strings.Contains(strings.ToLower(sc.name), strings.ToLower(sel))) {
				picked, found = append(picked, sc), true
			}
		}
		if !found {
			return nil, fmt.Errorf("--only %s: no such scenario", sel)
		}
	}
	return picked, nil
}

// alter makes change c in the warehouse.
func (s *suite) alter(ctx context.Context, c change) error {
	day := s.spec.Dates()[c.day%len(s.spec.Dates())]
	key := c.table + day.String()
	s.rounds[key]++
	_, err := demo.AlterPostgres(ctx, s.pool, whSchema, s.spec, demo.Alteration{Table: c.table, Day: day,
		AddShare: c.add, DeleteShare: c.del, ChangeShare: c.edit, Round: s.rounds[key]})
	if err != nil {
		return fmt.Errorf("alter the warehouse (%s): %w", c, err)
	}
	return nil
}

func (s *suite) runScenario(ctx context.Context, sc scenario) {
	logf("scenario %q", sc.name)
	r := result{scenario: sc.name}
	s.rec.effects.begin()
	for _, c := range sc.changes {
		if !sc.ownChanges {
			if err := s.alter(ctx, c); err != nil {
				r.problems = append(r.problems, mismatch{c.table, "-", err.Error()})
			}
		}
		r.changes = append(r.changes, c.String())
	}
	start := time.Now()
	stopWatch := s.rec.effects.watchDays(ctx)
	r.faults = sc.faults(ctx, s)
	stopWatch()
	logf("faults done: %v; waiting for every day to reconcile", r.faults)
	problems, _, err := s.rec.waitReconciled(ctx, s.o.settle)
	if err != nil {
		problems = append(problems, mismatch{"-", "-", err.Error()})
	}
	r.problems = append(r.problems, problems...)
	r.took = time.Since(start)
	if sc.after != nil {
		sc.after(ctx, s)
	}
	s.results = append(s.results, r)
	if len(r.problems) == 0 {
		logf("scenario %q reconciled in %s", sc.name, r.took.Round(100*time.Millisecond))
	} else {
		logf("scenario %q: %d mismatches, first: %s", sc.name, len(r.problems), r.problems[0])
	}
	// Let the watcher take the reloaded days' baseline fingerprints
	// before the next scenario changes them again.
	sleep(ctx, 5*time.Second)
}

// killServices SIGKILLs every service o.kills times at random moments,
// 0.2-1.5s apart; the supervisor restarts each one.
func (s *suite) killServices(ctx context.Context) []string {
	var plan []string
	for _, name := range services {
		for range s.o.kills {
			plan = append(plan, name)
		}
	}
	s.rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	done := map[string]int{}
	for _, name := range plan {
		if !sleep(ctx, s.jitter(200*time.Millisecond, 1500*time.Millisecond)) {
			break
		}
		if s.procs[name].kill() {
			done[name]++
			if name == "loader" {
				// The notifier runs beside the loader.
				s.hooks.disrupt()
			}
		}
	}
	return []string{"SIGKILL " + sortedCounts(done)}
}

// restartBroker kills the broker with SIGKILL n times; it comes back on
// the same data directory and port.
func (s *suite) restartBroker(ctx context.Context, n int) []string {
	count := 0
	for range n {
		if !sleep(ctx, s.jitter(500*time.Millisecond, 3*time.Second)) {
			break
		}
		if s.broker.kill() {
			count++
		}
		_ = waitPort(ctx, s.rec.kafka[0], time.Minute)
	}
	return []string{fmt.Sprintf("broker kill -9 + restart ×%d", count)}
}

// flushRedis empties the suite's Redis DB n times: leases, dedupe keys,
// queued requests, schedule bookkeeping all gone.
func (s *suite) flushRedis(ctx context.Context, n int) []string {
	count := 0
	for range n {
		if !sleep(ctx, s.jitter(300*time.Millisecond, 2500*time.Millisecond)) {
			break
		}
		if err := s.rdb.FlushDB(ctx).Err(); err != nil {
			logf("flush Redis: %v", err)
			continue
		}
		count++
	}
	return []string{fmt.Sprintf("Redis FLUSHDB ×%d", count)}
}

// warehouseErrors takes the events table away (renamed) for a few seconds,
// n times: every query on it fails meanwhile.
func (s *suite) warehouseErrors(ctx context.Context, n int) []string {
	table := pgx.Identifier{whSchema, demo.TableEvents}.Sanitize()
	away := pgx.Identifier{whSchema, demo.TableEvents + "_offline"}.Sanitize()
	count := 0
	for range n {
		if !sleep(ctx, s.jitter(200*time.Millisecond, 2*time.Second)) {
			break
		}
		if err := s.renameTable(ctx, table, demo.TableEvents+"_offline"); err != nil {
			logf("take warehouse table away: %v", err)
			continue
		}
		count++
		sleep(ctx, 3*time.Second)
		for {
			err := s.renameTable(context.WithoutCancel(ctx), away, demo.TableEvents)
			if err == nil {
				break
			}
			logf("restore warehouse table: %v (retrying)", err)
			time.Sleep(time.Second)
		}
	}
	return []string{fmt.Sprintf("warehouse table offline 3s ×%d", count)}
}

func (s *suite) renameTable(ctx context.Context, from, to string) error {
	for attempt := 0; ; attempt++ {
		_, err := s.pool.Exec(ctx, "SET lock_timeout = '2s'; ALTER TABLE "+from+" RENAME TO "+pgx.Identifier{to}.Sanitize())
		if err == nil || attempt == 10 {
			return err
		}
	}
}

// restartPostgres restarts the whole PostgreSQL cluster (warehouse and
// store at once). Other tests on the machine see it too: full runs only.
func (s *suite) restartPostgres(ctx context.Context) []string {
	if s.pgMajor == "" {
		return []string{"PostgreSQL restart skipped (no /etc/postgresql)"}
	}
	if !sleep(ctx, s.jitter(time.Second, 3*time.Second)) {
		return nil
	}
	// A notifier's MarkNotified fails meanwhile: its POST is repeated.
	s.hooks.disrupt()
	out, err := exec.CommandContext(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", s.pgMajor, "main", "restart").CombinedOutput()
	s.hooks.disrupt()
	if err != nil {
		logf("restart PostgreSQL: %v: %s", err, out)
		return []string{"PostgreSQL restart FAILED to run"}
	}
	_ = waitPort(ctx, "127.0.0.1:5432", time.Minute)
	return []string{"PostgreSQL restart ×1"}
}

// concurrently runs fault injectors at the same time.
func (s *suite) concurrently(ctx context.Context, fs ...func(context.Context, *suite) []string) []string {
	results := make(chan []string, len(fs))
	for _, f := range fs {
		// Each injector gets its own random stream: rand.Rand is not
		// safe for concurrent use.
		sub := *s
		sub.rng = newRand(s.rng.Uint64())
		go func() { results <- f(ctx, &sub) }()
	}
	var out []string
	for range fs {
		out = append(out, <-results...)
	}
	return out
}

func (s *suite) jitter(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

// sleep waits d and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// killExtractorOnStart SIGKILLs the extractor within the first second
// of a run, kills times: each time it makes the next change (so a reload
// starts), watches the runs for a new IMPORT_STARTED and kills the
// extractor a random moment (under 1 s) after it, while the query or the
// first batches run. The killed run's request is redelivered to the
// restarted extractor.
func (s *suite) killExtractorOnStart(ctx context.Context, changes []change, kills int) []string {
	runs := pgx.Identifier{storeSchma, "runs"}.Sanitize()
	var after []string
	for i := range max(kills, len(changes)) {
		if i < len(changes) {
			if err := s.alter(ctx, changes[i]); err != nil {
				logf("%v", err)
			}
		}
		if i >= kills {
			continue
		}
		since := time.Now()
		deadline := since.Add(45 * time.Second)
		for time.Now().Before(deadline) {
			var runID string
			var started time.Time
			err := s.pool.QueryRow(ctx, `SELECT r.run_id, (h->>'timestamp')::timestamptz FROM `+runs+` r, jsonb_array_elements(r.history) h
				WHERE h->>'status' = $1 AND (h->>'timestamp')::timestamptz > $2 ORDER BY 2 LIMIT 1`,
				string(vocab.StatusStarted), since).Scan(&runID, &started)
			if err == nil {
				since = started // the next look skips this start
				if age := time.Since(started); age < 900*time.Millisecond {
					sleep(ctx, s.jitter(0, 900*time.Millisecond-age))
					age = time.Since(started)
					if s.procs["extractor"].kill() {
						after = append(after, age.Round(10*time.Millisecond).String())
						logf("SIGKILLed the extractor %s after run %s started", age.Round(time.Millisecond), runID)
					}
					break
				}
			}
			if !sleep(ctx, 25*time.Millisecond) {
				break
			}
		}
	}
	return []string{fmt.Sprintf("SIGKILL extractor×%d within 1s of IMPORT_STARTED (after %s)", len(after), strings.Join(after, ", "))}
}

// sigtermAll replaces the services by one sluice run --target=all, makes
// the changes, and sends it SIGTERM while a run of them extracts or
// loads: it must exit on its own, in order (intake, extractors, mapper,
// loader, notifier), within its drain bound, losing nothing and
// delivering what it made due. Then it starts again; the scenario's
// reconcile checks nothing was lost or repeated. backToServices brings
// the separate services back afterwards.
func (s *suite) sigtermAll(ctx context.Context, changes []change) []string {
	s.stopServices()
	all, err := s.serviceProc("all")
	if err != nil {
		return []string{"sluice run --target=all NOT started: " + err.Error()}
	}
	s.all, s.allSeen = all, all
	all.supervise(s.superCtx)
	since := time.Now()
	for _, c := range changes {
		if err := s.alter(ctx, c); err != nil {
			logf("%v", err)
		}
	}
	// A run of the changes between IMPORT_STARTED and its end.
	runs := pgx.Identifier{storeSchma, "runs"}.Sanitize()
	deadline := time.Now().Add(time.Minute)
	var runID, status string
	for {
		err := s.pool.QueryRow(ctx, `SELECT run_id, status FROM `+runs+` WHERE created_at > $1 AND status = ANY($2) LIMIT 1`,
			since, []string{string(vocab.StatusStarted), string(vocab.StatusFileCreated), string(vocab.StatusDownloaded), string(vocab.StatusRowsInserted)}).Scan(&runID, &status)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || !sleep(ctx, 20*time.Millisecond) {
			runID, status = "", "none running"
			break
		}
	}
	// The whole shutdown must fit in --drain-timeout: what runs is a
	// day of a few thousand rows, which every stage finishes well within
	// it (services/sluice.Shutdown allows each stage the bound plus 10 s
	// to commit; that much only a stage stuck on its work would use).
	// Past a minute it is killed.
	took, killed, err := all.terminate(time.Minute)
	fault := fmt.Sprintf("SIGTERM sluice run --target=all (run %s %s): exited in %s", runID, status, took.Round(100*time.Millisecond))
	switch {
	case killed:
		fault = fmt.Sprintf("SIGTERM sluice run --target=all: did NOT exit within %s, SIGKILLed", time.Minute)
		s.rec.effects.stick(mismatch{"all", "-", fault})
	case err != nil:
		s.rec.effects.stick(mismatch{"all", "-", "after SIGTERM: " + err.Error()})
	case took > drainTimeout:
		s.rec.effects.stick(mismatch{"all", "-", fmt.Sprintf("took %s to stop after SIGTERM, more than --drain-timeout %s", took.Round(time.Millisecond), drainTimeout)})
	}
	logf("%s", fault)
	all.resume(s.superCtx)
	return []string{fault + ", restarted"}
}

// stopServices stops every service process with SIGTERM, all at once.
func (s *suite) stopServices() {
	done := make(chan struct{}, len(services))
	for _, name := range services {
		go func() {
			s.procs[name].stop(30 * time.Second)
			done <- struct{}{}
		}()
	}
	for range services {
		<-done
	}
}

// backToServices stops sluice run --target=all (SIGTERM) and starts the
// separate services again, for the scenarios that follow.
func (s *suite) backToServices(ctx context.Context) {
	if s.all == nil {
		return
	}
	if took, killed, err := s.all.terminate(time.Minute); killed || err != nil {
		logf("sluice run --target=all stopped badly (%s, SIGKILLed %t, %v)", took, killed, err)
	}
	s.all = nil
	for _, name := range services {
		s.procs[name].resume(s.superCtx)
	}
}
