package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	pgstore "github.com/sluicehq/sluice/pkg/store/postgres"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// receiver is a webhook that answers status to its first failures calls
// and records what it accepted, by notification id.
type receiver struct {
	mu       sync.Mutex
	calls    int
	failures int
	status   int
	got      map[string][]SlackPayload
}

func (h *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.calls <= h.failures {
		w.WriteHeader(h.status)
		return
	}
	var p SlackPayload
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil || r.Header.Get("Content-Type") != "application/json" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := r.Header.Get(HeaderID)
	h.got[id] = append(h.got[id], p)
}

func (h *receiver) callCount() int { h.mu.Lock(); defer h.mu.Unlock(); return h.calls }

// delivered returns the ids accepted, each with how often.
func (h *receiver) delivered() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for id, ps := range h.got {
		out[id] = len(ps)
	}
	return out
}

func (h *receiver) text(tb testing.TB, id string) string {
	tb.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got[id]) == 0 {
		tb.Fatalf("notification %s not delivered; have %v", id, h.got)
	}
	return h.got[id][0].Text
}

// clock is the notifiers' injected time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time               { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration)      { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }
func (c *clock) at(d time.Duration) time.Time { return c.Now().Add(d) }

const interval = time.Hour // tests poll by hand or cancel; the interval never fires

type fixture struct {
	store    store.Store
	hook     *receiver
	clock    *clock
	settings *config.File
	waits    chan time.Duration
}

// openStore returns a fresh, migrated store, closed when tb ends.
type openStore func(tb testing.TB) store.Store

