package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/kafka/kafkatest"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// rig is a dispatcher over kfake, the real Redis (a key prefix of its
// own) and a DuckDB store.
type rig struct {
	d        *Dispatcher
	kafka    kafka.Config
	client   *kgo.Client
	codecs   *schemas.Codecs
	settings *config.File
	store    store.Store
	state    *state.State
	rdb      *redis.Client
	prefix   string
}

func newRig(tb testing.TB, cfg Config) *rig {
	tb.Helper()
	ctx := context.Background()
	r := &rig{rdb: redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})}
	tb.Cleanup(func() { r.rdb.Close() })
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "" {
			tb.Skipf("Redis at 127.0.0.1:6379 is not reachable (%v)", err)
		}
		tb.Fatal(err)
	}
	r.prefix = "sluice-dispatch-test-" + runid.New()[:12] + ":"
	tb.Cleanup(func() {
		if keys, _ := r.rdb.Keys(context.Background(), r.prefix+"*").Result(); len(keys) > 0 {
			r.rdb.Del(context.Background(), keys...)
		}
	})
	r.state = state.New(r.rdb, state.Options{Prefix: r.prefix})
	r.kafka, r.client = kafkatest.Start(tb, kafka.Config{TopicPrefix: "t."})
	r.settings = demo.Config(demo.ConfigOptions{APIKey: "k", DuckDBPath: filepath.Join(tb.TempDir(), "unused.duckdb"), Kafka: r.kafka.Brokers})
	st, err := duckstore.Open(ctx, filepath.Join(tb.TempDir(), "store.duckdb"), duckstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	r.store = st
	if r.codecs, err = schemas.NewCodecs(); err != nil {
		tb.Fatal(err)
	}
	r.d = r.dispatcher(tb, cfg, r.client)
	return r
}

// dispatcher is another dispatcher on the rig's Redis and store, producing
// with cl (nil: none).
func (r *rig) dispatcher(tb testing.TB, cfg Config, cl *kgo.Client) *Dispatcher {
	tb.Helper()
	d, err := New(cfg, Deps{Client: cl, Kafka: r.kafka, Codecs: r.codecs, Settings: r.settings, Store: r.store, State: r.state,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// brokenDispatcher publishes through a closed client: every publish fails.
func (r *rig) brokenDispatcher(tb testing.TB) *Dispatcher {
	tb.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka.Brokers...))
	if err != nil {
		tb.Fatal(err)
	}
	cl.Close()
	return r.dispatcher(tb, Config{LeaseTTL: time.Hour}, cl)
}

// published reads every request on ingest-requests so far, in order.
func (r *rig) published(tb testing.TB) []schemas.IngestRequest {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := r.kafka.Topic(schemas.TopicIngestRequests)
	ends, err := kadm.NewClient(r.client).ListEndOffsets(ctx, topic)
	if err != nil {
		tb.Fatal(err)
	}
	var want int64
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka.Brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	var out []schemas.IngestRequest
	for int64(len(out)) < want {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			tb.Fatalf("read %d of %d ingest requests: %v", len(out), want, ctx.Err())
		}
		f.EachRecord(func(rec *kgo.Record) {
			var req schemas.IngestRequest
			if err := r.codecs.Decode(r.codecs.IngestRequest, rec.Value, &req); err != nil {
				tb.Fatal(err)
			}
			if want := string(kafka.DayKey(req.Project, req.Ingestion, req.Date)); string(rec.Key) != want {
				tb.Errorf("record key %q, want the day's %q", rec.Key, want)
			}
			out = append(out, req)
		})
	}
	return out
}

func (r *rig) run(tb testing.TB, id string) store.Run {
	tb.Helper()
	run, err := r.store.Run(context.Background(), demo.ProjectName, id)
	if err != nil {
		tb.Fatalf("run %s: %v", id, err)
	}
	return run
}

func (r *rig) holder(tb testing.TB, day Day) (string, int64) {
	tb.Helper()
	h, f, err := r.d.Holder(context.Background(), day)
	if err != nil {
		tb.Fatal(err)
	}
	return h, f
}

func (r *rig) pending(tb testing.TB, day Day) string {
	tb.Helper()
	run, _, err := r.d.Pending(context.Background(), day)
	if err != nil {
		tb.Fatal(err)
	}
	return run
}

