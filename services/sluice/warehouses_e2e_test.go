package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"cloud.google.com/go/civil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"google.golang.org/api/option"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	daydispatch "github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery/bqtest"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
	"github.com/sluicehq/sluice/schemas"
	"github.com/sluicehq/sluice/services/extractor"
)

// whStack is the pipeline over kfake, the real Redis and a DuckDB store,
// with warehouses given by the test (openers that may wrap or fake a
// source). Services are started and stopped by the test, so it can run
// dedicated extractors and restart them.
type whStack struct {
	t        *testing.T
	in       *Infra
	e2e      *e2eStack // waitDay and storeEvents
	dispatch *daydispatch.Dispatcher
	kadm     *kadm.Client
}

// eventsIngestion reads the demo events table through conn with query.
func eventsIngestion(name, conn, query string) config.Ingestion {
	return config.Ingestion{
		Name: name, Project: demo.ProjectName, Connection: conn, Type: config.TypeEvents, Query: query,
		Mapping: config.Mapping{
			EventName: "event_name", Timestamp: "event_time_s", TimestampUnit: "seconds",
			IDs:        map[string]string{"userID": "user_id", "stableID": "device_id", "companyID": "company_id"},
			EventValue: "event_value", Metadata: map[string]string{"country": "country", "platform": "platform"},
			MetadataJSON: "properties",
		},
		Schedule: config.Schedule{Mode: config.ScheduleAPITriggered},
	}
}

// newWHStack connects the infrastructure for conns and ings; openers
// replace the binary's own for the kinds they name.
func newWHStack(t *testing.T, conns []config.Connection, ings []config.Ingestion, openers map[string]warehouse.Opener, pipeline config.Pipeline) *whStack {
	t.Helper()
	ctx := t.Context()
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	settings := demo.Config(demo.ConfigOptions{
		APIKey:   e2eKey,
		Store:    config.Store{Kind: "duckdb", Path: filepath.Join(t.TempDir(), "store.duckdb")},
		Kafka:    broker.Addrs(),
		Pipeline: pipeline,
	})
	// One partition: every request shares it, so commit order is observable.
	settings.Kafka.Partitions = 1
	settings.Connections, settings.Ingestions = conns, ings
	settings.ApplyDefaults()
	if err := settings.Validate(); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	in, err := NewInfra(ctx, settings, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	all := Openers()
	for kind, open := range openers {
		all[kind] = open
	}
	in.Sources = warehouse.NewPool(settings.Connections, all)
	prefix := "sluice-wh-" + runid.New()[:10] + ":"
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
	if err := ensureTopics(ctx, in); err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(in.Kafka, "test-dispatcher", logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	d, err := newDispatch(in, daydispatch.Config{}, cl)
	if err != nil {
		t.Fatal(err)
	}
	return &whStack{t: t, in: in, e2e: &e2eStack{t: t, in: in}, dispatch: d, kadm: kadm.NewClient(cl)}
}

// start runs targets until the returned stop is called (or the test ends).
func (s *whStack) start(o RunOptions) (stop func()) {
	s.t.Helper()
	in := *s.in
	in.Registry = prometheus.NewRegistry() // each process its own metrics
	services, err := Build(s.t.Context(), &in, o)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunAll(ctx, services, Shutdown{Logger: in.Logger}) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				s.t.Errorf("services stopped with: %v", err)
			}
		})
	}
	s.t.Cleanup(stop)
	return stop
}

