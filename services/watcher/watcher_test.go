package watcher

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/kafka/kafkatest"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	"github.com/sluicehq/sluice/pkg/store/storetest"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/schemas"
)

// watchFixture is a watcher over a real DuckDB warehouse and store, kfake
// for its candidates, miniredis for its dedupe keys, and a clock the test
// moves.
type watchFixture struct {
	svc      *Service
	store    store.Store
	pool     *warehouse.Pool
	spec     demo.Spec
	now      time.Time
	consumer *kgo.Client
	codecs   *schemas.Codecs
	redis    *miniredis.Miniredis
}

// advance moves the watcher's clock and Redis's together.
func (f *watchFixture) advance(d time.Duration) {
	f.now = f.now.Add(d)
	f.redis.FastForward(d)
}

func newWatchFixture(t *testing.T) *watchFixture {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	f := &watchFixture{
		spec: demo.Spec{Days: 4, LastDay: civil.Date{Year: 2026, Month: 11, Day: 26}, EventsPerDay: 400, Seed: 5},
		now:  time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC),
	}
	whPath := filepath.Join(dir, "wh.duckdb")
	if _, err := demo.SeedDuckDBFile(ctx, whPath, f.spec); err != nil {
		t.Fatal(err)
	}
	kcfg, _ := kafkatest.Start(t, kafka.Config{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mr := miniredis.RunT(t)
	f.redis = mr
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })

	st, err := duckstore.Open(ctx, filepath.Join(dir, "store.duckdb"), duckstore.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	f.store = st
	settings := demo.Config(demo.ConfigOptions{APIKey: "k", DuckDBPath: whPath})
	f.pool = warehouse.NewPool(settings.Connections, map[string]warehouse.Opener{
		"duckdb": func(_ context.Context, c config.Connection) (warehouse.Source, error) { return duckdb.Open(c) },
	})
	t.Cleanup(func() { f.pool.Close() })
	if f.codecs, err = schemas.NewCodecs(); err != nil {
		t.Fatal(err)
	}
	st8 := state.New(rdb, state.Options{})
	days, err := dispatch.New(dispatch.Config{}, dispatch.Deps{Codecs: f.codecs, Settings: settings, Store: st, State: st8})
	if err != nil {
		t.Fatal(err)
	}
	f.svc, err = New(Config{Days: 3, Interval: time.Hour, Threshold: 0.05},
		Deps{Kafka: kcfg, Codecs: f.codecs, Settings: settings, Store: st, State: st8, Dispatcher: days,
			Sources: f.pool, Logger: log, Clock: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.svc.client.Close() })
	f.consumer, err = kgo.NewClient(kgo.SeedBrokers(kcfg.Brokers...), kgo.ConsumeTopics(schemas.TopicReloadCandidates),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.consumer.Close)
	return f
}

// load records the day as loaded with the warehouse's current rows.
func (f *watchFixture) load(t *testing.T, day civil.Date, at time.Time) {
	t.Helper()
	n, err := f.source(t).Count(t.Context(), demo.EventsQuery("events"), day)
	if err != nil {
		t.Fatal(err)
	}
	l := storetest.Load{Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: day.String(),
		ExtractID: "x-" + day.String(), Fence: 1, Rows: int(n), PerBatch: 500, At: at}
	if err := f.store.StageBatches(t.Context(), l.Batches()); err != nil {
		t.Fatal(err)
	}
	if out, err := f.store.CompleteRun(t.Context(), l.End()); err != nil || out != store.Swapped {
		t.Fatalf("load %s: %v %v", day, out, err)
	}
}

func (f *watchFixture) source(t *testing.T) *duckdb.Source {
	t.Helper()
	src, err := f.pool.Source(t.Context(), demo.ConnectionName)
	if err != nil {
		t.Fatal(err)
	}
	return src.(*duckdb.Source)
}

func (f *watchFixture) day(t *testing.T, d civil.Date) store.Day {
	t.Helper()
	days, err := f.store.Days(t.Context(), store.DayFilter{Project: demo.ProjectName, Ingestion: demo.WebEvents, From: d.String(), To: d.String()})
	if err != nil || len(days) != 1 {
		t.Fatalf("day %s: %v %v", d, days, err)
	}
	return days[0]
}

