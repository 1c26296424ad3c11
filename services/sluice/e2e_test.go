package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"cloud.google.com/go/civil"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
)

const e2eKey = "sk_test_e2e_key"

// e2eStack is every service running in this process against kfake, the
// real Redis, and the real PostgreSQL as both warehouse and store.
type e2eStack struct {
	t         testing.TB
	in        *Infra
	spec      demo.Spec
	warehouse *pgxpool.Pool
	whSchema  string
	baseURL   string
	registry  *prometheus.Registry // the running services' metrics
}

func pgPool(tb testing.TB, ctx context.Context) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if os.Getenv("CI") == "" {
			tb.Skipf("PostgreSQL at 127.0.0.1:5432 is not reachable (%v); scripts/test starts it", err)
		}
		tb.Fatalf("PostgreSQL at 127.0.0.1:5432: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func startE2E(t *testing.T, spec demo.Spec, pipeline config.Pipeline) *e2eStack {
	t.Helper()
	s := newE2E(t, spec, pipeline)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.start(RunOptions{
		Targets:         Targets,
		PlannerTick:     100 * time.Millisecond,
		WatcherTick:     100 * time.Millisecond,
		TriggerListener: ln,
	})
	s.baseURL = "http://" + ln.Addr().String()
	return s
}

// newE2E seeds the warehouse and connects the infrastructure; start runs
// services on it.
func newE2E(t *testing.T, spec demo.Spec, pipeline config.Pipeline) *e2eStack {
	t.Helper()
	ctx := t.Context()
	wh := pgPool(t, ctx)
	suffix := runid.New()[:10]
	whSchema, storeSchema := "e2e_wh_"+suffix, "e2e_store_"+suffix
	t.Cleanup(func() {
		for _, s := range []string{whSchema, storeSchema} {
			_, _ = wh.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE")
		}
	})
	if _, err := demo.SeedPostgres(ctx, wh, whSchema, spec); err != nil {
		t.Fatal(err)
	}

	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)

	t.Setenv("SLUICE_E2E_WAREHOUSE_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	hour := 0
	settings := demo.Config(demo.ConfigOptions{
		APIKey:    e2eKey,
		Warehouse: demo.WarehousePostgres,
		Postgres:  demo.PostgresWarehouse{DSNEnv: "SLUICE_E2E_WAREHOUSE_DSN", Schema: whSchema},
		Store:     config.Store{Kind: "postgres", DSN: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", Schema: storeSchema},
		Kafka:     broker.Addrs(),
		Pipeline:  pipeline,
		Schedule:  &config.Schedule{Hour: &hour, Timezone: "UTC"},
	})
	if err := settings.Validate(); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	in, err := NewInfra(ctx, settings, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	prefix := "sluice-e2e-" + suffix + ":"
	in.State = state.New(in.Redis, state.Options{Prefix: prefix})
	t.Cleanup(func() {
		keys, _ := in.Redis.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			in.Redis.Del(context.Background(), keys...)
		}
	})
	if err := in.State.Ping(ctx); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("Redis at 127.0.0.1:6379 is not reachable (%v); scripts/test starts it", err)
		}
		t.Fatal(err)
	}
	return &e2eStack{t: t, in: in, spec: spec, warehouse: wh, whSchema: whSchema}
}