func (s *whStack) request(ingestion string, day civil.Date) {
	s.t.Helper()
	if _, err := s.dispatch.Dispatch(s.t.Context(), daydispatch.Request{Project: demo.ProjectName, Ingestion: ingestion,
		Date: day.String(), Trigger: vocab.TriggerBackfill, Reason: "test"}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *whStack) day(ingestion string, day civil.Date) store.Day {
	s.t.Helper()
	days, err := s.in.Store.Days(context.Background(), store.DayFilter{Project: demo.ProjectName, Ingestion: ingestion, From: day.String(), To: day.String()})
	if err != nil {
		s.t.Fatal(err)
	}
	if len(days) != 1 {
		return store.Day{}
	}
	return days[0]
}

// committed is the extractor group's committed offset of ingest-requests
// partition 0, -1 when none.
func (s *whStack) committed(group string) int64 {
	s.t.Helper()
	offs, err := s.kadm.FetchOffsets(s.t.Context(), group)
	if err != nil {
		s.t.Fatal(err)
	}
	if o, ok := offs.Lookup(s.in.Kafka.Topic(schemas.TopicIngestRequests), 0); ok && o.Err == nil {
		return o.At
	}
	return -1
}

// expectedEvents is the generator's day in the canonical form the store
// must hold, and the number of rows the mapper must reject. Like
// warehouseEvents it shares no code with the mapper.
func expectedEvents(tb testing.TB, spec demo.Spec, day civil.Date) (good []string, bad int) {
	tb.Helper()
	err := demo.Events(spec, day, func(ev *demo.Event) error {
		ids := map[string]string{}
		if !ev.UserNull && ev.UserID != "" {
			ids["userID"] = ev.UserID
		}
		if !ev.DeviceNull && ev.DeviceID != "" {
			ids["stableID"] = ev.DeviceID
		}
		if !ev.CompanyNull {
			ids["companyID"] = strconv.FormatInt(ev.CompanyID, 10)
		}
		var props map[string]json.RawMessage
		if ev.NameNull || ev.Name == "" || utf8.RuneCountInString(ev.Name) >= 128 || len(ids) == 0 ||
			ev.TimeS > 1e11 || json.Unmarshal([]byte(ev.Properties), &props) != nil {
			bad++
			return nil
		}
		meta := map[string]bool{"country": true, "platform": true}
		for k, v := range props {
			if string(v) != "null" {
				meta[k] = true
			}
		}
		value := ev.Value
		if ev.ValueNull {
			value = ""
		}
		good = append(good, canonicalEvent(ev.Name, ev.TimeS*1000, value, ids, meta))
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	sort.Strings(good)
	return good, bad
}

// assertLoaded waits for the day to load and compares the store with the
// generator row by row: every good row once, bad rows rejected with reasons.
func (s *whStack) assertLoaded(ingestion string, spec demo.Spec, day civil.Date) store.Day {
	s.t.Helper()
	d := s.e2e.waitDay(ingestion, day, "loaded", loaded)
	want, bad := expectedEvents(s.t, spec, day)
	got := s.e2e.storeEvents(ingestion, day)
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
	if bad > 0 && len(d.Rejected) == 0 {
		s.t.Errorf("%s %s: %d bad rows but no rejection reasons", ingestion, day, bad)
	}
	return d
}

// seedDuckDB writes the demo tables of spec into a new DuckDB file.
func seedDuckDB(tb testing.TB, spec demo.Spec) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "warehouse.duckdb")
	if _, err := demo.SeedDuckDBFile(context.Background(), path, spec); err != nil {
		tb.Fatal(err)
	}
	return path
}

// gatedSource wraps a source: Stream waits at the gate until it opens,
// and counts the Streams entered per day and how many run at once.
type gatedSource struct {
	warehouse.Source
	gate    chan struct{}
	changed chan struct{} // signalled when a Stream enters

	mu            sync.Mutex
	entered       map[civil.Date]int
	running, peak int
}

func newGated(src warehouse.Source) *gatedSource {
	return &gatedSource{Source: src, gate: make(chan struct{}), changed: make(chan struct{}, 1), entered: map[civil.Date]int{}}
}

func (g *gatedSource) open() { close(g.gate) }

func (g *gatedSource) Stream(ctx context.Context, q string, day civil.Date, n int, emit func(*warehouse.Batch) error) (int64, error) {
	g.mu.Lock()
	g.running++
	g.peak = max(g.peak, g.running)
	g.entered[day]++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.running--
		g.mu.Unlock()
	}()
	select {
	case g.changed <- struct{}{}:
	default:
	}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return g.Source.Stream(ctx, q, day, n, emit)
}

func (g *gatedSource) stats() (running, peak int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running, g.peak
}

