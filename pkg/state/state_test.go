package state_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/pkg/state"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// backend is one Redis the suite runs against.
type backend struct {
	name string
	rdb  redis.UniversalClient
	// expire moves Redis's own clock forward; nil on a real server, where
	// waiting would mean sleeping.
	expire func(d time.Duration)
	// flush drops every key of the test (all of miniredis; the test's
	// prefix on the shared real server, which is never flushed whole).
	flush func(tb testing.TB)
}

// backends returns miniredis and, when reachable, the real Redis on
// localhost. Under CI=true an unreachable Redis fails the test.
func backends(tb testing.TB, prefix string) []backend {
	tb.Helper()
	mr := miniredis.RunT(tb)
	mc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { mc.Close() })
	out := []backend{{
		name:   "miniredis",
		rdb:    mc,
		expire: mr.FastForward,
		flush:  func(testing.TB) { mr.FlushAll() },
	}}

	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	if err := rc.Ping(context.Background()).Err(); err != nil {
		rc.Close()
		if os.Getenv("CI") != "" {
			tb.Fatalf("redis at 127.0.0.1:6379 unreachable under CI: %v", err)
		}
		tb.Logf("skipping real redis: 127.0.0.1:6379 unreachable: %v", err)
		return out
	}
	deletePrefix := func(tb testing.TB) {
		tb.Helper()
		ctx := context.Background()
		iter := rc.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			if err := rc.Del(ctx, iter.Val()).Err(); err != nil {
				tb.Fatalf("delete %s: %v", iter.Val(), err)
			}
		}
		if err := iter.Err(); err != nil {
			tb.Fatalf("scan %s*: %v", prefix, err)
		}
	}
	tb.Cleanup(func() { deletePrefix(tb); rc.Close() })
	return append(out, backend{name: "redis", rdb: rc, flush: deletePrefix})
}

func uniquePrefix(tb testing.TB) string {
	return fmt.Sprintf("sluicetest:%s:%d:", tb.Name(), time.Now().UnixNano())
}

// each runs f against every backend with a fresh prefix and clock.
func each(t *testing.T, f func(t *testing.T, b backend, s *state.State, c *clock)) {
	t.Helper()
	prefix := uniquePrefix(t)
	for _, b := range backends(t, prefix) {
		t.Run(b.name, func(t *testing.T) {
			c := &clock{now: time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)}
			s := state.New(b.rdb, state.Options{Prefix: prefix + b.name + ":", Clock: c.Now})
			f(t, b, s, c)
		})
	}
}

func TestAllowTrigger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	each(t, func(t *testing.T, b backend, s *state.State, c *clock) {
		const window = 2 * time.Hour
		ok, retry, err := s.AllowTrigger(ctx, "p1", "events", window)
		if err != nil || !ok || retry != 0 {
			t.Fatalf("first call: ok=%v retry=%s err=%v, want ok", ok, retry, err)
		}
		ok, retry, err = s.AllowTrigger(ctx, "p1", "events", window)
		if err != nil || ok {
			t.Fatalf("second call: ok=%v err=%v, want refused", ok, err)
		}
		if retry <= window-time.Minute || retry > window {
			t.Fatalf("second call: retryAfter=%s, want close to %s", retry, window)
		}
		for _, other := range []struct{ project, typ string }{{"p1", "metrics"}, {"p2", "events"}} {
			ok, _, err := s.AllowTrigger(ctx, other.project, other.typ, window)
			if err != nil || !ok {
				t.Fatalf("%s/%s: ok=%v err=%v, want its own window", other.project, other.typ, ok, err)
			}
		}
		if err := s.ResetTrigger(ctx, "p2", "events"); err != nil {
			t.Fatal(err)
		}
		if ok, _, _ := s.AllowTrigger(ctx, "p2", "events", window); !ok {
			t.Fatal("after ResetTrigger: want the window open again")
		}
		if _, _, err := s.AllowTrigger(ctx, "p1", "events", 0); err == nil {
			t.Fatal("zero window: want an error")
		}
		if b.expire == nil {
			return
		}
		b.expire(window - time.Minute)
		ok, retry, _ = s.AllowTrigger(ctx, "p1", "events", window)
		if ok || retry != time.Minute {
			t.Fatalf("inside window: ok=%v retry=%s, want refused with 1m left", ok, retry)
		}
		b.expire(time.Minute)
		ok, _, _ = s.AllowTrigger(ctx, "p1", "events", window)
		if !ok {
			t.Fatal("after the window: want ok")
		}
	})
}

func TestAllowTriggerConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	each(t, func(t *testing.T, _ backend, s *state.State, _ *clock) {
		const n = 20
		var accepted, refused atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ok, retry, err := s.AllowTrigger(ctx, "p", "metrics", time.Hour)
				switch {
				case err != nil:
					errs <- err
				case ok:
					accepted.Add(1)
				case retry > 0:
					refused.Add(1)
				default:
					errs <- fmt.Errorf("refused without a retryAfter")
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if accepted.Load() != 1 || refused.Load() != n-1 {
			t.Fatalf("accepted %d refused %d, want 1 and %d", accepted.Load(), refused.Load(), n-1)
		}
	})
}

func TestDayLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	day := state.DayKey{Project: "p", Ingestion: "events_daily", Date: "2024-02-28"}
	each(t, func(t *testing.T, b backend, s *state.State, c *clock) {
		holder, fence, err := s.DayHolder(ctx, day)
		if err != nil || holder != "" || fence != 0 {
			t.Fatalf("free day: holder=%q fence=%d err=%v", holder, fence, err)
		}
		f1, ok, err := s.AcquireDay(ctx, day, "run-1", time.Hour)
		if err != nil || !ok {
			t.Fatalf("acquire free day: ok=%v err=%v", ok, err)
		}
		if want := c.Now().UnixMicro(); f1 != want {
			t.Fatalf("first fence = %d, want the clock in µs %d", f1, want)
		}
		steps := []struct {
			name      string
			run       string
			wantOK    bool
			wantFence int64
		}{
			{"another run is refused", "run-2", false, 0},
			{"the holder renews with the same fence", "run-1", true, f1},
		}
		for _, st := range steps {
			f, ok, err := s.AcquireDay(ctx, day, st.run, time.Hour)
			if err != nil || ok != st.wantOK || f != st.wantFence {
				t.Fatalf("%s: fence=%d ok=%v err=%v, want %d %v", st.name, f, ok, err, st.wantFence, st.wantOK)
			}
		}
		if holder, fence, _ := s.DayHolder(ctx, day); holder != "run-1" || fence != f1 {
			t.Fatalf("holder = %q/%d, want run-1/%d", holder, fence, f1)
		}
		other := state.DayKey{Project: "p", Ingestion: "events_daily", Date: "2024-02-29"}
		if _, ok, _ := s.AcquireDay(ctx, other, "run-2", time.Hour); !ok {
			t.Fatal("another day of the same ingestion must be independent")
		}

		if err := s.ReleaseDay(ctx, day, "run-2"); err != nil {
			t.Fatal(err)
		}
		if holder, _, _ := s.DayHolder(ctx, day); holder != "run-1" {
			t.Fatalf("release by a non-holder freed the day: holder=%q", holder)
		}
		if err := s.ReleaseDay(ctx, day, "run-1"); err != nil {
			t.Fatal(err)
		}
		if holder, _, _ := s.DayHolder(ctx, day); holder != "" {
			t.Fatalf("after release holder=%q, want free", holder)
		}
		// Same clock reading: the fence still grows, by last issued + 1.
		f2, ok, err := s.AcquireDay(ctx, day, "run-3", time.Hour)
		if err != nil || !ok || f2 != f1+1 {
			t.Fatalf("reacquire at the same instant: fence=%d ok=%v err=%v, want %d", f2, ok, err, f1+1)
		}

		if b.expire == nil {
			return
		}
		// A dead holder's lease expires and the next fence beats it.
		b.expire(time.Hour)
		c.Add(time.Second)
		f3, ok, err := s.AcquireDay(ctx, day, "run-4", time.Hour)
		if err != nil || !ok || f3 <= f2 {
			t.Fatalf("after expiry: fence=%d ok=%v err=%v, want > %d", f3, ok, err, f2)
		}
	})
}

func TestAcquireDayConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	day := state.DayKey{Project: "p", Ingestion: "m", Date: "2024-01-01"}
	each(t, func(t *testing.T, _ backend, s *state.State, _ *clock) {
		const n = 20
		var won atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, ok, err := s.AcquireDay(ctx, day, fmt.Sprintf("run-%d", i), time.Hour)
				if err != nil {
					t.Error(err)
				}
				if ok {
					won.Add(1)
				}
			}()
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Fatalf("%d runs hold the day, want exactly 1", won.Load())
		}
	})
}

