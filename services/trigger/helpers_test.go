package trigger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/pkg/apikey"
	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/postgres"
)

// Keys of the two test projects. The tests assert they never reach the log.
const (
	keyAlpha = "sk_live_alpha_0123456789abcdef"
	keyBeta  = "sk_live_beta_fedcba9876543210"
)

var testNow = time.Date(2024, 3, 10, 12, 0, 0, 0, time.UTC)

func testConfig() *config.File {
	api := config.Schedule{Mode: config.ScheduleAPITriggered}
	daily := config.Schedule{Mode: config.ScheduleDaily}
	return &config.File{
		Pipeline: config.Pipeline{RateLimitWindow: 2 * time.Hour},
		Projects: []config.Project{
			{Name: "alpha", APIKeys: []config.APIKey{{SHA256: apikey.Hash(keyAlpha)}}, IDTypes: []string{"userID"}},
			{Name: "beta", APIKeys: []config.APIKey{{SHA256: apikey.Hash(keyBeta)}}, IDTypes: []string{"userID"}},
		},
		Ingestions: []config.Ingestion{
			{Name: "ev_api", Project: "alpha", Type: config.TypeEvents, Schedule: api},
			{Name: "ev_daily", Project: "alpha", Type: config.TypeEvents, Schedule: daily},
			{Name: "mt_api", Project: "alpha", Type: config.TypeMetrics, Schedule: api},
			{Name: "beta_ev_api", Project: "beta", Type: config.TypeEvents, Schedule: api},
		},
	}
}

// recorder is a Dispatcher that remembers every request.
type recorder struct {
	mu    sync.Mutex
	calls []dispatch.Request
	fail  error
}

func (d *recorder) Dispatch(_ context.Context, r dispatch.Request) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return "", d.fail
	}
	d.calls = append(d.calls, r)
	return fmt.Sprintf("run-%d-%s-%s", len(d.calls), r.Ingestion, r.Date), nil
}

func (d *recorder) Calls() []dispatch.Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]dispatch.Request(nil), d.calls...)
}

func (d *recorder) SetFail(err error) {
	d.mu.Lock()
	d.fail = err
	d.mu.Unlock()
}

// newState is the real Redis on localhost under a unique prefix; when it is
// unreachable outside CI, miniredis stands in (the same commands run).
func newState(tb testing.TB) *state.State {
	tb.Helper()
	prefix := fmt.Sprintf("sluicetest:trigger:%s:%d:", tb.Name(), time.Now().UnixNano())
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		rdb.Close()
		if os.Getenv("CI") != "" {
			tb.Fatalf("redis at 127.0.0.1:6379 unreachable under CI: %v", err)
		}
		tb.Logf("redis unreachable (%v): using miniredis", err)
		mr := miniredis.RunT(tb)
		rdb = redis.NewClient(&redis.Options{Addr: mr.Addr()})
		tb.Cleanup(func() { rdb.Close() })
		return state.New(rdb, state.Options{Prefix: prefix, Clock: func() time.Time { return testNow }})
	}
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	return state.New(rdb, state.Options{Prefix: prefix, Clock: func() time.Time { return testNow }})
}

// newStore is the PostgreSQL store in a schema of its own, dropped after.
func newStore(tb testing.TB) store.Store {
	tb.Helper()
	ctx := context.Background()
	dsn := "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	pool, err := pgxpool.New(ctx, dsn)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		if os.Getenv("CI") != "" {
			tb.Fatalf("postgres at 127.0.0.1:5432 unreachable under CI: %v", err)
		}
		tb.Skipf("postgres at 127.0.0.1:5432 unreachable: %v", err)
	}
	schema := fmt.Sprintf("trigger_test_%d", time.Now().UnixNano())
	st := postgres.New(pool, postgres.Options{Schema: schema, Now: func() time.Time { return testNow }})
	if err := st.Migrate(ctx); err != nil {
		pool.Close()
		tb.Fatalf("migrate store: %v", err)
	}
	tb.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
		pool.Close()
	})
	return st
}

type fixture struct {
	svc      *Service
	h        http.Handler
	dispatch *recorder
	logs     *syncBuffer
	store    store.Store
	reg      *prometheus.Registry
}

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	return newFixtureWith(tb, newStore(tb), newState(tb))
}

func newFixtureWith(tb testing.TB, st store.Store, s *state.State) *fixture {
	tb.Helper()
	f := &fixture{dispatch: &recorder{}, logs: &syncBuffer{}, store: st, reg: prometheus.NewRegistry()}
	svc, err := New(Config{}, Deps{
		Config:     testConfig(),
		Store:      st,
		State:      s,
		Dispatcher: f.dispatch,
		Logger:     slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:      func() time.Time { return testNow },
		Registry:   f.reg,
	})
	if err != nil {
		tb.Fatalf("new service: %v", err)
	}
	f.svc, f.h = svc, svc.Handler()
	return f
}

// header sets how a request carries its key.
type header func(*http.Request)

func statsigKey(k string) header {
	return func(r *http.Request) { r.Header.Set("statsig-api-key", k) }
}

func bearer(k string) header {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+k) }
}

func noKey(*http.Request) {}

func (f *fixture) do(tb testing.TB, method, path string, auth header, body string) *httptest.ResponseRecorder {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	req.Header.Set("Content-Type", "application/json")
	auth(req)
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, req)
	return w
}

// errorBody is what every 4xx answers.
type errorBody struct {
	Error  string `json:"error"`
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

func decodeJSON[T any](tb testing.TB, w *httptest.ResponseRecorder) T {
	tb.Helper()
	var v T
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("Content-Type = %q, want application/json (body %s)", ct, w.Body)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		tb.Fatalf("decode %s: %v", w.Body, err)
	}
	return v
}

var errDown = errors.New("kafka is down")
