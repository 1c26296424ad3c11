package planner

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/schemas"
)

// fakeClock is the injected clock every part of a test env reads.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// countCall is one Count the planner asked the warehouse for.
type countCall struct {
	query string
	day   civil.Date
	at    time.Time
}

// countingSource records every presence check.
type countingSource struct {
	warehouse.Source
	clock *fakeClock
	mu    *sync.Mutex
	calls *[]countCall
}

func (c countingSource) Count(ctx context.Context, query string, day civil.Date) (int64, error) {
	c.mu.Lock()
	*c.calls = append(*c.calls, countCall{query, day, c.clock.Now()})
	c.mu.Unlock()
	return c.Source.Count(ctx, query, day)
}

// env is a planner and dispatcher over kfake, the real Redis, a DuckDB
// store and a DuckDB demo warehouse, all on one fake clock.
type env struct {
	settings   *config.File
	clock      *fakeClock
	state      *state.State
	store      store.Store
	sources    *warehouse.Pool
	dispatcher *dispatch.Dispatcher
	codecs     *schemas.Codecs
	kafka      kafka.Config
	brokers    []string

	mu    sync.Mutex
	calls []countCall
}

func redisState(tb testing.TB, clock func() time.Time) *state.State {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	tb.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		if os.Getenv("CI") == "" {
			tb.Skipf("Redis at 127.0.0.1:6379 is not reachable (%v)", err)
		}
		tb.Fatalf("Redis at 127.0.0.1:6379: %v", err)
	}
	prefix := "sluice-planner-test-" + runid.New()[:12] + ":"
	tb.Cleanup(func() {
		keys, _ := rdb.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	return state.New(rdb, state.Options{Prefix: prefix, Clock: clock})
}

// newEnv seeds spec into a fresh warehouse and wires everything on clock.
func newEnv(tb testing.TB, spec demo.Spec, sched config.Schedule, now time.Time) *env {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	whPath := filepath.Join(dir, "warehouse.duckdb")
	if spec.Days > 0 {
		if _, err := demo.SeedDuckDBFile(ctx, whPath, spec); err != nil {
			tb.Fatal(err)
		}
	}
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(broker.Close)
	settings := demo.Config(demo.ConfigOptions{
		APIKey: "k", DuckDBPath: whPath, Kafka: broker.Addrs(),
		Store:    config.Store{Kind: "duckdb", Path: filepath.Join(dir, "store.duckdb")},
		Schedule: &sched,
	})
	if err := settings.Validate(); err != nil {
		tb.Fatal(err)
	}
	e := &env{settings: settings, clock: &fakeClock{t: now}, brokers: broker.Addrs()}
	e.state = redisState(tb, e.clock.Now)
	st, err := duckstore.Open(ctx, settings.Store.Path, duckstore.Options{Now: e.clock.Now, Logger: discard()})
	if err != nil {
		tb.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	e.store = st
	e.sources = warehouse.NewPool(settings.Connections, map[string]warehouse.Opener{
		"duckdb": func(_ context.Context, c config.Connection) (warehouse.Source, error) {
			src, err := duckdb.Open(c)
			if err != nil {
				return nil, err
			}
			return countingSource{Source: src, clock: e.clock, mu: &e.mu, calls: &e.calls}, nil
		},
	})
	tb.Cleanup(func() { e.sources.Close() })
	e.codecs, err = schemas.NewCodecs()
	if err != nil {
		tb.Fatal(err)
	}
	e.kafka = kafka.Config{Brokers: broker.Addrs(), Partitions: 2, ReplicationFactor: 1}
	cl, err := kafka.NewClient(e.kafka, "dispatcher", discard(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cl.Close)
	if err := kafka.EnsureTopics(ctx, cl, e.kafka, kafka.AllTopics...); err != nil {
		tb.Fatal(err)
	}
	e.dispatcher, err = dispatch.New(dispatch.Config{LeaseTTL: time.Hour}, dispatch.Deps{Client: cl, Kafka: e.kafka, Codecs: e.codecs,
		Settings: settings, Store: st, State: e.state, Logger: discard(), Clock: e.clock.Now})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func (e *env) planner(tb testing.TB, cfg Config) *Service {
	tb.Helper()
	p, err := New(cfg, Deps{Kafka: e.kafka, Codecs: e.codecs, Settings: e.settings, Store: e.store, State: e.state,
		Sources: e.sources, Dispatcher: e.dispatcher, Logger: discard(), Clock: e.clock.Now})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.client.Close() })
	return p
}

// checks returns when the warehouse was asked for ingestion's day.
func (e *env) checks(ingestion string, day civil.Date) []time.Time {
	ing, _ := e.settings.Ingestion(demo.ProjectName, ingestion)
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []time.Time
	for _, c := range e.calls {
		if c.query == ing.Query && c.day == day {
			out = append(out, c.at)
		}
	}
	return out
}

func (e *env) runs(tb testing.TB, ingestion string, day civil.Date) []store.Run {
	tb.Helper()
	runs, err := e.store.Runs(context.Background(), store.RunFilter{Project: demo.ProjectName, Ingestion: ingestion, Date: day.String()})
	if err != nil {
		tb.Fatal(err)
	}
	return runs
}

// seedDay adds one day of demo rows to the open warehouse: data that
// lands while the planner watches.
func (e *env) seedDay(tb testing.TB, spec demo.Spec, day civil.Date) {
	tb.Helper()
	src, err := e.sources.Source(context.Background(), demo.ConnectionName)
	if err != nil {
		tb.Fatal(err)
	}
	late := spec
	late.Days, late.LastDay = 1, day
	if _, err := demo.SeedDuckDB(context.Background(), src.(countingSource).Source.(*duckdb.Source).DB(), late); err != nil {
		tb.Fatal(err)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