func TestFenceSurvivesFlush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	day := state.DayKey{Project: "p", Ingestion: "e", Date: "2024-01-01"}
	each(t, func(t *testing.T, b backend, s *state.State, c *clock) {
		var last int64
		for i := range 5 {
			run := fmt.Sprintf("run-%d", i)
			f, ok, err := s.AcquireDay(ctx, day, run, time.Hour)
			if err != nil || !ok {
				t.Fatalf("acquire %s: ok=%v err=%v", run, ok, err)
			}
			if f <= last {
				t.Fatalf("fence %d after %d: not increasing", f, last)
			}
			last = f
			if err := s.ReleaseDay(ctx, day, run); err != nil {
				t.Fatal(err)
			}
		}
		b.flush(t)
		c.Add(time.Millisecond)
		f, ok, err := s.AcquireDay(ctx, day, "after-flush", time.Hour)
		if err != nil || !ok {
			t.Fatalf("acquire after flush: ok=%v err=%v", ok, err)
		}
		if f <= last {
			t.Fatalf("fence after flush %d <= last before flush %d", f, last)
		}
	})
}

func TestFenceKeepsPrecision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	day := state.DayKey{Project: "p", Ingestion: "e", Date: "2199-12-31"}
	each(t, func(t *testing.T, _ backend, s *state.State, c *clock) {
		// 16-digit microsecond values must come back exact, odd last digit
		// included (a Lua number printed as %.14g would round it).
		c.now = time.Date(2199, 12, 31, 23, 59, 59, 123457000, time.UTC)
		want := c.now.UnixMicro()
		f, ok, err := s.AcquireDay(ctx, day, "r1", time.Minute)
		if err != nil || !ok || f != want {
			t.Fatalf("fence = %d ok=%v err=%v, want %d", f, ok, err, want)
		}
		if err := s.ReleaseDay(ctx, day, "r1"); err != nil {
			t.Fatal(err)
		}
		f, _, _ = s.AcquireDay(ctx, day, "r2", time.Minute)
		if f != want+1 {
			t.Fatalf("next fence = %d, want %d", f, want+1)
		}
	})
}

func TestPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d1 := state.DayKey{Project: "p", Ingestion: "events", Date: "2024-01-02"}
	d2 := state.DayKey{Project: "p/odd:name", Ingestion: "with space", Date: "2024-01-01"}
	each(t, func(t *testing.T, _ backend, s *state.State, c *clock) {
		if days, err := s.PendingDays(ctx); err != nil || len(days) != 0 {
			t.Fatalf("empty: days=%v err=%v", days, err)
		}
		// A free day is leased, not queued.
		claim, err := s.LeaseOrQueue(ctx, d1, "holder", []byte("h"), time.Hour)
		if err != nil || !claim.Leased || claim.Fence != c.Now().UnixMicro() {
			t.Fatalf("free day: %+v err=%v, want leased at the clock's fence", claim, err)
		}
		if _, _, err := s.AcquireDay(ctx, d2, "holder2", time.Hour); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			day             state.DayKey
			run, payload    string
			wantHolder      string
			wantReplacedRun string
			wantReplaced    string
		}{
			{d1, "old", "old-payload", "holder", "", ""},
			{d2, "other", "other-payload", "holder2", "", ""},
			{d1, "new", "new-payload", "holder", "old", "old-payload"},
			{d1, "holder", "ignored", "", "", ""}, // the holder itself renews
		}
		for _, st := range steps {
			claim, err := s.LeaseOrQueue(ctx, st.day, st.run, []byte(st.payload), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if st.run == "holder" {
				if !claim.Leased {
					t.Fatalf("holder asking again: %+v, want its lease renewed", claim)
				}
				continue
			}
			if claim.Leased || claim.Holder != st.wantHolder || claim.ReplacedRun != st.wantReplacedRun || string(claim.Replaced) != st.wantReplaced {
				t.Fatalf("queue %s on %v: %+v, want queued behind %s replacing %q/%q", st.run, st.day, claim, st.wantHolder, st.wantReplacedRun, st.wantReplaced)
			}
		}
		days, err := s.PendingDays(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(days) != 2 || !containsDay(days, d1) || !containsDay(days, d2) {
			t.Fatalf("pending days = %v, want %v and %v once each", days, d1, d2)
		}
		if run, ok, err := s.PendingRun(ctx, d1); err != nil || !ok || run != "new" {
			t.Fatalf("pending run of %v = %q %v %v, want new", d1, run, ok, err)
		}

		// While held, nothing is promoted.
		if p, err := s.PromotePending(ctx, d1, time.Hour); err != nil || !p.Busy || p.Started {
			t.Fatalf("promote a held day: %+v err=%v, want busy", p, err)
		}
		if err := s.ReleaseDay(ctx, d1, "holder"); err != nil {
			t.Fatal(err)
		}
		p, err := s.PromotePending(ctx, d1, time.Hour)
		if err != nil || !p.Started || p.RunID != "new" || string(p.Payload) != "new-payload" || p.Fence != claim.Fence+1 {
			t.Fatalf("promote a freed day: %+v err=%v, want new started at fence %d", p, err, claim.Fence+1)
		}
		if holder, fence, _ := s.DayHolder(ctx, d1); holder != "new" || fence != p.Fence {
			t.Fatalf("after promotion held by %q/%d, want new/%d", holder, fence, p.Fence)
		}
		if err := s.ReleaseDay(ctx, d1, "new"); err != nil {
			t.Fatal(err)
		}
		if p, err := s.PromotePending(ctx, d1, time.Hour); err != nil || p.Started || p.Busy {
			t.Fatalf("promote twice: %+v err=%v, want nothing pending", p, err)
		}
		days, _ = s.PendingDays(ctx)
		if len(days) != 1 || days[0] != d2 {
			t.Fatalf("after promotion: %v, want only %v", days, d2)
		}

		// A promoted request that could not start goes back, unless a newer
		// one was queued meanwhile.
		if ok, err := s.RestorePending(ctx, d1, "new", []byte("new-payload")); err != nil || !ok {
			t.Fatalf("restore onto an empty day: %v %v", ok, err)
		}
		if run, _, _ := s.PendingRun(ctx, d1); run != "new" {
			t.Fatalf("restored pending run %q, want new", run)
		}
		if ok, err := s.RestorePending(ctx, d2, "older", []byte("x")); err != nil || ok {
			t.Fatalf("restore over a newer pending request: %v %v, want refused", ok, err)
		}
		if run, _, _ := s.PendingRun(ctx, d2); run != "other" {
			t.Fatalf("pending run of %v = %q, want the newer other", d2, run)
		}
	})
}

