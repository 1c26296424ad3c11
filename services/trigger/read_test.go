package trigger

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// seedRuns records one scheduled run per (project, ingestion, date).
func seedRuns(tb testing.TB, st store.Store, runs []store.RunUpdate) {
	tb.Helper()
	for _, u := range runs {
		if u.Status == "" {
			u.Status = vocab.StatusScheduled
		}
		if u.At.IsZero() {
			u.At = testNow
		}
		if err := st.UpdateRun(context.Background(), u); err != nil {
			tb.Fatalf("seed run %s: %v", u.RunID, err)
		}
	}
}

func TestReadRoutesStayInTheirProject(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	seedRuns(t, f.store, []store.RunUpdate{
		{RunID: "a-1", Project: "alpha", Ingestion: "ev_api", Type: "events", Date: "2024-03-08", Trigger: vocab.TriggerAPI},
		{RunID: "a-2", Project: "alpha", Ingestion: "ev_daily", Type: "events", Date: "2024-03-09", Trigger: vocab.TriggerScheduled},
		{RunID: "b-1", Project: "beta", Ingestion: "beta_ev_api", Type: "events", Date: "2024-03-08", Trigger: vocab.TriggerAPI},
	})

	type runsBody struct {
		Data []store.Run `json:"data"`
	}
	type daysBody struct {
		Data []store.Day `json:"data"`
	}
	runIDs := func(rs []store.Run) string {
		var ids []string
		for _, r := range rs {
			ids = append(ids, r.RunID)
		}
		return strings.Join(ids, ",")
	}
	sources := func(ds []store.Day) string {
		var s []string
		for _, d := range ds {
			s = append(s, d.Ingestion+"@"+d.Date)
		}
		return strings.Join(s, ",")
	}

	listTests := []struct {
		name    string
		key     string
		path    string
		wantIDs string // sorted newest first; equal timestamps make order store-defined, so one run per case where it matters
	}{
		{"alpha sees only its runs of one source", keyAlpha, "/v1/ingestions/runs?source=ev_api", "a-1"},
		{"alpha filters by day", keyAlpha, "/v1/ingestions/runs?ds=2024-03-09", "a-2"},
		{"beta sees only its runs", keyBeta, "/v1/ingestions/runs", "b-1"},
		{"beta asking for alpha's day sees nothing of alpha", keyBeta, "/v1/ingestions/runs?ds=2024-03-09", ""},
	}
	for _, tt := range listTests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.do(t, "GET", tt.path, statsigKey(tt.key), "")
			if w.Code != http.StatusOK {
				t.Fatalf("code %d: %s", w.Code, w.Body)
			}
			if got := runIDs(decodeJSON[runsBody](t, w).Data); got != tt.wantIDs {
				t.Fatalf("runs %q, want %q", got, tt.wantIDs)
			}
		})
	}

	t.Run("alpha lists both its runs", func(t *testing.T) {
		rs := decodeJSON[runsBody](t, f.do(t, "GET", "/v1/ingestions/runs?limit=10", statsigKey(keyAlpha), "")).Data
		if len(rs) != 2 {
			t.Fatalf("runs %q, want a-1 and a-2", runIDs(rs))
		}
		for _, r := range rs {
			if r.Project != "alpha" {
				t.Fatalf("alpha's key sees run %+v", r)
			}
		}
	})

	oneTests := []struct {
		name     string
		key      string
		id       string
		wantCode int
	}{
		{"own run", keyAlpha, "a-1", 200},
		{"another project's run", keyBeta, "a-1", 404},
		{"no such run", keyAlpha, "zzz", 404},
		{"no key", "", "a-1", 401},
	}
	for _, tt := range oneTests {
		t.Run(tt.name, func(t *testing.T) {
			auth := noKey
			if tt.key != "" {
				auth = statsigKey(tt.key)
			}
			w := f.do(t, "GET", "/v1/ingestions/runs/"+tt.id, auth, "")
			if w.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", w.Code, tt.wantCode, w.Body)
			}
			if tt.wantCode == 200 {
				got := decodeJSON[struct {
					Data store.Run `json:"data"`
				}](t, w).Data
				if got.RunID != tt.id || got.Project != "alpha" || got.Ingestion != "ev_api" || got.Trigger != vocab.TriggerAPI {
					t.Fatalf("run %+v, want a-1 of alpha/ev_api", got)
				}
			} else if strings.Contains(w.Body.String(), "ev_api") {
				t.Fatalf("a refused read leaks the run: %s", w.Body)
			}
		})
	}

	statusTests := []struct {
		name      string
		key       string
		query     string
		wantCode  int
		wantDays  string
		wantField string
	}{
		{"alpha, one source", keyAlpha, "?source=ev_api", 200, "ev_api@2024-03-08", ""},
		{"alpha, one day", keyAlpha, "?start_date=2024-03-09&end_date=2024-03-09", 200, "ev_daily@2024-03-09", ""},
		{"alpha, other type", keyAlpha, "?type=metrics", 200, "", ""},
		{"beta, everything", keyBeta, "", 200, "beta_ev_api@2024-03-08", ""},
		{"beta, alpha's source", keyBeta, "?source=ev_api", 404, "", "source"},
		{"bad start", keyAlpha, "?start_date=2024-13-01", 400, "", "start_date"},
		{"SQL in end", keyAlpha, "?end_date=2024-03-01'--", 400, "", "end_date"},
		{"end before start", keyAlpha, "?start_date=2024-03-05&end_date=2024-03-01", 400, "", "end_date"},
		{"bad type", keyAlpha, "?type=x", 400, "", "type"},
	}
	for _, tt := range statusTests {
		t.Run("status "+tt.name, func(t *testing.T) {
			w := f.do(t, "GET", "/v1/ingestions/status"+tt.query, statsigKey(tt.key), "")
			if w.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", w.Code, tt.wantCode, w.Body)
			}
			if tt.wantCode != 200 {
				if e := decodeJSON[errorBody](t, w); e.Field != tt.wantField {
					t.Fatalf("body %s: want field %q", w.Body, tt.wantField)
				}
				return
			}
			days := decodeJSON[daysBody](t, w).Data
			if days == nil {
				t.Fatalf("data is null, want a list: %s", w.Body)
			}
			if got := sources(days); got != tt.wantDays {
				t.Fatalf("days %q, want %q", got, tt.wantDays)
			}
		})
	}

	usageTests := []struct {
		name      string
		query     string
		wantCode  int
		wantField string
	}{
		{"range", "?start_date=2024-03-01&end_date=2024-03-10", 200, ""},
		{"everything", "", 200, ""},
		{"bad date", "?start_date=yesterday", 400, "start_date"},
	}
	for _, tt := range usageTests {
		t.Run("usage "+tt.name, func(t *testing.T) {
			w := f.do(t, "GET", "/v1/ingestions/usage"+tt.query, statsigKey(keyBeta), "")
			if w.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", w.Code, tt.wantCode, w.Body)
			}
			if tt.wantCode != 200 {
				if e := decodeJSON[errorBody](t, w); e.Field != tt.wantField {
					t.Fatalf("body %s: want field %q", w.Body, tt.wantField)
				}
				return
			}
			rows := decodeJSON[struct {
				Data []store.UsageRow `json:"data"`
			}](t, w).Data
			if rows == nil {
				t.Fatalf("data is null: %s", w.Body)
			}
			for _, r := range rows {
				if r.Project != "beta" {
					t.Fatalf("beta's usage shows %+v", r)
				}
			}
		})
	}

	t.Run("bad limit", func(t *testing.T) {
		w := f.do(t, "GET", "/v1/ingestions/runs?limit=100000", statsigKey(keyAlpha), "")
		if e := decodeJSON[errorBody](t, w); w.Code != 400 || e.Field != "limit" {
			t.Fatalf("code %d body %s, want 400 naming limit", w.Code, w.Body)
		}
	})
	t.Run("unknown v1 route needs a key", func(t *testing.T) {
		if w := f.do(t, "GET", "/v1/secrets", noKey, ""); w.Code != http.StatusUnauthorized {
			t.Fatalf("code %d, want 401", w.Code)
		}
		if w := f.do(t, "GET", "/v1/secrets", statsigKey(keyAlpha), ""); w.Code != http.StatusNotFound {
			t.Fatalf("code %d, want 404", w.Code)
		}
	})
}

