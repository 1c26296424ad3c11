package notify

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	"github.com/sluicehq/sluice/schemas"
)

// hook is a webhook that fails its first failures calls with status.
type hook struct {
	mu       sync.Mutex
	calls    int
	failures int
	status   int
	got      chan SlackPayload
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.calls++
	fail := h.calls <= h.failures
	h.mu.Unlock()
	if fail {
		w.WriteHeader(h.status)
		return
	}
	var p SlackPayload
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil || r.Header.Get("Content-Type") != "application/json" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.got <- p
}

func (h *hook) callCount() int { h.mu.Lock(); defer h.mu.Unlock(); return h.calls }

type fixture struct {
	n     *Notifier
	store store.Store
	hook  *hook
	waits chan time.Duration
}

func newFixture(tb testing.TB, cfg Config, failures, status int) *fixture {
	tb.Helper()
	ctx := context.Background()
	h := &hook{failures: failures, status: status, got: make(chan SlackPayload, 10)}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	tb.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "" {
			tb.Skipf("Redis at 127.0.0.1:6379 is not reachable (%v)", err)
		}
		tb.Fatal(err)
	}
	prefix := "sluice-notify-test-" + runid.New()[:12] + ":"
	tb.Cleanup(func() {
		if keys, _ := rdb.Keys(context.Background(), prefix+"*").Result(); len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	st, err := duckstore.Open(ctx, filepath.Join(tb.TempDir(), "store.duckdb"), duckstore.Options{Logger: quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	settings := &config.File{Projects: []config.Project{{Name: "p1", WebhookURL: srv.URL + "/hook"}, {Name: "quiet"}}}
	f := &fixture{store: st, hook: h, waits: make(chan time.Duration, 100)}
	f.n, err = New(cfg, Deps{Settings: settings, Store: st, State: state.New(rdb, state.Options{Prefix: prefix}),
		Logger: quiet(), Registry: prometheus.NewRegistry(),
		After: func(d time.Duration) <-chan time.Time {
			f.waits <- d
			c := make(chan time.Time, 1)
			c <- time.Time{}
			return c
		}})
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

func (f *fixture) run(tb testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.n.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("notifier stopped with %v", err)
		}
	})
}

func (f *fixture) next(tb testing.TB) SlackPayload {
	tb.Helper()
	select {
	case p := <-f.hook.got:
		return p
	case <-time.After(10 * time.Second): // a deadline, not a pause
		tb.Fatal("no notification delivered")
		return SlackPayload{}
	}
}

func (f *fixture) failRun(tb testing.TB, id, category, msg string) store.RunEnd {
	tb.Helper()
	u := store.RunUpdate{RunID: id, Project: "p1", Ingestion: "events_daily", Type: "events", Date: "2024-02-20",
		Trigger: schemas.TriggerScheduled, Status: store.StatusFailed, ErrorCategory: category, ErrorMessage: msg, At: time.Now()}
	if err := f.store.UpdateRun(context.Background(), u); err != nil {
		tb.Fatal(err)
	}
	return store.RunEnd{RunID: id, Project: "p1", Ingestion: u.Ingestion, Type: u.Type, Date: u.Date, Trigger: u.Trigger}
}

// loadRun completes a run of rows events (0 = an empty day).
func (f *fixture) loadRun(tb testing.TB, id, trigger string, fence int64, rows int) store.RunEnd {
	tb.Helper()
	ctx := context.Background()
	end := store.RunEnd{RunID: id, ExtractID: id + "-x", Project: "p1", Ingestion: "events_daily", Type: "events",
		Date: "2024-02-21", Trigger: trigger, Fence: fence, Batches: 1, Rows: int64(rows), MaxRejectedShare: 1, At: time.Now()}
	b := &schemas.MappedBatch{RunID: id, ExtractID: end.ExtractID, Project: "p1", Ingestion: end.Ingestion, Date: end.Date,
		Trigger: trigger, Fence: fence, Kind: schemas.KindRows, Type: "events", RowCount: int64(rows)}
	for i := range rows {
		b.Events = append(b.Events, schemas.Event{Position: int64(i), EventName: "e", TimeMs: 1708473600000,
			UnitIDs: []schemas.UnitID{{IDType: "userID", Value: "u"}}, MetadataJSON: "{}"})
	}
	if err := f.store.UpdateRun(ctx, store.RunUpdate{RunID: id, Project: "p1", Ingestion: end.Ingestion, Type: "events", Date: end.Date,
		Trigger: trigger, Fence: fence, Status: store.StatusScheduled, Message: "warehouse count changed by 12%", At: time.Now()}); err != nil {
		tb.Fatal(err)
	}
	if err := f.store.StageBatches(ctx, []*schemas.MappedBatch{b}); err != nil {
		tb.Fatal(err)
	}
	if out, err := f.store.CompleteRun(ctx, end); err != nil || out != store.Swapped {
		tb.Fatalf("complete %s: %v %v", id, out, err)
	}
	return end
}

func TestFailedDayRetriedAndSentOnce(t *testing.T) {
	f := newFixture(t, Config{Workers: 1, Backoff: time.Second, MaxAttempts: 5}, 2, http.StatusServiceUnavailable)
	f.run(t)
	ctx := context.Background()
	end := f.failRun(t, "run-failed-1", "QUERY_ERROR", "relation \"events\" does not exist")
	f.n.OnDayDone(ctx, end, store.Incomplete)
	p := f.next(t)
	for _, want := range []string{"p1/events_daily 2024-02-20 failed", "QUERY_ERROR", `relation "events" does not exist`} {
		if !strings.Contains(p.Text, want) {
			t.Errorf("text %q lacks %q", p.Text, want)
		}
	}
	if len(p.Blocks) != 2 || p.Blocks[0].Type != "section" || p.Blocks[0].Text.Text != p.Text ||
		!strings.Contains(p.Blocks[1].Elements[0].Text, "run-failed-1") {
		t.Errorf("blocks %+v", p.Blocks)
	}
	if got := f.hook.callCount(); got != 3 {
		t.Errorf("%d webhook calls, want 3 (two 503s, then delivered)", got)
	}
	if w1, w2 := <-f.waits, <-f.waits; w1 != time.Second || w2 != 2*time.Second {
		t.Errorf("backoff waits %s, %s; want 1s, 2s", w1, w2)
	}

	// The same event again (a redelivered FAILED marker): nothing is sent.
	f.n.OnDayDone(ctx, end, store.Incomplete)
	// One worker handles in order: once the next event arrives, the
	// duplicate has been looked at.
	f.n.OnDayDone(ctx, f.failRun(t, "run-failed-2", "AUTHENTICATION_ERROR", "bad password"), store.Incomplete)
	if p := f.next(t); !strings.Contains(p.Text, "AUTHENTICATION_ERROR") {
		t.Fatalf("after the duplicate, got %q; want the second run's notification", p.Text)
	}
	if got := f.hook.callCount(); got != 4 {
		t.Errorf("%d webhook calls, want 4: the duplicate sent nothing", got)
	}
}

func TestEvents(t *testing.T) {
	f := newFixture(t, Config{Workers: 1}, 0, 0)
	f.run(t)
	ctx := context.Background()

	empty := f.loadRun(t, "run-empty", schemas.TriggerScheduled, 1, 0)
	f.n.OnDayDone(ctx, empty, store.Swapped)
	if p := f.next(t); !strings.Contains(p.Text, "2024-02-21 loaded with no data") {
		t.Errorf("empty day: %q", p.Text)
	}
	// An ordinary load is not news; a reload is. Same worker, in order.
	f.n.OnDayDone(ctx, empty, store.AlreadyDone)
	reload := f.loadRun(t, "run-reload", schemas.TriggerReload, 2, 3)
	f.n.OnDayDone(ctx, reload, store.Swapped)
	if p := f.next(t); !strings.Contains(p.Text, "reloaded: 3 rows loaded") || !strings.Contains(p.Text, "12%") {
		t.Errorf("reload: %q", p.Text)
	}
	normal := f.loadRun(t, "run-normal", schemas.TriggerScheduled, 3, 2)
	f.n.OnDayDone(ctx, normal, store.Swapped)
	f.n.OnDayDone(ctx, store.RunEnd{RunID: "r", Project: "quiet"}, store.Incomplete) // no webhook: ignored
	f.n.OnDayDone(ctx, f.failRun(t, "run-failed", "QUERY_ERROR", "x"), store.TooManyRejected)
	if p := f.next(t); !strings.Contains(p.Text, "failed") {
		t.Errorf("want the failure next (nothing for the ordinary load), got %q", p.Text)
	}
	if got := f.hook.callCount(); got != 3 {
		t.Errorf("%d webhook calls, want 3", got)
	}
}

func TestPermanentErrorNotRetried(t *testing.T) {
	f := newFixture(t, Config{Workers: 1}, 1, http.StatusNotFound)
	err := f.n.Send(context.Background(), f.n.webhooks["p1"], Message{Event: EventFailed, Project: "p1"})
	if err == nil || f.hook.callCount() != 1 || strings.Contains(err.Error(), "/hook") {
		t.Errorf("Send on a 404: err %v after %d calls; want one call and an error without the URL", err, f.hook.callCount())
	}
}

func TestRetriesAreBounded(t *testing.T) {
	f := newFixture(t, Config{Workers: 1, MaxAttempts: 3}, 100, http.StatusBadGateway)
	if err := f.n.Send(context.Background(), f.n.webhooks["p1"], Message{Event: EventFailed}); err == nil || f.hook.callCount() != 3 {
		t.Errorf("err %v after %d calls, want an error after 3", err, f.hook.callCount())
	}
}

func TestFullQueueDropsWithoutBlocking(t *testing.T) {
	f := newFixture(t, Config{QueueSize: 1}, 0, 0) // not running: nothing drains
	for i := range 3 {
		f.n.OnDayDone(context.Background(), store.RunEnd{RunID: string(rune('a' + i)), Project: "p1"}, store.Incomplete)
	}
	if v := counter(t, f.n.dropped, "p1"); v != 2 {
		t.Errorf("dropped %v, want 2", v)
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