func TestRenewDay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	day := state.DayKey{Project: "p", Ingestion: "e", Date: "2024-01-01"}
	each(t, func(t *testing.T, _ backend, s *state.State, _ *clock) {
		if ok, err := s.RenewDay(ctx, day, "run-1", time.Hour); err != nil || ok {
			t.Fatalf("renew a free day: %v %v, want refused", ok, err)
		}
		if holder, _, _ := s.DayHolder(ctx, day); holder != "" {
			t.Fatalf("renewing a free day took it for %q", holder)
		}
		if _, _, err := s.AcquireDay(ctx, day, "run-1", time.Minute); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.RenewDay(ctx, day, "run-2", time.Hour); err != nil || ok {
			t.Fatalf("renew by a non-holder: %v %v", ok, err)
		}
		if ok, err := s.RenewDay(ctx, day, "run-1", time.Hour); err != nil || !ok {
			t.Fatalf("renew by the holder: %v %v", ok, err)
		}
	})
}

// TestQueueConcurrent: of n requests queued at once on a busy day exactly
// one stays pending, and every other is reported replaced exactly once.
func TestQueueConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	day := state.DayKey{Project: "p", Ingestion: "e", Date: "2024-01-01"}
	each(t, func(t *testing.T, _ backend, s *state.State, _ *clock) {
		if _, _, err := s.AcquireDay(ctx, day, "holder", time.Hour); err != nil {
			t.Fatal(err)
		}
		const n = 20
		var mu sync.Mutex
		replaced := map[string]int{}
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				run := fmt.Sprintf("run-%d", i)
				c, err := s.LeaseOrQueue(ctx, day, run, []byte(run), time.Hour)
				if err != nil || c.Leased {
					t.Errorf("queue %s: %+v %v", run, c, err)
					return
				}
				if c.ReplacedRun != "" {
					mu.Lock()
					replaced[c.ReplacedRun]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		pending, ok, err := s.PendingRun(ctx, day)
		if err != nil || !ok {
			t.Fatalf("nothing pending: %v", err)
		}
		if len(replaced) != n-1 || replaced[pending] != 0 {
			t.Fatalf("replaced %v (pending %s), want the other %d once each", replaced, pending, n-1)
		}
		for run, k := range replaced {
			if k != 1 {
				t.Fatalf("%s replaced %d times", run, k)
			}
		}
	})
}