// leaseTTL is what is left of the day's lease.
func (r *rig) leaseTTL(tb testing.TB) time.Duration {
	tb.Helper()
	keys, err := r.rdb.Keys(context.Background(), r.prefix+"lease:*").Result()
	if err != nil || len(keys) != 1 {
		tb.Fatalf("lease keys %v (%v), want one", keys, err)
	}
	ttl, err := r.rdb.PTTL(context.Background(), keys[0]).Result()
	if err != nil {
		tb.Fatal(err)
	}
	return ttl
}

func ids(reqs []schemas.IngestRequest) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.RunID
	}
	return out
}

var testDay = Day{Project: demo.ProjectName, Ingestion: demo.WebEventsAPI, Date: "2024-06-03"}

func request(reason string) Request {
	return Request{Project: testDay.Project, Ingestion: testDay.Ingestion, Date: testDay.Date, Trigger: vocab.TriggerAPI, Reason: reason}
}

// TestDispatchFreeDay: a free day is leased (for LeaseTTL once published),
// recorded as scheduled under the lease's fence and published once.
func TestDispatchFreeDay(t *testing.T) {
	r := newRig(t, Config{LeaseTTL: time.Hour})
	id, err := r.d.Dispatch(t.Context(), request("first"))
	if err != nil {
		t.Fatal(err)
	}
	holder, fence := r.holder(t, testDay)
	if holder != id || fence <= 0 {
		t.Fatalf("day held by %q fence %d, want %s with a fence", holder, fence, id)
	}
	if ttl := r.leaseTTL(t); ttl <= dispatchLease {
		t.Errorf("lease of a published run has %s left, want it extended past the dispatch lease %s", ttl, dispatchLease)
	}
	run := r.run(t, id)
	if run.Status != vocab.StatusScheduled || run.Fence != fence || run.Trigger != vocab.TriggerAPI || run.Type != config.TypeEvents {
		t.Errorf("run %+v: want scheduled, fence %d, trigger api, type events", run, fence)
	}
	got := r.published(t)
	if len(got) != 1 || got[0].RunID != id || got[0].Fence != fence || got[0].Reason != "first" || got[0].Date != testDay.Date {
		t.Fatalf("published %+v, want the run once with its fence", got)
	}
	if _, err := r.d.Dispatch(t.Context(), Request{Project: demo.ProjectName, Ingestion: "nope", Date: testDay.Date}); err == nil {
		t.Error("an unknown ingestion was dispatched")
	}
}

