package main

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/demo"
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
}

func (s *suite) scenarios() []scenario {
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
	return out
}

func (s *suite) runScenario(ctx context.Context, sc scenario) {
	logf("scenario %q", sc.name)
	r := result{scenario: sc.name}
	for _, c := range sc.changes {
		day := s.spec.Dates()[c.day%len(s.spec.Dates())]
		key := c.table + day.String()
		s.rounds[key]++
		_, err := demo.AlterPostgres(ctx, s.pool, whSchema, s.spec, demo.Alteration{Table: c.table, Day: day,
			AddShare: c.add, DeleteShare: c.del, ChangeShare: c.edit, Round: s.rounds[key]})
		if err != nil {
			r.problems = append(r.problems, mismatch{c.table, day.String(), "alter the warehouse: " + err.Error()})
		}
		r.changes = append(r.changes, c.String())
	}
	start := time.Now()
	r.faults = sc.faults(ctx, s)
	logf("faults done: %v; waiting for every day to reconcile", r.faults)
	problems, _, err := s.rec.waitReconciled(ctx, s.o.settle)
	if err != nil {
		problems = append(problems, mismatch{"-", "-", err.Error()})
	}
	r.problems = append(r.problems, problems...)
	r.took = time.Since(start)
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
	out, err := exec.CommandContext(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", s.pgMajor, "main", "restart").CombinedOutput()
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
