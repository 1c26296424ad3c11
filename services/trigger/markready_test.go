package trigger

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/vocab"
)

type markResult struct {
	Message string `json:"message"`
	Data    struct {
		RunIDs []string     `json:"runIDs"`
		Runs   []startedRun `json:"runs"`
	} `json:"data"`
}

func TestMarkDataReady(t *testing.T) {
	t.Parallel()
	many := make([]string, 32)
	for i := range many {
		many[i] = fmt.Sprintf(`"2024-01-%02d"`, i%28+1)
	}
	tests := []struct {
		name      string
		auth      header
		body      string
		wantCode  int
		wantField string   // for 4xx
		wantRuns  []string // "source ds", for 202
	}{
		{"one date", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events"}`, 202, "", []string{"ev_api 2024-03-09"}},
		{"list of dates", statsigKey(keyAlpha), `{"datestamps": ["2024-03-08", "2024-03-09", "2024-03-08"], "type": "metrics"}`, 202, "", []string{"mt_api 2024-03-08", "mt_api 2024-03-09"}},
		{"named source", statsigKey(keyAlpha), `{"datestamps": ["2024-03-09"], "type": "events", "sources": ["ev_api"]}`, 202, "", []string{"ev_api 2024-03-09"}},
		{"bearer key", bearer(keyAlpha), `{"datestamps": "2024-03-09", "type": "events"}`, 202, "", []string{"ev_api 2024-03-09"}},
		{"other project's own source", statsigKey(keyBeta), `{"datestamps": "2024-03-09", "type": "events"}`, 202, "", []string{"beta_ev_api 2024-03-09"}},

		{"bad type", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "logs"}`, 400, "type", nil},
		{"missing type", statsigKey(keyAlpha), `{"datestamps": "2024-03-09"}`, 400, "type", nil},
		{"type not a string", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": 1}`, 400, "type", nil},
		{"not a calendar date", statsigKey(keyAlpha), `{"datestamps": "2023-02-30", "type": "events"}`, 400, "datestamps", nil},
		{"compact date", statsigKey(keyAlpha), `{"datestamps": "20230220", "type": "events"}`, 400, "datestamps", nil},
		{"date with time", statsigKey(keyAlpha), `{"datestamps": "2023-02-20T00:00:00Z", "type": "events"}`, 400, "datestamps", nil},
		{"date carrying SQL", statsigKey(keyAlpha), `{"datestamps": "2023-02-20'; DROP TABLE x;--", "type": "events"}`, 400, "datestamps", nil},
		{"SQL in a list", statsigKey(keyAlpha), `{"datestamps": ["2023-02-20", "1 OR 1=1"], "type": "events"}`, 400, "datestamps", nil},
		{"future date", statsigKey(keyAlpha), `{"datestamps": "2024-03-12", "type": "events"}`, 400, "datestamps", nil},
		{"missing dates", statsigKey(keyAlpha), `{"type": "events"}`, 400, "datestamps", nil},
		{"empty list", statsigKey(keyAlpha), `{"datestamps": [], "type": "events"}`, 400, "datestamps", nil},
		{"number", statsigKey(keyAlpha), `{"datestamps": 20230220, "type": "events"}`, 400, "datestamps", nil},
		{"too many dates", statsigKey(keyAlpha), `{"datestamps": [` + strings.Join(many, ",") + `], "type": "events"}`, 400, "datestamps", nil},
		{"sources not a list", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events", "sources": "ev_api"}`, 400, "sources", nil},
		{"bad JSON", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": `, 400, "body", nil},
		{"empty body", statsigKey(keyAlpha), ``, 400, "body", nil},
		{"array body", statsigKey(keyAlpha), `["2024-03-09"]`, 400, "body", nil},
		{"trailing data", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events"} {}`, 400, "body", nil},
		{"unknown field", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events", "force": true}`, 400, "force", nil},

		{"unknown source", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events", "sources": ["nope"]}`, 404, "sources", nil},
		{"scheduled source", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events", "sources": ["ev_daily"]}`, 404, "sources", nil},
		{"source of the other type", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events", "sources": ["mt_api"]}`, 404, "sources", nil},
		{"another project's source", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events", "sources": ["beta_ev_api"]}`, 404, "sources", nil},
		{"no api-triggered source of the type", statsigKey(keyBeta), `{"datestamps": "2024-03-09", "type": "metrics"}`, 404, "type", nil},

		{"missing key", noKey, `{"datestamps": "2024-03-09", "type": "events"}`, 401, "statsig-api-key", nil},
		{"unknown key", statsigKey("sk_live_nobody"), `{"datestamps": "2024-03-09", "type": "events"}`, 401, "statsig-api-key", nil},
		{"bearer without a key", func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") }, `{"datestamps": "2024-03-09", "type": "events"}`, 401, "statsig-api-key", nil},
	}
	st := newStore(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureWith(t, st, newState(t))
			w := f.do(t, "POST", "/v1/mark_data_ready_dwh", tt.auth, tt.body)
			if w.Code != tt.wantCode {
				t.Fatalf("code = %d, want %d; body %s", w.Code, tt.wantCode, w.Body)
			}
			if tt.wantCode != http.StatusAccepted {
				e := decodeJSON[errorBody](t, w)
				if e.Field != tt.wantField || e.Reason == "" || e.Error == "" {
					t.Fatalf("error body %s: want field %q with a reason", w.Body, tt.wantField)
				}
				if n := len(f.dispatch.Calls()); n != 0 {
					t.Fatalf("a refused call dispatched %d runs", n)
				}
				if tt.wantCode == http.StatusUnauthorized {
					return
				}
				// A refused call never uses up the window.
				w := f.do(t, "POST", "/v1/mark_data_ready_dwh", tt.auth, `{"datestamps": "2024-03-09", "type": "events"}`)
				if w.Code != http.StatusAccepted {
					t.Fatalf("valid call after a %d: code %d, want 202: %s", tt.wantCode, w.Code, w.Body)
				}
				return
			}
			res := decodeJSON[markResult](t, w)
			var got []string
			for _, r := range res.Data.Runs {
				got = append(got, r.Source+" "+r.Date)
				if !slices.Contains(res.Data.RunIDs, r.RunID) || r.RunID == "" {
					t.Fatalf("run %+v not in runIDs %v", r, res.Data.RunIDs)
				}
			}
			if !slices.Equal(got, tt.wantRuns) || len(res.Data.RunIDs) != len(tt.wantRuns) {
				t.Fatalf("runs = %v (ids %v), want %v", got, res.Data.RunIDs, tt.wantRuns)
			}
			calls := f.dispatch.Calls()
			if len(calls) != len(tt.wantRuns) {
				t.Fatalf("dispatched %d, want %d", len(calls), len(tt.wantRuns))
			}
			for _, c := range calls {
				if c.Trigger != vocab.TriggerAPI || c.Project == "" {
					t.Fatalf("dispatch %+v: want trigger %q and the key's project", c, vocab.TriggerAPI)
				}
				if (c.Project == "beta") != strings.HasPrefix(c.Ingestion, "beta") {
					t.Fatalf("dispatch %+v crosses projects", c)
				}
			}
		})
	}
}

func TestMarkDataReadyRateLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	body := `{"datestamps": "2024-03-09", "type": "events"}`
	if w := f.do(t, "POST", "/v1/mark_data_ready_dwh", statsigKey(keyAlpha), body); w.Code != http.StatusAccepted {
		t.Fatalf("first call: %d %s", w.Code, w.Body)
	}
	w := f.do(t, "POST", "/v1/mark_data_ready_dwh", statsigKey(keyAlpha), body)
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("second call: %d %s, want 429", w.Code, w.Body)
	}
	// Redis's own TTL counts down; a few seconds may pass on a real server.
	ra := w.Header().Get("Retry-After")
	var secs int
	if _, err := fmt.Sscan(ra, &secs); err != nil || secs < 7100 || secs > 7200 {
		t.Fatalf("Retry-After = %q, want about 7200 seconds", ra)
	}
	if e := decodeJSON[errorBody](t, w); e.Error == "" || e.Reason == "" {
		t.Fatalf("429 body %s: want an error and a reason", w.Body)
	}
	// The window is per project and type.
	for _, other := range []struct {
		key, body string
	}{
		{keyAlpha, `{"datestamps": "2024-03-09", "type": "metrics"}`},
		{keyBeta, body},
	} {
		if w := f.do(t, "POST", "/v1/mark_data_ready_dwh", statsigKey(other.key), other.body); w.Code != http.StatusAccepted {
			t.Fatalf("%s: %d %s, want its own window", other.body, w.Code, w.Body)
		}
	}
	if n := len(f.dispatch.Calls()); n != 3 {
		t.Fatalf("dispatched %d runs, want 3", n)
	}
}

func TestMarkDataReadyConcurrent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const n = 20
	codes := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes[i] = f.do(t, "POST", "/v1/mark_data_ready_dwh", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events"}`).Code
		}()
	}
	close(start)
	wg.Wait()
	var accepted, limited int
	for _, c := range codes {
		switch c {
		case http.StatusAccepted:
			accepted++
		case http.StatusTooManyRequests:
			limited++
		}
	}
	if accepted != 1 || limited != n-1 {
		t.Fatalf("codes %v: want exactly one 202 and %d 429s", codes, n-1)
	}
	if calls := f.dispatch.Calls(); len(calls) != 1 {
		t.Fatalf("dispatched %d runs, want 1", len(calls))
	}
}

func TestOversizedBody(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	pad := strings.Repeat(" ", 70<<10)
	for _, path := range []string{"/v1/mark_data_ready_dwh", "/v1/ingestions/backfill"} {
		w := f.do(t, "POST", path, statsigKey(keyAlpha), `{"datestamps": "2024-03-09",`+pad+`"type": "events"}`)
		if w.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("%s: code %d, want 413", path, w.Code)
		}
		if e := decodeJSON[errorBody](t, w); e.Field != "body" {
			t.Fatalf("%s: body %s, want field body", path, w.Body)
		}
	}
	if w := f.do(t, "POST", "/v1/mark_data_ready_dwh", statsigKey(keyAlpha), `{"datestamps": "2024-03-09", "type": "events"}`); w.Code != http.StatusAccepted {
		t.Fatalf("after a 413 the window must be open: %d", w.Code)
	}
}

func TestDispatchFailureGivesWindowBack(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.dispatch.SetFail(errDown)
	body := `{"datestamps": "2024-03-09", "type": "events"}`
	w := f.do(t, "POST", "/v1/mark_data_ready_dwh", statsigKey(keyAlpha), body)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("code %d, want 503: %s", w.Code, w.Body)
	}
	if strings.Contains(w.Body.String(), errDown.Error()) {
		t.Fatalf("internal error leaked to the client: %s", w.Body)
	}
	f.dispatch.SetFail(nil)
	if w := f.do(t, "POST", "/v1/mark_data_ready_dwh", statsigKey(keyAlpha), body); w.Code != http.StatusAccepted {
		t.Fatalf("retry after a failed dispatch: %d, want 202", w.Code)
	}
}

func TestBackfill(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		body      string
		wantCode  int
		wantField string
		wantRuns  []string
	}{
		{"one source", `{"datestamp_start": "2024-03-01", "datestamp_end": "2024-03-03", "type": "events", "source": "ev_daily"}`, 202, "",
			[]string{"ev_daily 2024-03-01", "ev_daily 2024-03-02", "ev_daily 2024-03-03"}},
		{"every source of the type", `{"datestamp_start": "2024-02-28", "datestamp_end": "2024-03-01", "type": "events", "dataset": "events"}`, 202, "",
			[]string{"ev_api 2024-02-28", "ev_api 2024-02-29", "ev_api 2024-03-01", "ev_daily 2024-02-28", "ev_daily 2024-02-29", "ev_daily 2024-03-01"}},
		{"one day, today", `{"datestamp_start": "2024-03-10", "datestamp_end": "2024-03-10", "type": "metrics"}`, 202, "", []string{"mt_api 2024-03-10"}},
		{"end before start", `{"datestamp_start": "2024-03-03", "datestamp_end": "2024-03-01", "type": "events"}`, 400, "datestamp_end", nil},
		{"more than a year", `{"datestamp_start": "2023-03-01", "datestamp_end": "2024-03-02", "type": "events"}`, 400, "datestamp_end", nil},
		{"future end", `{"datestamp_start": "2024-03-01", "datestamp_end": "2024-03-11", "type": "events"}`, 400, "datestamp_end", nil},
		{"bad start", `{"datestamp_start": "2024-3-1", "datestamp_end": "2024-03-02", "type": "events"}`, 400, "datestamp_start", nil},
		{"SQL in start", `{"datestamp_start": "2024-03-01' OR '1'='1", "datestamp_end": "2024-03-02", "type": "events"}`, 400, "datestamp_start", nil},
		{"missing end", `{"datestamp_start": "2024-03-01", "type": "events"}`, 400, "datestamp_end", nil},
		{"bad type", `{"datestamp_start": "2024-03-01", "datestamp_end": "2024-03-02", "type": "rows"}`, 400, "type", nil},
		{"unknown field", `{"datestamp_start": "2024-03-01", "datestamp_end": "2024-03-02", "type": "events", "sources": ["ev_api"]}`, 400, "sources", nil},
		{"bad JSON", `{"datestamp_start": `, 400, "body", nil},
		{"unknown source", `{"datestamp_start": "2024-03-01", "datestamp_end": "2024-03-02", "type": "events", "source": "nope"}`, 404, "source", nil},
		{"another project's source", `{"datestamp_start": "2024-03-01", "datestamp_end": "2024-03-02", "type": "events", "source": "beta_ev_api"}`, 404, "source", nil},
		{"source of the other type", `{"datestamp_start": "2024-03-01", "datestamp_end": "2024-03-02", "type": "metrics", "source": "ev_api"}`, 404, "source", nil},
	}
	st := newStore(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureWith(t, st, newState(t))
			w := f.do(t, "POST", "/v1/ingestions/backfill", statsigKey(keyAlpha), tt.body)
			if w.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", w.Code, tt.wantCode, w.Body)
			}
			if tt.wantCode != http.StatusAccepted {
				if e := decodeJSON[errorBody](t, w); e.Field != tt.wantField {
					t.Fatalf("body %s: want field %q", w.Body, tt.wantField)
				}
				if n := len(f.dispatch.Calls()); n != 0 {
					t.Fatalf("a refused backfill dispatched %d runs", n)
				}
				return
			}
			res := decodeJSON[backfillResponse](t, w)
			var got []string
			for _, r := range res.Data.Runs {
				got = append(got, r.Source+" "+r.Date)
			}
			if !slices.Equal(got, tt.wantRuns) || res.Message == "" {
				t.Fatalf("runs %v, want %v (message %q)", got, tt.wantRuns, res.Message)
			}
			if res.Data.RunID != res.Data.RunIDs[0] || len(res.Data.RunIDs) != len(tt.wantRuns) {
				t.Fatalf("runID %q runIDs %v: want the first of %d", res.Data.RunID, res.Data.RunIDs, len(tt.wantRuns))
			}
			for _, c := range f.dispatch.Calls() {
				if c.Trigger != vocab.TriggerBackfill || c.Project != "alpha" {
					t.Fatalf("dispatch %+v: want a backfill of alpha", c)
				}
			}
		})
	}
}

func TestServerTimeouts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv := f.svc.server()
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
		"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout,
	} {
		if d <= 0 {
			t.Errorf("%s is unset: slow clients could pin connections", name)
		}
	}
}

func TestServeShutsDownOnCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.svc.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz over the network: %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

func TestRunRefusesBusyAddress(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f := newFixture(t)
	f.svc.cfg.Addr = ln.Addr().String()
	if err := f.svc.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("Run on a busy address = %v, want a listen error", err)
	}
}