// start runs services on the stack's infrastructure, with metrics of
// their own (as a restarted process has), until stop or the test's end.
// stop cancels them as SIGTERM does and returns what RunAll returned.
func (s *e2eStack) start(o RunOptions) (stop func() error) {
	s.t.Helper()
	in := *s.in
	in.Registry = prometheus.NewRegistry()
	services, err := Build(s.t.Context(), &in, o)
	if err != nil {
		s.t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunAll(runCtx, services, Shutdown{Bound: o.DrainTimeout, Logger: in.Logger}) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	s.t.Cleanup(func() {
		if err := stop(); err != nil {
			s.t.Errorf("services stopped with: %v", err)
		}
	})
	s.registry = in.Registry
	return stop
}

// testWriter sends logs to the test's log until the test ends; Kafka
// clients may still log a reconnect while they shut down.
type testWriter struct {
	t    testing.TB
	done *atomic.Bool
}

func newTestWriter(t testing.TB) testWriter {
	w := testWriter{t: t, done: new(atomic.Bool)}
	t.Cleanup(func() { w.done.Store(true) })
	return w
}

func (w testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// waitDay waits until the day's status satisfies ok and returns it.
func (s *e2eStack) waitDay(ingestion string, day civil.Date, what string, ok func(store.Day) bool) store.Day {
	s.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last store.Day
	for time.Now().Before(deadline) {
		days, err := s.in.Store.Days(context.Background(), store.DayFilter{Project: demo.ProjectName, Ingestion: ingestion, From: day.String(), To: day.String()})
		if err != nil {
			s.t.Fatal(err)
		}
		if len(days) == 1 {
			last = days[0]
			if ok(last) {
				return last
			}
		}
		time.Sleep(50 * time.Millisecond) // polling a real pipeline; no clock to inject across processes
	}
	s.t.Fatalf("%s %s: timed out waiting for %s; last seen %+v", ingestion, day, what, last)
	return last
}

func loaded(d store.Day) bool {
	return d.Status == vocab.StatusSuccessful || d.Status == vocab.StatusLoadedEmpty
}

// warehouseEvents reads the day straight from the warehouse table and keeps
// the rows a correct mapping must accept, in the canonical form the store
// must hold them. It shares no code with the mapper: an independent oracle.
func (s *e2eStack) warehouseEvents(day civil.Date) (good []string, bad int) {
	s.t.Helper()
	rows, err := s.warehouse.Query(context.Background(), `SELECT event_name, event_time_s, event_value, user_id, device_id, company_id, country, platform, properties
		FROM `+pgx.Identifier{s.whSchema, "events"}.Sanitize()+` WHERE ds = $1`, day.In(time.UTC))
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, value, user, device, country, platform, props *string
		var ts int64
		var company *int64
		if err := rows.Scan(&name, &ts, &value, &user, &device, &company, &country, &platform, &props); err != nil {
			s.t.Fatal(err)
		}
		ids := map[string]string{}
		if user != nil && *user != "" {
			ids["userID"] = *user
		}
		if device != nil && *device != "" {
			ids["stableID"] = *device
		}
		if company != nil {
			ids["companyID"] = strconv.FormatInt(*company, 10)
		}
		var propObj map[string]json.RawMessage
		switch {
		case name == nil || *name == "" || utf8.RuneCountInString(*name) >= 128,
			len(ids) == 0,
			ts > 1e11, // milliseconds where seconds are mapped
			props != nil && json.Unmarshal([]byte(*props), &propObj) != nil:
			bad++
			continue
		}
		meta := map[string]bool{}
		for k, v := range propObj {
			if string(v) != "null" { // null JSON values are dropped
				meta[k] = true
			}
		}
		if country != nil {
			meta["country"] = true
		}
		if platform != nil {
			meta["platform"] = true
		}
		good = append(good, canonicalEvent(*name, ts*1000, deref(value), ids, meta))
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	sort.Strings(good)
	return good, bad
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// canonicalEvent is the comparable form of an event: name, time, value,
// unit ids and the metadata keys (values are checked by the mapper's own
// tests; here we check every row arrives once with the right identity).
func canonicalEvent(name string, timeMs int64, value string, ids map[string]string, meta map[string]bool) string {
	idKeys := make([]string, 0, len(ids))
	for k, v := range ids {
		idKeys = append(idKeys, k+"="+v)
	}
	sort.Strings(idKeys)
	metaKeys := make([]string, 0, len(meta))
	for k := range meta {
		metaKeys = append(metaKeys, k)
	}
	sort.Strings(metaKeys)
	if f, err := strconv.ParseFloat(value, 64); err == nil {
		value = strconv.FormatFloat(f, 'g', -1, 64)
	}
	return fmt.Sprintf("%s|%d|%s|%s|%s", name, timeMs, value, strings.Join(idKeys, ","), strings.Join(metaKeys, ","))
}

func (s *e2eStack) storeEvents(ingestion string, day civil.Date) []string {
	s.t.Helper()
	evs, err := s.in.Store.VisibleEvents(context.Background(), demo.ProjectName, ingestion, day.String())
	if err != nil {
		s.t.Fatal(err)
	}
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		ids := map[string]string{}
		for _, u := range e.UnitIDs {
			ids[u.IDType] = u.Value
		}
		var meta map[string]json.RawMessage
		if err := json.Unmarshal([]byte(e.MetadataJSON), &meta); err != nil {
			s.t.Fatalf("stored metadata %q is not a JSON object: %v", e.MetadataJSON, err)
		}
		keys := map[string]bool{}
		for k := range meta {
			keys[k] = true
		}
		out = append(out, canonicalEvent(e.EventName, e.TimeMs, e.EventValue, ids, keys))
	}
	sort.Strings(out)
	return out
}

// assertEventsMatch compares the store with the warehouse row by row.
func (s *e2eStack) assertEventsMatch(ingestion string, day civil.Date) store.Day {
	s.t.Helper()
	d := s.waitDay(ingestion, day, "loaded", loaded)
	want, bad := s.warehouseEvents(day)
	got := s.storeEvents(ingestion, day)
	if len(got) != len(want) {
		s.t.Errorf("%s %s: store holds %d events, warehouse has %d good rows", ingestion, day, len(got), len(want))
	}
	for i := 0; i < min(len(got), len(want)); i++ {
		if got[i] != want[i] {
			s.t.Errorf("%s %s: first difference at sorted row %d:\n store:     %s\n warehouse: %s", ingestion, day, i, got[i], want[i])
			break
		}
	}
	if d.RowsLoaded != int64(len(want)) || sum(d.Rejected) != int64(bad) || d.Extracted != int64(len(want)+bad) {
		s.t.Errorf("%s %s: day counts extracted=%d loaded=%d rejected=%v; warehouse has %d good and %d bad rows",
			ingestion, day, d.Extracted, d.RowsLoaded, d.Rejected, len(want), bad)
	}
	return d
}

func (s *e2eStack) runsOf(ingestion string, day civil.Date) []store.Run {
	s.t.Helper()
	runs, err := s.in.Store.Runs(context.Background(), store.RunFilter{Project: demo.ProjectName, Ingestion: ingestion, Date: day.String()})
	if err != nil {
		s.t.Fatal(err)
	}
	return runs
}

func (s *e2eStack) post(path, body string) (*http.Response, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.baseURL+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("statsig-api-key", e2eKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func TestEndToEnd(t *testing.T) {
	lastDay := civil.DateOf(time.Now().UTC()).AddDays(-1)
	spec := demo.Spec{Days: 3, LastDay: lastDay, EventsPerDay: 2000, MetricsPerDay: 600, BadRowEvery: 100, Seed: 7}
	s := startE2E(t, spec, config.Pipeline{
		CatchUpDays:     3,
		WatchInterval:   200 * time.Millisecond,
		ReloadThreshold: 0.05,
	})
	days := spec.Dates()

	t.Run("scheduled days load and match the warehouse row by row", func(t *testing.T) {
		expected := demo.Expected(spec)
		for _, day := range days {
			d := s.assertEventsMatch(demo.WebEvents, day)
			if want := expected[day].Events.Rows; d.Extracted != want {
				t.Errorf("%s: extracted %d, generator says %d", day, d.Extracted, want)
			}
			m := s.waitDay(demo.DailyMetrics, day, "loaded", loaded)
			wantM := expected[day].Metrics
			if m.Extracted != wantM.Rows || m.RowsLoaded != wantM.Good() || m.RowsLoaded+sum(m.Rejected) != m.Extracted {
				t.Errorf("metrics %s: extracted=%d loaded=%d rejected=%v; want %d rows, %d good", day, m.Extracted, m.RowsLoaded, m.Rejected, wantM.Rows, wantM.Good())
			}
			if got, err := s.in.Store.VisibleMetrics(context.Background(), demo.ProjectName, demo.DailyMetrics, day.String()); err != nil || int64(len(got)) != wantM.Good() {
				t.Errorf("metrics %s: %d visible rows (err %v), want %d", day, len(got), err, wantM.Good())
			}
			if len(d.Rejected) == 0 {
				t.Errorf("%s: expected bad rows to be rejected with reasons, got none", day)
			}
		}
		// An api_triggered ingestion is never loaded by the schedule.
		if runs := s.runsOf(demo.WebEventsAPI, days[0]); len(runs) != 0 {
			t.Errorf("api_triggered ingestion ran on its own: %+v", runs)
		}
	})

	t.Run("each rejected row is dead-lettered once, keyed by its run", func(t *testing.T) {
		s.assertDeadLetters(t, demo.WebEvents, days)
		s.assertDeadLetters(t, demo.DailyMetrics, days)
	})

	t.Run("mark_data_ready loads the api-triggered day, then rate-limits", func(t *testing.T) {
		day := days[1]
		resp, body := s.post("/v1/mark_data_ready_dwh", fmt.Sprintf(`{"datestamps": %q, "type": "events"}`, day))
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("first call: %d %s", resp.StatusCode, body)
		}
		s.assertEventsMatch(demo.WebEventsAPI, day)
		resp, body = s.post("/v1/mark_data_ready_dwh", fmt.Sprintf(`{"datestamps": %q, "type": "events"}`, day))
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("second call: %d Retry-After=%q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
		resp, body = s.post("/v1/mark_data_ready_dwh", `{"datestamps": "2023-02-30", "type": "events"}`)
		if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("datestamps")) {
			t.Fatalf("bad date: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("a change above the threshold reloads the day, one below does not", func(t *testing.T) {
		big, small := days[0], days[2]
		before := s.waitDay(demo.WebEvents, small, "loaded", loaded)
		if _, err := demo.AlterPostgres(context.Background(), s.warehouse, s.whSchema, spec, demo.Alteration{Table: demo.TableEvents, Day: big, AddShare: 0.10, Round: 1}); err != nil {
			t.Fatal(err)
		}
		after, err := demo.AlterPostgres(context.Background(), s.warehouse, s.whSchema, spec, demo.Alteration{Table: demo.TableEvents, Day: small, AddShare: 0.02, Round: 1})
		if err != nil {
			t.Fatal(err)
		}
		// The big change reloads, and the store matches the changed warehouse.
		wantGood, wantBad := s.warehouseEvents(big)
		s.waitDay(demo.WebEvents, big, "reloaded", func(d store.Day) bool {
			return loaded(d) && d.Extracted == int64(len(wantGood)+wantBad)
		})
		s.assertEventsMatch(demo.WebEvents, big)
		if !slices.ContainsFunc(s.runsOf(demo.WebEvents, big), func(r store.Run) bool { return r.Trigger == vocab.TriggerReload }) {
			t.Errorf("no reload run recorded for %s", big)
		}
		// The small change is seen by the watcher but reloads nothing.
		s.waitDay(demo.WebEvents, small, "re-counted", func(d store.Day) bool {
			return d.WarehouseCount != nil && *d.WarehouseCount == after.Rows
		})
		d := s.waitDay(demo.WebEvents, small, "loaded", loaded)
		if d.Extracted != before.Extracted || d.VisibleRunID != before.VisibleRunID {
			t.Errorf("%s reloaded on a %d→%d change: %+v", small, before.Extracted, after.Rows, d)
		}
		for _, r := range s.runsOf(demo.WebEvents, small) {
			if r.Trigger == vocab.TriggerReload {
				t.Errorf("reload run for a change under the threshold: %+v", r)
			}
		}
	})
}