// candidates reads every reload candidate published so far.
func (f *watchFixture) candidates(t *testing.T) map[string]schemas.ReloadCandidate {
	t.Helper()
	out := map[string]schemas.ReloadCandidate{}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	for {
		fetches := f.consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			return out
		}
		fetches.EachRecord(func(r *kgo.Record) {
			var c schemas.ReloadCandidate
			if err := f.codecs.Decode(f.codecs.ReloadCandidate, r.Value, &c); err != nil {
				t.Fatal(err)
			}
			out[c.Date] = c
		})
	}
}

func TestWatcherReloadsExactlyTheChangedDays(t *testing.T) {
	f := newWatchFixture(t)
	ctx := t.Context()
	dates := f.spec.Dates()
	old, more, content, small := dates[0], dates[3], dates[2], dates[1]
	f.load(t, old, f.now.Add(-4*24*time.Hour)) // first loaded before the watch window
	for _, d := range []civil.Date{small, content, more} {
		f.load(t, d, f.now.Add(-time.Hour))
	}

	// The first watch records each recent day's count and content baseline.
	if err := f.svc.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range []civil.Date{small, content, more} {
		got := f.day(t, d)
		if got.WarehouseCount == nil || *got.WarehouseCount != got.Extracted || got.Fingerprint == "" {
			t.Fatalf("%s after the first watch: count %v (loaded %d), baseline %q", d, got.WarehouseCount, got.Extracted, got.Fingerprint)
		}
	}
	if got := f.day(t, old); got.WarehouseCount != nil {
		t.Errorf("%s is older than the watch window but was re-counted", old)
	}

	db := f.source(t).DB()
	for _, a := range []demo.Alteration{
		{Table: demo.TableEvents, Day: more, AddShare: 0.10, Round: 1},
		{Table: demo.TableEvents, Day: content, ChangeShare: 0.10, Round: 1},
		{Table: demo.TableEvents, Day: small, AddShare: 0.02, Round: 1},
		{Table: demo.TableEvents, Day: old, AddShare: 0.50, Round: 1},
	} {
		if _, err := demo.AlterDuckDB(ctx, db, f.spec, a); err != nil {
			t.Fatal(err)
		}
	}

	// Within the interval nothing is counted again.
	f.advance(10 * time.Minute)
	if err := f.svc.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.day(t, more); *got.WarehouseCount != got.Extracted {
		t.Fatalf("%s re-counted within the interval: %d", more, *got.WarehouseCount)
	}
	if c := f.candidates(t); len(c) != 0 {
		t.Fatalf("candidates before the interval passed: %v", c)
	}

	// Past the interval: exactly the changed days, each with its reason.
	f.advance(time.Hour)
	if err := f.svc.Check(ctx); err != nil {
		t.Fatal(err)
	}
	got := f.candidates(t)
	if len(got) != 2 {
		t.Fatalf("candidates %v, want %s (count) and %s (content)", got, more, content)
	}
	if c := got[more.String()]; c.Reason != "count" || c.WarehouseCount <= c.LoadedCount {
		t.Errorf("%s: %+v, want a count change upwards", more, c)
	}
	if c := got[content.String()]; c.Reason != "content" || c.WarehouseCount != c.LoadedCount || c.LoadedFingerprint == c.WarehouseFingerprint {
		t.Errorf("%s: %+v, want a content change with the same count", content, c)
	}

	// Seen again within the interval: no second candidate. After it, a
	// change still not reloaded (the candidate was lost, say) is reported
	// again; a day whose reload is in flight is skipped by its lease.
	f.advance(30 * time.Minute)
	if err := f.svc.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if again := f.candidates(t); len(again) != 0 {
		t.Errorf("the same change was reported twice within the interval: %v", again)
	}
	f.advance(time.Hour)
	if err := f.svc.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if again := f.candidates(t); len(again) != 2 {
		t.Errorf("unreloaded changes after the interval: %v, want both again", again)
	}
}