func openDuckDB(tb testing.TB) store.Store {
	tb.Helper()
	st, err := duckstore.Open(context.Background(), filepath.Join(tb.TempDir(), "store.duckdb"), duckstore.Options{Logger: quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

var pgSeq atomic.Int64

// openPostgres opens a store in a schema of its own on the local server,
// dropped when tb ends; it skips when the server is unreachable (unless
// CI is set).
func openPostgres(tb testing.TB) store.Store {
	tb.Helper()
	ctx := context.Background()
	dsn := os.Getenv("SLUICE_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	schema := fmt.Sprintf("notifytest_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, pgSeq.Add(1))
	st, err := pgstore.Open(ctx, dsn, pgstore.Options{Schema: schema, Logger: quiet()})
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatal(err)
		}
		tb.Skipf("postgres unreachable: %v", err)
	}
	tb.Cleanup(func() {
		defer st.Close()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return st
}

// eachStore runs fn against the DuckDB store and the PostgreSQL store.
func eachStore(t *testing.T, fn func(t *testing.T, open openStore)) {
	for _, s := range []struct {
		name string
		open openStore
	}{{"duckdb", openDuckDB}, {"postgres", openPostgres}} {
		t.Run(s.name, func(t *testing.T) { fn(t, s.open) })
	}
}

func newFixture(tb testing.TB, failures, status int) *fixture {
	return newFixtureOn(tb, openDuckDB, failures, status)
}

func newFixtureOn(tb testing.TB, open openStore, failures, status int) *fixture {
	tb.Helper()
	h := &receiver{failures: failures, status: status, got: map[string][]SlackPayload{}}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	st := open(tb)
	if err := st.Migrate(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return &fixture{store: st, hook: h, waits: make(chan time.Duration, 100),
		clock:    &clock{now: time.Date(2024, 2, 22, 9, 0, 0, 0, time.UTC)},
		settings: &config.File{Projects: []config.Project{{Name: "p1", WebhookURL: srv.URL + "/hook"}, {Name: "quiet"}}}}
}

// notifier returns a notifier on the fixture's store, clock and webhook.
func (f *fixture) notifier(tb testing.TB, cfg Config) *Notifier {
	tb.Helper()
	cfg.Interval = interval
	n, err := New(cfg, Deps{Settings: f.settings, Store: f.store, Logger: quiet(), Registry: prometheus.NewRegistry(),
		Now: f.clock.Now,
		After: func(d time.Duration) <-chan time.Time {
			if d == interval {
				return nil // Run's poll interval: never, the test cancels
			}
			f.waits <- d
			c := make(chan time.Time, 1)
			c <- time.Time{}
			return c
		}})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func (f *fixture) update(tb testing.TB, u store.RunUpdate) {
	tb.Helper()
	u.Ingestion, u.Type, u.At = "events_daily", "events", f.clock.Now()
	if u.Project == "" {
		u.Project = "p1"
	}
	if u.Trigger == "" {
		u.Trigger = vocab.TriggerScheduled
	}
	if err := f.store.UpdateRun(context.Background(), u); err != nil {
		tb.Fatal(err)
	}
}

func (f *fixture) failRun(tb testing.TB, id, date string, category vocab.Category, msg string) {
	tb.Helper()
	f.update(tb, store.RunUpdate{RunID: id, Date: date, Status: vocab.StatusFailed, ErrorCategory: category, ErrorMessage: msg})
}

// load is one extraction of a run: rows events and rejected bad rows.
type load struct {
	project, run, extract, date string
	trigger                     vocab.Trigger
	fence                       int64
	rows, rejected              int
}

// complete stages and completes l, expecting want.
func (f *fixture) complete(tb testing.TB, l load, want store.Outcome) {
	tb.Helper()
	ctx := context.Background()
	if l.project == "" {
		l.project = "p1"
	}
	if l.trigger == "" {
		l.trigger = vocab.TriggerScheduled
	}
	end := store.RunEnd{RunID: l.run, ExtractID: l.extract, Project: l.project, Ingestion: "events_daily", Type: "events",
		Date: l.date, Trigger: l.trigger, Fence: l.fence, Batches: 1, Rows: int64(l.rows + l.rejected),
		MaxRejectedShare: 0.5, At: f.clock.Now()}
	b := &schemas.MappedBatch{RunID: l.run, ExtractID: l.extract, Project: l.project, Ingestion: end.Ingestion, Date: l.date,
		Trigger: string(l.trigger), Fence: l.fence, Kind: schemas.KindRows, Type: "events", RowCount: end.Rows}
	if l.rejected > 0 {
		b.Rejected = []schemas.ReasonCount{{Reason: "bad_time", Count: int64(l.rejected)}}
	}
	for i := range l.rows {
		b.Events = append(b.Events, schemas.Event{Position: int64(i), EventName: "e", TimeMs: 1708473600000,
			UnitIDs: []schemas.UnitID{{IDType: "userID", Value: "u"}}, MetadataJSON: "{}"})
	}
	if err := f.store.StageBatches(ctx, []*schemas.MappedBatch{b}); err != nil {
		tb.Fatal(err)
	}
	if out, err := f.store.CompleteRun(ctx, end); err != nil || out != want {
		tb.Fatalf("complete %s: %v %v, want %v", l.extract, out, err, want)
	}
}

// due lists the runs of projects still due: a claim as if a year had
// passed (so it sees runs claimed now, and takes those claims), given
// back at once: use it where no claim has to hold on.
func (f *fixture) due(tb testing.TB, projects ...string) []string {
	tb.Helper()
	runs, err := f.store.ClaimNotifications(context.Background(), store.NotificationClaim{
		Projects: projects, Owner: "inspect", At: f.clock.at(365 * 24 * time.Hour), Lease: time.Nanosecond, Limit: 1000})
	if err != nil {
		tb.Fatal(err)
	}
	if err := f.store.ReleaseNotifications(context.Background(), "inspect"); err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.RunID)
	}
	sort.Strings(ids)
	return ids
}

// TestEveryDueNotificationDeliveredOnce: each run that ended is looked at
// once; the ones that need a person reach the webhook once, with their
// id; redeliveries and a second extraction of a run add nothing.
func TestEveryDueNotificationDeliveredOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, open openStore) {
		f := newFixtureOn(t, open, 0, 0)
		f.failRun(t, "run-failed", "2024-02-20", vocab.CategoryQuery, `relation "events" does not exist`)
		f.complete(t, load{run: "run-empty", extract: "run-empty-x", date: "2024-02-21", fence: 1}, store.Swapped)
		f.update(t, store.RunUpdate{RunID: "run-reload", Date: "2024-02-21", Fence: 2, Trigger: vocab.TriggerReload,
			Status: vocab.StatusScheduled, Message: "warehouse count changed by 12%"})
		f.complete(t, load{run: "run-reload", extract: "run-reload-x", trigger: vocab.TriggerReload, date: "2024-02-21", fence: 2, rows: 3}, store.Swapped)
		f.complete(t, load{run: "run-normal", extract: "run-normal-x", date: "2024-02-19", fence: 3, rows: 2}, store.Swapped)
		f.complete(t, load{run: "run-rejects", extract: "run-rejects-x", date: "2024-02-18", rows: 1, rejected: 9}, store.TooManyRejected)
		f.complete(t, load{run: "run-stale", extract: "run-stale-x", date: "2024-02-21", fence: 1, rows: 1}, store.Stale)
		f.complete(t, load{project: "quiet", run: "run-quiet", extract: "run-quiet-x", date: "2024-02-21"}, store.Swapped)
		f.update(t, store.RunUpdate{RunID: "run-started", Date: "2024-02-17", Status: vocab.StatusStarted})
		// The reload's request was redelivered: its END again, and a second
		// extraction of the same run.
		f.complete(t, load{run: "run-reload", extract: "run-reload-x", trigger: vocab.TriggerReload, date: "2024-02-21", fence: 2, rows: 3}, store.AlreadyDone)
		f.complete(t, load{run: "run-reload", extract: "run-reload-y", trigger: vocab.TriggerReload, date: "2024-02-21", fence: 2, rows: 3}, store.AlreadyDone)
		f.failRun(t, "run-failed", "2024-02-20", vocab.CategoryQuery, "again") // a redelivered FAILED marker

		n := f.notifier(t, Config{})
		n.poll(context.Background())
		n.poll(context.Background()) // a second poll finds nothing
		want := map[string]int{
			"p1/run-failed/failed":  1,
			"p1/run-empty/empty":    1,
			"p1/run-reload/reload":  1,
			"p1/run-rejects/failed": 1,
		}
		if got := f.hook.delivered(); !reflect.DeepEqual(got, want) {
			t.Fatalf("delivered %v, want %v", got, want)
		}
		for id, wants := range map[string][]string{
			"p1/run-failed/failed":  {"p1/events_daily 2024-02-20 failed", string(vocab.CategoryQuery), `relation "events" does not exist`},
			"p1/run-empty/empty":    {"2024-02-21 loaded with no data"},
			"p1/run-reload/reload":  {"reloaded: 3 rows loaded", "12%"},
			"p1/run-rejects/failed": {string(vocab.CategoryTooManyRejected), "90.0% of 10 rows rejected"},
		} {
			text := f.hook.text(t, id)
			for _, w := range wants {
				if !strings.Contains(text, w) {
					t.Errorf("%s: text %q lacks %q", id, text, w)
				}
			}
		}
		if got := f.due(t, "p1", "quiet"); !reflect.DeepEqual(got, []string(nil)) {
			t.Fatalf("still due after the polls: %v (runs that need no webhook are marked too)", got)
		}
		if v := counter(t, n.sent, EventFailed); v != 2 {
			t.Errorf("sent{failed} = %v, want 2", v)
		}
	})
}