// TestQueueSupersedeRelease: requests for a busy day are queued once (a
// newer one supersedes the older, which the store shows SUPERSEDED), and
// when the day is released only the newest starts, under a higher fence.
func TestQueueSupersedeRelease(t *testing.T) {
	r := newRig(t, Config{LeaseTTL: time.Hour})
	ctx := t.Context()
	first, err := r.d.Dispatch(ctx, request("first"))
	if err != nil {
		t.Fatal(err)
	}
	_, firstFence := r.holder(t, testDay)

	second, err := r.d.Dispatch(ctx, request("second"))
	if err != nil {
		t.Fatal(err)
	}
	if run := r.run(t, second); run.Status != vocab.StatusScheduled || !strings.Contains(run.Message, "queued behind run "+first) {
		t.Errorf("queued run %+v: want scheduled, queued behind %s", run, first)
	}
	if p := r.pending(t, testDay); p != second {
		t.Errorf("pending %q, want %s", p, second)
	}
	if got := ids(r.published(t)); len(got) != 1 || got[0] != first {
		t.Fatalf("published %v, want only the running run %s", got, first)
	}

	third, err := r.d.Dispatch(ctx, request("third"))
	if err != nil {
		t.Fatal(err)
	}
	if run := r.run(t, second); run.Status != vocab.StatusSuperseded || !strings.Contains(run.Message, third) {
		t.Errorf("replaced run %+v: want SUPERSEDED by %s", run, third)
	}
	if p := r.pending(t, testDay); p != third {
		t.Errorf("pending %q, want %s", p, third)
	}
	if days, _ := r.state.PendingDays(ctx); len(days) != 1 || days[0] != testDay {
		t.Errorf("pending days %v, want just %v", days, testDay)
	}

	// While the first run holds the day nothing starts; a non-holder's
	// release changes nothing.
	if err := r.d.StartPending(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Release(ctx, testDay, second); err != nil {
		t.Fatal(err)
	}
	if h, _ := r.holder(t, testDay); h != first {
		t.Fatalf("release by a non-holder: day held by %q, want %s", h, first)
	}
	if err := r.d.StartPending(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.published(t); len(got) != 1 {
		t.Fatalf("started while the day was held: %v", ids(got))
	}

	if err := r.d.Release(ctx, testDay, first); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a second promotion finds nothing left
		if err := r.d.StartPending(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := r.published(t)
	if len(got) != 2 || got[1].RunID != third || got[1].Reason != "third" || got[1].Fence <= firstFence {
		t.Fatalf("published %+v: want [%s %s], the newest with a fence above %d", got, first, third, firstFence)
	}
	if h, f := r.holder(t, testDay); h != third || f != got[1].Fence {
		t.Errorf("day held by %q/%d, want %s/%d", h, f, third, got[1].Fence)
	}
	if ttl := r.leaseTTL(t); ttl <= dispatchLease {
		t.Errorf("promoted run's lease has %s left, want it extended past %s", ttl, dispatchLease)
	}
	// The store keeps the queued run's first SCHEDULED entry (an update of
	// the same rank is ignored); the extractor's STARTED carries the fence.
	if run := r.run(t, third); run.Status != vocab.StatusScheduled {
		t.Errorf("promoted run %+v: want scheduled", run)
	}
	if p := r.pending(t, testDay); p != "" {
		t.Errorf("still pending: %s", p)
	}
	if days, _ := r.state.PendingDays(ctx); len(days) != 0 {
		t.Errorf("pending days after promotion: %v", days)
	}
}

// TestPromoteWhenTakenMeanwhile: a day another run took between its
// release and the planner's tick is not started over. A holder that
// leased it directly leaves the pending request queued; a newer request
// that took the free day supersedes the older one still waiting (it
// loads the same day later, so the older would only load it again), and
// a redelivered outside request that was the pending one takes the day
// as itself: it is not started a second time.
func TestPromoteWhenTakenMeanwhile(t *testing.T) {
	tests := []struct {
		name string
		// take takes the freed day; it returns the new holder.
		take func(t *testing.T, r *rig, queued string) string
		// wantPending is whether the queued request is still pending;
		// wantStatus its status in the store.
		wantPending bool
		wantStatus  vocab.Status
	}{
		{"a holder leased it", func(t *testing.T, r *rig, _ string) string {
			if _, ok, err := r.state.AcquireDay(t.Context(), testDay, "other-holder", time.Hour); err != nil || !ok {
				t.Fatalf("take the freed day: %v %v", ok, err)
			}
			return "other-holder"
		}, true, vocab.StatusScheduled},
		{"a newer outside request", func(t *testing.T, r *rig, _ string) string {
			other := schemas.IngestRequest{RunID: "req-outside", Project: testDay.Project, Ingestion: testDay.Ingestion, Date: testDay.Date,
				Trigger: string(vocab.TriggerRequest)}
			if leased, err := r.d.ClaimOutside(t.Context(), &other); err != nil || !leased {
				t.Fatalf("claim the freed day: %v %v", leased, err)
			}
			return other.RunID
		}, false, vocab.StatusSuperseded},
		{"the queued outside request redelivered", func(t *testing.T, r *rig, queued string) string {
			again := schemas.IngestRequest{RunID: queued, Project: testDay.Project, Ingestion: testDay.Ingestion, Date: testDay.Date,
				Trigger: string(vocab.TriggerRequest)}
			if leased, err := r.d.ClaimOutside(t.Context(), &again); err != nil || !leased {
				t.Fatalf("redelivered queued request on the freed day: %v %v", leased, err)
			}
			return queued
		}, false, vocab.StatusScheduled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, Config{LeaseTTL: time.Hour})
			ctx := t.Context()
			first, err := r.d.Dispatch(ctx, request("first"))
			if err != nil {
				t.Fatal(err)
			}
			queued := &schemas.IngestRequest{RunID: "req-queued", Project: testDay.Project, Ingestion: testDay.Ingestion, Date: testDay.Date,
				Trigger: string(vocab.TriggerRequest)}
			if leased, err := r.d.ClaimOutside(ctx, queued); err != nil || leased {
				t.Fatalf("queue behind %s: leased=%v err=%v", first, leased, err)
			}
			if err := r.d.Release(ctx, testDay, first); err != nil {
				t.Fatal(err)
			}
			holder := tt.take(t, r, queued.RunID)
			if err := r.d.StartPending(ctx); err != nil {
				t.Fatal(err)
			}
			if got := ids(r.published(t)); len(got) != 1 {
				t.Fatalf("published %v, want only %s: the day is taken", got, first)
			}
			if h, _ := r.holder(t, testDay); h != holder {
				t.Errorf("day held by %q, want %s", h, holder)
			}
			if p := r.pending(t, testDay); (p == queued.RunID) != tt.wantPending {
				t.Errorf("pending %q, want %s pending: %v", p, queued.RunID, tt.wantPending)
			}
			if s := r.run(t, queued.RunID).Status; s != tt.wantStatus {
				t.Errorf("queued run is %s, want %s", s, tt.wantStatus)
			}
			// Once the holder is done, only a request still pending starts.
			if err := r.d.Release(ctx, testDay, holder); err != nil {
				t.Fatal(err)
			}
			if err := r.d.StartPending(ctx); err != nil {
				t.Fatal(err)
			}
			want := 1
			if tt.wantPending {
				want = 2
			}
			if got := ids(r.published(t)); len(got) != want {
				t.Fatalf("published %v after the holder finished, want %d", got, want)
			}
		})
	}
}

// TestPublishFailure: a run that cannot be published gives its day back;
// Dispatch returns the error, and a promoted request goes back to its day.
func TestPublishFailure(t *testing.T) {
	r := newRig(t, Config{LeaseTTL: time.Hour})
	ctx := t.Context()
	broken := r.brokenDispatcher(t)

	if _, err := broken.Dispatch(ctx, request("lost?")); err == nil {
		t.Fatal("dispatch through a closed client succeeded")
	}
	if h, _ := r.holder(t, testDay); h != "" {
		t.Fatalf("day held by %q after a failed publish, want free", h)
	}

	first, err := r.d.Dispatch(ctx, request("first"))
	if err != nil {
		t.Fatal(err)
	}
	queued, err := r.d.Dispatch(ctx, request("queued"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.d.Release(ctx, testDay, first); err != nil {
		t.Fatal(err)
	}
	if err := broken.StartPending(ctx); err == nil {
		t.Fatal("promotion through a closed client succeeded")
	}
	if h, _ := r.holder(t, testDay); h != "" {
		t.Fatalf("day held by %q after a failed promotion, want free", h)
	}
	if p := r.pending(t, testDay); p != queued {
		t.Fatalf("pending %q after a failed promotion, want %s back", p, queued)
	}
	if err := r.d.StartPending(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids(r.published(t)); len(got) != 2 || got[1] != queued {
		t.Fatalf("published %v, want [%s %s]", got, first, queued)
	}

	noProducer := r.dispatcher(t, Config{}, nil)
	if _, err := noProducer.Dispatch(ctx, request("x")); !errors.Is(err, ErrNoProducer) {
		t.Errorf("dispatch without a client: %v, want ErrNoProducer", err)
	}
	if err := noProducer.StartPending(ctx); !errors.Is(err, ErrNoProducer) {
		t.Errorf("promote without a client: %v, want ErrNoProducer", err)
	}
}

// TestClaimOutside: an outside request leases a free day for LeaseTTL
// without being published, queues behind a busy one, and its redelivery
// does not supersede itself.
func TestClaimOutside(t *testing.T) {
	r := newRig(t, Config{LeaseTTL: time.Hour})
	ctx := t.Context()
	outside := r.dispatcher(t, Config{LeaseTTL: time.Hour}, nil) // the extractor's: no client
	req := func(id string) *schemas.IngestRequest {
		return &schemas.IngestRequest{RequestID: id, RunID: "req-" + id, Project: testDay.Project, Ingestion: testDay.Ingestion,
			Date: testDay.Date, Trigger: string(vocab.TriggerRequest), Reason: "orchestrator"}
	}

	a := req("a")
	leased, err := outside.ClaimOutside(ctx, a)
	if err != nil || !leased {
		t.Fatalf("claim a free day: leased=%v err=%v", leased, err)
	}
	if h, f := r.holder(t, testDay); h != a.RunID || f != a.Fence || f <= 0 {
		t.Fatalf("day held by %q/%d, want %s under the request's fence %d", h, f, a.RunID, a.Fence)
	}
	if ttl := r.leaseTTL(t); ttl <= dispatchLease {
		t.Errorf("outside lease has %s left, want LeaseTTL", ttl)
	}
	if run := r.run(t, a.RunID); run.Status != vocab.StatusScheduled || run.Fence != a.Fence || run.Trigger != vocab.TriggerRequest {
		t.Errorf("outside run %+v", run)
	}
	// Redelivered while it runs: the same run, still leased.
	again := req("a")
	if leased, err := outside.ClaimOutside(ctx, again); err != nil || !leased || again.Fence != a.Fence {
		t.Fatalf("redelivered holder: leased=%v fence %d err=%v, want leased under %d", leased, again.Fence, err, a.Fence)
	}

	b := req("b")
	if leased, err := outside.ClaimOutside(ctx, b); err != nil || leased {
		t.Fatalf("claim a busy day: leased=%v err=%v, want queued", leased, err)
	}
	if p := r.pending(t, testDay); p != b.RunID {
		t.Fatalf("pending %q, want %s", p, b.RunID)
	}
	if leased, err := outside.ClaimOutside(ctx, req("b")); err != nil || leased {
		t.Fatalf("redelivered queued request: leased=%v err=%v", leased, err)
	}
	if run := r.run(t, b.RunID); run.Status != vocab.StatusScheduled || !strings.Contains(run.Message, "queued behind run "+a.RunID) {
		t.Errorf("redelivered queued run %+v: want still scheduled, not superseded by itself", run)
	}
	if got := r.published(t); len(got) != 0 {
		t.Errorf("outside claims published %v", ids(got))
	}

	// The planner's dispatcher starts it once the extractor's run ends.
	if err := outside.Release(ctx, testDay, a.RunID); err != nil {
		t.Fatal(err)
	}
	if err := r.d.StartPending(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.published(t); len(got) != 1 || got[0].RunID != b.RunID || got[0].Fence <= a.Fence || got[0].Trigger != string(vocab.TriggerRequest) {
		t.Fatalf("published %+v, want %s under a fence above %d", got, b.RunID, a.Fence)
	}
}

// TestClaimOutsideRetriesRedis: while Redis is unreachable an outside
// claim retries with backoff, and gives up only when stopped.
func TestClaimOutsideRetriesRedis(t *testing.T) {
	r := newRig(t, Config{LeaseTTL: time.Hour})
	var dials atomic.Int32
	const failures = 3
	flaky := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) <= failures {
				return nil, errors.New("injected: redis unreachable")
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}})
	t.Cleanup(func() { flaky.Close() })
	d, err := New(Config{LeaseTTL: time.Hour, RetryBackoff: time.Millisecond}, Deps{Codecs: r.codecs, Settings: r.settings, Store: r.store,
		State: state.New(flaky, state.Options{Prefix: r.prefix}), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	req := &schemas.IngestRequest{RunID: "req-flaky", Project: testDay.Project, Ingestion: testDay.Ingestion, Date: testDay.Date,
		Trigger: string(vocab.TriggerRequest)}
	if leased, err := d.ClaimOutside(t.Context(), req); err != nil || !leased {
		t.Fatalf("claim through a flaky Redis: leased=%v err=%v", leased, err)
	}
	if n := dials.Load(); n <= failures {
		t.Fatalf("%d dials: the claim never retried past the failures", n)
	}
	if h, _ := r.holder(t, testDay); h != req.RunID {
		t.Fatalf("day held by %q, want %s", h, req.RunID)
	}

	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", MaxRetries: -1,
		Dialer: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("injected: redis down")
		}})
	t.Cleanup(func() { down.Close() })
	d, err = New(Config{RetryBackoff: time.Millisecond}, Deps{Codecs: r.codecs, Settings: r.settings, Store: r.store,
		State: state.New(down, state.Options{Prefix: r.prefix}), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		leased, err := d.ClaimOutside(ctx, &schemas.IngestRequest{RunID: "req-down", Project: testDay.Project,
			Ingestion: testDay.Ingestion, Date: "2024-06-04"})
		if leased {
			err = errors.New("leased through a Redis that is down")
		}
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped claim: %v, want context.Canceled", err)
	}
}

// TestConcurrentQueue: of n requests queued at once on a busy day exactly
// one stays pending, and the store shows every other SUPERSEDED.
func TestConcurrentQueue(t *testing.T) {
	r := newRig(t, Config{LeaseTTL: time.Hour})
	ctx := t.Context()
	first, err := r.d.Dispatch(ctx, request("first"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 12
	runs := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := r.d.Dispatch(ctx, request(fmt.Sprintf("queued %d", i)))
			if err != nil {
				t.Error(err)
			}
			runs[i] = id
		}()
	}
	wg.Wait()
	pending := r.pending(t, testDay)
	var superseded, scheduled int
	for _, id := range runs {
		switch s := r.run(t, id).Status; {
		case id == pending && s == vocab.StatusScheduled:
			scheduled++
		case id != pending && s == vocab.StatusSuperseded:
			superseded++
		default:
			t.Errorf("run %s is %s (pending %s)", id, s, pending)
		}
	}
	if scheduled != 1 || superseded != n-1 {
		t.Fatalf("%d scheduled, %d superseded; want 1 and %d", scheduled, superseded, n-1)
	}
	if got := ids(r.published(t)); len(got) != 1 || got[0] != first {
		t.Fatalf("published %v, want only %s", got, first)
	}
}

// TestLeaseExpiryAndFencing: a holder that died stops blocking its day once
// its lease expires, and its late END cannot overwrite the newer run.
func TestLeaseExpiryAndFencing(t *testing.T) {
	r := newRig(t, Config{LeaseTTL: time.Hour})
	ctx := t.Context()
	day := Day{Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: "2024-06-03"}

	// The old run's dispatcher leases for a millisecond: its holder "dies".
	short := r.dispatcher(t, Config{LeaseTTL: time.Millisecond}, r.client)
	req := Request{Project: day.Project, Ingestion: day.Ingestion, Date: day.Date, Trigger: vocab.TriggerBackfill}
	old, err := short.Dispatch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	oldFence := r.run(t, old).Fence
	deadline := time.Now().Add(5 * time.Second)
	for h, _ := r.holder(t, day); h != ""; h, _ = r.holder(t, day) {
		if time.Now().After(deadline) {
			t.Fatalf("lease of %s never expired (held by %s)", day, h)
		}
		time.Sleep(time.Millisecond) // waiting on Redis's own expiry
	}
	req.Trigger = vocab.TriggerReload
	newer, err := r.d.Dispatch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	newFence := r.run(t, newer).Fence
	if newFence <= oldFence {
		t.Fatalf("new fence %d not above the dead holder's %d", newFence, oldFence)
	}
	if got := ids(r.published(t)); len(got) != 2 || got[1] != newer {
		t.Fatalf("published %v, want the dead holder's and the new run", got)
	}

	// The new run loads; then the old holder's END arrives late.
	complete := func(runID string, fence int64, names ...string) store.Outcome {
		t.Helper()
		b := &schemas.MappedBatch{RunID: runID, ExtractID: runID + "-x", Project: day.Project, Ingestion: day.Ingestion,
			Date: day.Date, Fence: fence, Kind: schemas.KindRows, Type: config.TypeEvents, RowCount: int64(len(names))}
		for i, n := range names {
			b.Events = append(b.Events, schemas.Event{Position: int64(i), EventName: n, TimeMs: 1717372800000,
				UnitIDs: []schemas.UnitID{{IDType: "userID", Value: "u1"}}, MetadataJSON: "{}"})
		}
		if err := r.store.StageBatches(ctx, []*schemas.MappedBatch{b}); err != nil {
			t.Fatal(err)
		}
		out, err := r.store.CompleteRun(ctx, store.RunEnd{RunID: runID, ExtractID: runID + "-x", Project: day.Project,
			Ingestion: day.Ingestion, Type: config.TypeEvents, Date: day.Date, Fence: fence, Batches: 1,
			Rows: int64(len(names)), MaxRejectedShare: 1, At: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if out := complete(newer, newFence, "new_a", "new_b"); out != store.Swapped {
		t.Fatalf("new run: outcome %v, want Swapped", out)
	}
	if out := complete(old, oldFence, "stale_a", "stale_b", "stale_c"); out != store.Stale {
		t.Fatalf("late END of the dead holder: outcome %v, want Stale", out)
	}
	evs, err := r.store.VisibleEvents(ctx, day.Project, day.Ingestion, day.Date)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].EventName != "new_a" || evs[1].EventName != "new_b" {
		t.Errorf("visible events %+v, want the new run's two", evs)
	}
	if run := r.run(t, old); run.Status != vocab.StatusSuperseded {
		t.Errorf("dead holder's run is %s, want %s", run.Status, vocab.StatusSuperseded)
	}
}