// awaitEntered waits until ok holds for the Streams entered per day and
// the number running.
func (g *gatedSource) await(tb testing.TB, what string, ok func(entered map[civil.Date]int, running int) bool) {
	tb.Helper()
	timeout := time.After(60 * time.Second)
	for {
		g.mu.Lock()
		done := ok(g.entered, g.running)
		g.mu.Unlock()
		if done {
			return
		}
		select {
		case <-g.changed:
		case <-timeout:
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}

// awaitEntered waits for the n-th Stream of day to reach the gate.
func (g *gatedSource) awaitEntered(tb testing.TB, day civil.Date, n int) {
	tb.Helper()
	g.await(tb, fmt.Sprintf("query %d of %s to reach the warehouse", n, day), func(e map[civil.Date]int, _ int) bool { return e[day] >= n })
}

func duckOpener(wrap func(warehouse.Source) warehouse.Source) warehouse.Opener {
	return func(_ context.Context, c config.Connection) (warehouse.Source, error) {
		src, err := duckdb.Open(c)
		if err != nil {
			return nil, err
		}
		return wrap(src), nil
	}
}

func TestBlockedWarehouseDoesNotDelayAnother(t *testing.T) {
	spec := demo.Spec{Days: 3, LastDay: civil.Date{Year: 2024, Month: 5, Day: 3}, EventsPerDay: 400, MetricsPerDay: 10, BadRowEvery: 50, Seed: 11}
	days := spec.Dates()
	setup := func(t *testing.T) (*whStack, *gatedSource) {
		var gated *gatedSource
		conns := []config.Connection{
			{Name: "healthy", Kind: "duckdb", Path: seedDuckDB(t, spec)},
			{Name: "stuck", Kind: "duckdb", Path: seedDuckDB(t, spec)},
		}
		s := newWHStack(t, conns, []config.Ingestion{
			eventsIngestion("healthy_events", "healthy", demo.EventsQuery("events")),
			eventsIngestion("stuck_events", "stuck", demo.EventsQuery("events")),
		}, map[string]warehouse.Opener{
			"duckdb": func(ctx context.Context, c config.Connection) (warehouse.Source, error) {
				src, err := duckdb.Open(c)
				if err != nil || c.Name != "stuck" {
					return src, err
				}
				gated = newGated(src)
				return gated, nil
			},
		}, config.Pipeline{})
		// Open the stuck connection now so the test holds its gate.
		if _, err := s.in.Sources.Source(t.Context(), "stuck"); err != nil {
			t.Fatal(err)
		}
		return s, gated
	}
	services := []string{"mapper", "loader"}
	fast := extractor.Config{DrainTimeout: 200 * time.Millisecond}

	run := func(t *testing.T, s *whStack, gated *gatedSource, start func()) {
		// The stuck warehouse's requests go first, so they sit ahead of the
		// healthy ones on the one partition.
		for _, day := range days {
			s.request("stuck_events", day)
		}
		for _, day := range days {
			s.request("healthy_events", day)
		}
		start()
		for _, day := range days {
			gated.awaitEntered(t, day, 1)
		}
		for _, day := range days {
			s.assertLoaded("healthy_events", spec, day)
		}
		for _, day := range days {
			if d := s.day("stuck_events", day); loaded(d) || d.Status == vocab.StatusFailed {
				t.Fatalf("stuck %s finished while its warehouse hangs: %+v", day, d)
			}
		}
		if running, _ := gated.stats(); running != len(days) {
			t.Errorf("%d stuck queries in flight, want %d", running, len(days))
		}
		gated.open()
		for _, day := range days {
			s.assertLoaded("stuck_events", spec, day)
		}
	}

	t.Run("one extractor serves both", func(t *testing.T) {
		s, gated := setup(t)
		run(t, s, gated, func() {
			s.start(RunOptions{Targets: append([]string{"extractor"}, services...), Extractor: fast})
		})
	})

	t.Run("dedicated extractors per connection", func(t *testing.T) {
		s, gated := setup(t)
		run(t, s, gated, func() {
			s.start(RunOptions{Targets: services})
			s.start(RunOptions{Targets: []string{"extractor"}, Extractor: extractor.Config{Connections: []string{"healthy"}, DrainTimeout: fast.DrainTimeout}})
			s.start(RunOptions{Targets: []string{"extractor"}, Extractor: extractor.Config{Connections: []string{"stuck"}, DrainTimeout: fast.DrainTimeout}})
		})
	})

	t.Run("restart while blocked redoes the blocked request and duplicates nothing", func(t *testing.T) {
		s, gated := setup(t)
		s.start(RunOptions{Targets: services})
		stuckDay := days[0]
		s.request("stuck_events", stuckDay)
		for _, day := range days {
			s.request("healthy_events", day)
		}
		stop := s.start(RunOptions{Targets: []string{"extractor"}, Extractor: fast})
		gated.awaitEntered(t, stuckDay, 1)
		for _, day := range days {
			s.assertLoaded("healthy_events", spec, day)
		}
		group := fast.GroupName()
		// Stopping commits everything committable: the healthy requests
		// behind the stuck one (offset 0) must not be committed past it.
		stop()
		if at := s.committed(group); at > 0 {
			t.Fatalf("after stopping, committed offset %d is past the stuck request at offset 0", at)
		}
		before := map[civil.Date]store.Day{}
		for _, day := range days {
			before[day] = s.day("healthy_events", day)
		}
		s.start(RunOptions{Targets: []string{"extractor"}, Extractor: fast})
		gated.awaitEntered(t, stuckDay, 2) // redelivered and redone
		gated.open()
		s.assertLoaded("stuck_events", spec, stuckDay)
		for _, day := range days {
			d := s.assertLoaded("healthy_events", spec, day)
			if d.RowsLoaded != before[day].RowsLoaded || d.VisibleRunID != before[day].VisibleRunID {
				t.Errorf("%s: run %s with %d rows after restart, run %s with %d before", day, d.VisibleRunID, d.RowsLoaded, before[day].VisibleRunID, before[day].RowsLoaded)
			}
		}
		// Once the stuck request is done, every request is committed.
		s.e2e.waitDay("stuck_events", stuckDay, "all requests committed", func(store.Day) bool { return s.committed(group) == int64(1+len(days)) })
	})
}

func TestPerConnectionConcurrency(t *testing.T) {
	spec := demo.Spec{Days: 5, LastDay: civil.Date{Year: 2024, Month: 5, Day: 5}, EventsPerDay: 100, MetricsPerDay: 10, Seed: 3}
	var gated *gatedSource
	s := newWHStack(t, []config.Connection{{Name: "wh", Kind: "duckdb", Path: seedDuckDB(t, spec), MaxConcurrency: 2}},
		[]config.Ingestion{eventsIngestion("events", "wh", demo.EventsQuery("events"))},
		map[string]warehouse.Opener{"duckdb": duckOpener(func(src warehouse.Source) warehouse.Source { gated = newGated(src); return gated })},
		config.Pipeline{})
	if _, err := s.in.Sources.Source(t.Context(), "wh"); err != nil {
		t.Fatal(err)
	}
	for _, day := range spec.Dates() {
		s.request("events", day)
	}
	s.start(RunOptions{Targets: []string{"extractor", "mapper", "loader"}, Extractor: extractor.Config{DrainTimeout: 200 * time.Millisecond}})
	gated.await(t, "two queries at the gate", func(_ map[civil.Date]int, running int) bool { return running >= 2 })
	// Two queries hold the connection's slots; the other three wait in the
	// extractor, still scheduled.
	waiting := 0
	for _, day := range spec.Dates() {
		if d := s.day("events", day); d.Status == vocab.StatusScheduled {
			waiting++
		}
	}
	if running, _ := gated.stats(); running != 2 || waiting != 3 {
		t.Errorf("with max_concurrency 2: %d queries running, %d days scheduled; want 2 and 3", running, waiting)
	}
	gated.open()
	for _, day := range spec.Dates() {
		s.assertLoaded("events", spec, day)
	}
	if _, peak := gated.stats(); peak != 2 {
		t.Errorf("at most %d queries ran at once, want exactly max_concurrency 2", peak)
	}
}

func TestUnservedWarehouseWaits(t *testing.T) {
	spec := demo.Spec{Days: 1, LastDay: civil.Date{Year: 2024, Month: 5, Day: 1}, EventsPerDay: 300, MetricsPerDay: 10, BadRowEvery: 40, Seed: 5}
	day := spec.LastDay
	pool := pgPool(t, t.Context())
	schema := "wh_wait_" + runid.New()[:10]
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	if _, err := demo.SeedPostgres(t.Context(), pool, schema, spec); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_WAIT_PG_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	s := newWHStack(t, []config.Connection{
		{Name: "duck", Kind: "duckdb", Path: seedDuckDB(t, spec)},
		{Name: "pg", Kind: "postgres", DSNEnv: "SLUICE_WAIT_PG_DSN"},
	}, []config.Ingestion{
		eventsIngestion("duck_events", "duck", demo.EventsQuery("events")),
		eventsIngestion("pg_events", "pg", demo.EventsQuery(schema+".events")),
	}, nil, config.Pipeline{})
	s.start(RunOptions{Targets: []string{"mapper", "loader"}})
	duckOnly := extractor.Config{Kinds: []string{"duckdb"}}
	s.start(RunOptions{Targets: []string{"extractor"}, Extractor: duckOnly})
	s.request("pg_events", day)
	s.request("duck_events", day)
	// The duckdb extractor has passed over the postgres request (it was
	// ahead on the one partition) and loaded the duckdb day.
	s.assertLoaded("duck_events", spec, day)
	if d := s.day("pg_events", day); d.Status != vocab.StatusScheduled {
		t.Fatalf("postgres day with no extractor serving it: %+v, want %s", d, vocab.StatusScheduled)
	}
	s.start(RunOptions{Targets: []string{"extractor"}, Extractor: extractor.Config{Kinds: []string{"postgres"}}})
	s.assertLoaded("pg_events", spec, day)
}

// flakySource fails its first n Streams with err, then streams.
type flakySource struct {
	warehouse.Source
	err      error
	failures int64
	attempts atomic.Int64
}

func (f *flakySource) Stream(ctx context.Context, q string, day civil.Date, n int, emit func(*warehouse.Batch) error) (int64, error) {
	if f.attempts.Add(1) <= f.failures {
		return 0, f.err
	}
	return f.Source.Stream(ctx, q, day, n, emit)
}

func TestWarehouseErrorsReachDayStatus(t *testing.T) {
	spec := demo.Spec{Days: 1, LastDay: civil.Date{Year: 2024, Month: 5, Day: 1}, EventsPerDay: 200, MetricsPerDay: 10, Seed: 9}
	day := spec.LastDay
	pgPool(t, t.Context()) // skips without PostgreSQL
	t.Setenv("SLUICE_ERR_PG_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	t.Setenv("SLUICE_ERR_BAD_ROLE_DSN", "postgres://no_such_role_sluice:wrong@127.0.0.1:5432/postgres?sslmode=disable")
	t.Setenv("SLUICE_ERR_NO_SERVER_DSN", "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5")
	t.Setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
	t.Setenv("SF_DISABLE_MINICORE", "true")
	t.Setenv("SLUICE_ERR_SF_PASSWORD", "not-the-password")
	sf := sftest.NewServer(t)
	sf.AddUser("loader", "s3cret")
	bqs := bqtest.NewServer(t)
	refused := &flakySource{failures: 2, err: &warehouse.Error{Category: vocab.CategoryConnection, Transient: true, Err: errors.New("dial tcp 127.0.0.1:1: connection refused")}}
	denied := &flakySource{failures: 1 << 30, err: &warehouse.Error{Category: vocab.CategoryPermission, Err: errors.New("permission denied for table events")}}
	wrapped := map[string]*flakySource{"refused": refused, "denied": denied}
	path := seedDuckDB(t, spec)
	s := newWHStack(t, []config.Connection{
		{Name: "pg", Kind: "postgres", DSNEnv: "SLUICE_ERR_PG_DSN"},
		{Name: "pg_bad_role", Kind: "postgres", DSNEnv: "SLUICE_ERR_BAD_ROLE_DSN"},
		{Name: "pg_no_server", Kind: "postgres", DSNEnv: "SLUICE_ERR_NO_SERVER_DSN"},
		{Name: "sf", Kind: "snowflake", Account: sftest.Account, User: "loader", PasswordEnv: "SLUICE_ERR_SF_PASSWORD",
			Database: "DB", Schema: "PUBLIC", Endpoint: sf.URL},
		{Name: "bq", Kind: "bigquery", ProjectID: "sluice-err", Endpoint: bqs.URL},
		{Name: "refused", Kind: "duckdb", Path: path},
		{Name: "denied", Kind: "duckdb", Path: filepath.Join(t.TempDir(), "denied.duckdb")},
	}, []config.Ingestion{
		eventsIngestion("bad_role", "pg_bad_role", "SELECT 1 AS event_name WHERE $1::date IS NOT NULL"),
		eventsIngestion("missing_table", "pg", "SELECT event_name FROM sluice_no_such_table WHERE ds = $1"),
		eventsIngestion("syntax", "pg", "SELEC event_name FROM events WHERE ds = $1"),
		eventsIngestion("no_server", "pg_no_server", "SELECT event_name FROM events WHERE ds = $1"),
		eventsIngestion("sf_password", "sf", "SELECT event_name FROM EVENTS WHERE ds = ?"),
		eventsIngestion("bq_missing_table", "bq", "SELECT event_name FROM `sluice_err.events` WHERE ds = @date"),
		eventsIngestion("flaky", "refused", demo.EventsQuery("events")),
		eventsIngestion("no_grant", "denied", demo.EventsQuery("events")),
	}, map[string]warehouse.Opener{
		"duckdb": func(_ context.Context, c config.Connection) (warehouse.Source, error) {
			src, err := duckdb.Open(c)
			if err != nil {
				return nil, err
			}
			f := wrapped[c.Name]
			f.Source = src
			return f, nil
		},
		"bigquery": func(ctx context.Context, c config.Connection) (warehouse.Source, error) {
			return bigquery.Open(ctx, c, option.WithoutAuthentication())
		},
	}, config.Pipeline{})
	s.start(RunOptions{Targets: []string{"extractor", "mapper", "loader"},
		Extractor: extractor.Config{MaxAttempts: 4, RetryBackoff: 10 * time.Millisecond}})

	tests := []struct {
		ingestion string
		category  vocab.Category
		message   string
	}{
		{"bad_role", vocab.CategoryAuthentication, "no_such_role_sluice"},
		{"missing_table", vocab.CategoryQuery, "sluice_no_such_table"},
		{"syntax", vocab.CategoryQuery, "SELEC"},
		{"no_server", vocab.CategoryConnection, "127.0.0.1"},
		{"sf_password", vocab.CategoryAuthentication, "Incorrect username or password"},
		{"bq_missing_table", vocab.CategoryQuery, "events"},
		{"no_grant", vocab.CategoryPermission, "permission denied"},
	}
	for _, tt := range tests {
		s.request(tt.ingestion, day)
	}
	s.request("flaky", day)
	for _, tt := range tests {
		t.Run(tt.ingestion, func(t *testing.T) {
			d := s.e2e.waitDay(tt.ingestion, day, "failed", func(d store.Day) bool { return d.Status == vocab.StatusFailed })
			t.Logf("%s: %s", d.ErrorCategory, d.ErrorMessage)
			if d.ErrorCategory != tt.category || !containsFold(d.ErrorMessage, tt.message) {
				t.Errorf("day status %s %q (%s), want %s naming %q", d.ErrorCategory, d.ErrorMessage, d.Status, tt.category, tt.message)
			}
		})
	}
	t.Run("a permanent error is not retried", func(t *testing.T) {
		if n := denied.attempts.Load(); n != 1 {
			t.Errorf("%d attempts, want 1", n)
		}
	})
	t.Run("a transient error is retried with backoff, then the day loads", func(t *testing.T) {
		s.assertLoaded("flaky", spec, day)
		if n := refused.attempts.Load(); n != 3 {
			t.Errorf("%d attempts, want 3 (two refused, one that loads)", n)
		}
	})
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