// TestReceiverFailsThenRecovers: a webhook that is down keeps its
// notifications due; they go out, once, when it is back.
func TestReceiverFailsThenRecovers(t *testing.T) {
	eachStore(t, func(t *testing.T, open openStore) {
		f := newFixtureOn(t, open, 7, http.StatusServiceUnavailable)
		f.failRun(t, "run-a", "2024-02-20", vocab.CategoryQuery, "boom")
		f.clock.Advance(time.Second)
		f.failRun(t, "run-b", "2024-02-21", vocab.CategoryConnection, "refused")
		n := f.notifier(t, Config{MaxAttempts: 5, Backoff: time.Second})
		n.poll(context.Background())
		if got := f.hook.callCount(); got != 5 {
			t.Fatalf("%d calls in the first poll, want 5 attempts of run-a then a stop", got)
		}
		for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
			if got := <-f.waits; got != want {
				t.Errorf("backoff %d = %s, want %s", i, got, want)
			}
		}
		// The claim holds off a retry (and other notifiers) until the lease ends.
		n.poll(context.Background())
		if got := f.hook.callCount(); got != 5 {
			t.Fatalf("%d calls; a poll within the lease retried", got)
		}
		if got := f.due(t, "p1"); !reflect.DeepEqual(got, []string{"run-a", "run-b"}) {
			t.Fatalf("due while the webhook is down = %v", got)
		}
		f.clock.Advance(n.cfg.Lease)
		n.poll(context.Background()) // two more 503s, then the webhook is back
		want := map[string]int{"p1/run-a/failed": 1, "p1/run-b/failed": 1}
		if got := f.hook.delivered(); !reflect.DeepEqual(got, want) {
			t.Fatalf("delivered %v, want %v", got, want)
		}
		if got := f.hook.callCount(); got != 9 {
			t.Errorf("%d calls, want 9 (7 refused, 2 delivered)", got)
		}
	})
}