// TestPromoteConcurrent: of many promoters of one freed day exactly one
// starts its pending request.
func TestPromoteConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	day := state.DayKey{Project: "p", Ingestion: "e", Date: "2024-01-01"}
	each(t, func(t *testing.T, _ backend, s *state.State, _ *clock) {
		if _, _, err := s.AcquireDay(ctx, day, "holder", time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := s.LeaseOrQueue(ctx, day, "queued", []byte("x"), time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := s.ReleaseDay(ctx, day, "holder"); err != nil {
			t.Fatal(err)
		}
		var started atomic.Int32
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if p, err := s.PromotePending(ctx, day, time.Hour); err != nil {
					t.Error(err)
				} else if p.Started {
					started.Add(1)
				}
			}()
		}
		wg.Wait()
		if started.Load() != 1 {
			t.Fatalf("started %d times, want once", started.Load())
		}
	})
}

func containsDay(days []state.DayKey, d state.DayKey) bool {
	for _, x := range days {
		if x == d {
			return true
		}
	}
	return false
}

func TestOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	each(t, func(t *testing.T, b backend, s *state.State, _ *clock) {
		for i, want := range []bool{true, false, false} {
			first, err := s.Once(ctx, "notify:day-1", time.Hour)
			if err != nil || first != want {
				t.Fatalf("call %d: first=%v err=%v, want %v", i, first, err, want)
			}
		}
		if first, _ := s.Once(ctx, "notify:day-2", time.Hour); !first {
			t.Fatal("a different key must be first")
		}
		if b.expire == nil {
			return
		}
		b.expire(time.Hour)
		if first, _ := s.Once(ctx, "notify:day-1", time.Hour); !first {
			t.Fatal("after ttl: want first again")
		}
	})
}

func TestPing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	each(t, func(t *testing.T, _ backend, s *state.State, _ *clock) {
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
	})
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer dead.Close()
	if err := state.New(dead, state.Options{}).Ping(ctx); err == nil {
		t.Fatal("ping of an unreachable redis: want an error")
	}
}

func TestPrefixIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	a := state.New(rdb, state.Options{Prefix: "a:"})
	b := state.New(rdb, state.Options{Prefix: "b:"})
	if ok, _, _ := a.AllowTrigger(ctx, "p", "events", time.Hour); !ok {
		t.Fatal("a: want ok")
	}
	if ok, _, _ := b.AllowTrigger(ctx, "p", "events", time.Hour); !ok {
		t.Fatal("b shares a's window: prefixes must isolate")
	}
	for _, k := range mr.Keys() {
		if k[:2] != "a:" && k[:2] != "b:" {
			t.Fatalf("key %q outside the prefixes", k)
		}
	}
}

// TestLeaseFreedDayWithPending: a run that leases a freed day replaces the
// request still pending for it, unless that request is the run itself (a
// redelivery), which then holds the day and is no longer pending.
func TestLeaseFreedDayWithPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	day := state.DayKey{Project: "p", Ingestion: "e", Date: "2024-01-01"}
	tests := []struct {
		name, run    string
		wantReplaced string
	}{
		{"a newer run", "newer", "queued"},
		{"the queued run itself", "queued", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			each(t, func(t *testing.T, _ backend, s *state.State, _ *clock) {
				if _, _, err := s.AcquireDay(ctx, day, "holder", time.Hour); err != nil {
					t.Fatal(err)
				}
				if _, err := s.LeaseOrQueue(ctx, day, "queued", []byte("queued-payload"), time.Hour); err != nil {
					t.Fatal(err)
				}
				if err := s.ReleaseDay(ctx, day, "holder"); err != nil {
					t.Fatal(err)
				}
				c, err := s.LeaseOrQueue(ctx, day, tt.run, []byte("x"), time.Hour)
				if err != nil || !c.Leased || c.ReplacedRun != tt.wantReplaced {
					t.Fatalf("lease the freed day: %+v err=%v, want leased replacing %q", c, err, tt.wantReplaced)
				}
				if tt.wantReplaced != "" && string(c.Replaced) != "queued-payload" {
					t.Fatalf("replaced payload %q", c.Replaced)
				}
				if run, ok, _ := s.PendingRun(ctx, day); ok {
					t.Fatalf("%s still pending", run)
				}
				if days, _ := s.PendingDays(ctx); len(days) != 0 {
					t.Fatalf("pending days %v, want none", days)
				}
				if holder, _, _ := s.DayHolder(ctx, day); holder != tt.run {
					t.Fatalf("held by %q, want %s", holder, tt.run)
				}
			})
		})
	}
}