func TestKeyNeverLogged(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const wrongKey = "sk_live_wrong_secret_value_42"
	calls := []struct {
		method, path string
		auth         header
		body         string
	}{
		{"POST", "/v1/mark_data_ready_dwh", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events"}`},
		{"POST", "/v1/mark_data_ready_dwh", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events"}`},
		{"POST", "/v1/mark_data_ready_dwh", bearer(keyBeta), `{"datestamps": "bad", "type": "events"}`},
		{"POST", "/v1/mark_data_ready_dwh", statsigKey(wrongKey), `{}`},
		{"GET", "/v1/ingestions/runs?limit=1", bearer(wrongKey), ""},
		{"GET", "/v1/ingestions/status", statsigKey(keyBeta), ""},
	}
	for _, c := range calls {
		f.do(t, c.method, c.path, c.auth, c.body)
	}
	f.dispatch.SetFail(errDown)
	f.do(t, "POST", "/v1/mark_data_ready_dwh", statsigKey(keyBeta), `{"datestamps": "2024-03-09", "type": "events"}`)

	logs := f.logs.String()
	for _, k := range []string{keyAlpha, keyBeta, wrongKey} {
		if strings.Contains(logs, k) {
			t.Fatalf("key %q appears in the log:\n%s", k, logs)
		}
	}
	// The log is still useful: every request is there with route, code and project.
	for _, want := range []string{`"route":"POST /v1/mark_data_ready_dwh"`, `"code":429`, `"code":401`, `"project":"beta"`, `"duration_ms"`, errDown.Error()} {
		if !strings.Contains(logs, want) {
			t.Fatalf("log lacks %s:\n%s", want, logs)
		}
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { dead.Close() })
	tests := []struct {
		name      string
		state     *state.State
		path      string
		wantCode  int
		wantInRes string
	}{
		{"healthz", newState(t), "/healthz", 200, "ok"},
		{"ready", newState(t), "/readyz", 200, "ready"},
		{"healthz with redis down", state.New(dead, state.Options{}), "/healthz", 200, "ok"},
		{"not ready with redis down", state.New(dead, state.Options{}), "/readyz", 503, "redis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, st, tt.state)
			w := f.do(t, "GET", tt.path, noKey, "")
			if w.Code != tt.wantCode || !strings.Contains(w.Body.String(), tt.wantInRes) {
				t.Fatalf("code %d body %s, want %d with %q", w.Code, w.Body, tt.wantCode, tt.wantInRes)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.do(t, "POST", "/v1/mark_data_ready_dwh", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events"}`)
	f.do(t, "POST", "/v1/mark_data_ready_dwh", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events"}`)
	f.do(t, "POST", "/v1/mark_data_ready_dwh", noKey, `{}`)
	w := f.do(t, "GET", "/metrics", noKey, "")
	if w.Code != 200 {
		t.Fatalf("metrics: %d", w.Code)
	}
	for _, want := range []string{
		`sluice_trigger_http_requests_total{code="202",route="POST /v1/mark_data_ready_dwh"} 1`,
		`sluice_trigger_http_requests_total{code="429",route="POST /v1/mark_data_ready_dwh"} 1`,
		`sluice_trigger_http_requests_total{code="401",route="POST /v1/mark_data_ready_dwh"} 1`,
		`sluice_trigger_http_request_duration_seconds_count{route="POST /v1/mark_data_ready_dwh"} 3`,
	} {
		if !strings.Contains(w.Body.String(), want) {
			t.Fatalf("metrics lack %s:\n%s", want, w.Body)
		}
	}
}