// TestDrainDeliversWhatIsDue: Run whose ctx is already cancelled still
// delivers what is due, then returns nil.
func TestDrainDeliversWhatIsDue(t *testing.T) {
	f := newFixture(t, 0, 0)
	for i := range 3 {
		f.failRun(t, fmt.Sprintf("run-%d", i), fmt.Sprintf("2024-02-1%d", i), vocab.CategoryQuery, "x")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.notifier(t, Config{}).Run(ctx); err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
	if got := len(f.hook.delivered()); got != 3 {
		t.Fatalf("drain delivered %d notifications, want 3", got)
	}
}

// TestRestartDeliversWhatWasLeft: a notifier stopped while the webhook is
// down leaves its notifications due and unclaimed; the next start (another
// owner, no lease to wait for) delivers each once.
func TestRestartDeliversWhatWasLeft(t *testing.T) {
	eachStore(t, func(t *testing.T, open openStore) {
		f := newFixtureOn(t, open, 1000, http.StatusBadGateway)
		f.failRun(t, "run-a", "2024-02-20", vocab.CategoryQuery, "x")
		f.failRun(t, "run-b", "2024-02-21", vocab.CategoryQuery, "y")
		ctx, cancel := context.WithCancel(context.Background())
		first := f.notifier(t, Config{MaxAttempts: 2, Owner: "first"})
		done := make(chan error, 1)
		go func() { done <- first.Run(ctx) }()
		<-f.waits // the first poll is retrying run-a
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("first notifier returned %v", err)
		}
		if got := f.hook.delivered(); len(got) != 0 {
			t.Fatalf("delivered %v while the webhook was down", got)
		}
		f.hook.mu.Lock()
		f.hook.failures = 0 // the webhook is back
		f.hook.mu.Unlock()
		f.notifier(t, Config{Owner: "second"}).poll(context.Background())
		want := map[string]int{"p1/run-a/failed": 1, "p1/run-b/failed": 1}
		if got := f.hook.delivered(); !reflect.DeepEqual(got, want) {
			t.Fatalf("after the restart delivered %v, want %v", got, want)
		}
	})
}

// TestConcurrentNotifiersDeliverOnce: notifiers beside two loaders poll
// the same outbox at once; their claims split the runs.
func TestConcurrentNotifiersDeliverOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, open openStore) {
		f := newFixtureOn(t, open, 0, 0)
		for i := range 20 {
			f.failRun(t, fmt.Sprintf("run-%02d", i), "2024-02-20", vocab.CategoryQuery, "x")
		}
		a, b := f.notifier(t, Config{Batch: 3, Owner: "a"}), f.notifier(t, Config{Batch: 3, Owner: "b"})
		var wg sync.WaitGroup
		wg.Go(func() { a.poll(context.Background()) })
		wg.Go(func() { b.poll(context.Background()) })
		wg.Wait()
		got := f.hook.delivered()
		if len(got) != 20 {
			t.Fatalf("delivered %d distinct notifications, want 20", len(got))
		}
		for id, c := range got {
			if c != 1 {
				t.Errorf("%s delivered %d times", id, c)
			}
		}
	})
}

func TestPermanentErrorGivesUp(t *testing.T) {
	f := newFixture(t, 1, http.StatusNotFound)
	f.failRun(t, "run-a", "2024-02-20", vocab.CategoryQuery, "x")
	n := f.notifier(t, Config{})
	n.poll(context.Background())
	f.clock.Advance(n.cfg.Lease)
	n.poll(context.Background())
	if got := f.hook.callCount(); got != 1 {
		t.Fatalf("%d calls, want 1: a 404 is not retried", got)
	}
	if v := counter(t, n.failed, EventFailed); v != 1 {
		t.Errorf("failed{failed} = %v, want 1", v)
	}
	if got := f.due(t, "p1"); len(got) != 0 {
		t.Errorf("a refused notification stays due: %v", got)
	}
	err := n.Send(context.Background(), n.webhooks["p1"], Message{Event: EventFailed, Project: "p1"})
	if err != nil && strings.Contains(err.Error(), "/hook") {
		t.Errorf("error %v names the webhook URL", err)
	}
}

func TestTooOldIsDroppedUnsent(t *testing.T) {
	f := newFixture(t, 0, 0)
	f.failRun(t, "run-a", "2024-02-20", vocab.CategoryQuery, "x")
	f.clock.Advance(25 * time.Hour)
	n := f.notifier(t, Config{})
	n.poll(context.Background())
	if got := f.hook.callCount(); got != 0 {
		t.Fatalf("%d calls for a notification due 25h", got)
	}
	if v := counter(t, n.expired, EventFailed); v != 1 || len(f.due(t, "p1")) != 0 {
		t.Errorf("expired = %v, due %v; want 1 and none", v, f.due(t, "p1"))
	}
}

func TestRetriesAreBounded(t *testing.T) {
	f := newFixture(t, 100, http.StatusBadGateway)
	n := f.notifier(t, Config{MaxAttempts: 3})
	if err := n.Send(context.Background(), n.webhooks["p1"], Message{Event: EventFailed}); err == nil || f.hook.callCount() != 3 {
		t.Errorf("err %v after %d calls, want an error after 3", err, f.hook.callCount())
	}
}

func counter(tb testing.TB, v *prometheus.CounterVec, label string) float64 {
	tb.Helper()
	var m dto.Metric
	if err := v.WithLabelValues(label).Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
