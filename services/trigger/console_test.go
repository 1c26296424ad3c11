package trigger

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/pkg/apikey"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/mapping"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// browser is a minimal cookie-keeping client over the handler.
type browser struct {
	h      http.Handler
	cookie *http.Cookie
}

func (b *browser) do(tb testing.TB, method, path string, form url.Values) *httptest.ResponseRecorder {
	tb.Helper()
	var req *http.Request
	if form != nil {
		req = httptest.NewRequest(method, path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, path, nil)
	}
	if b.cookie != nil {
		req.AddCookie(b.cookie)
	}
	w := httptest.NewRecorder()
	b.h.ServeHTTP(w, req)
	for _, c := range w.Result().Cookies() {
		if c.Name == sessionCookie {
			b.cookie = c
			if c.MaxAge < 0 {
				b.cookie = nil
			}
		}
	}
	return w
}

func (b *browser) login(tb testing.TB, key string) *httptest.ResponseRecorder {
	tb.Helper()
	return b.do(tb, "POST", "/console/login", url.Values{"key": {key}})
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfOf reads the token the page's forms carry.
func csrfOf(tb testing.TB, page string) string {
	tb.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		tb.Fatalf("no csrf field in page:\n%s", page)
	}
	return m[1]
}

var cellStatus = regexp.MustCompile(`href="/console/ingestions/([^/]+)/days/([0-9-]+)"\s+data-date="[0-9-]+" data-status="([a-z-]+)"`)

// gridOf reads ingestion/date → status class from a grid page.
func gridOf(page string) map[string]string {
	out := map[string]string{}
	for _, m := range cellStatus.FindAllStringSubmatch(page, -1) {
		out[m[1]+"/"+m[2]] = m[3]
	}
	return out
}

func TestConsoleLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		name       string
		key        string
		wantCode   int
		wantCookie bool
	}{
		{"a project key logs in", keyAlpha, http.StatusSeeOther, true},
		{"a wrong key is refused", "sk_live_wrong", http.StatusUnauthorized, false},
		{"an empty key is refused", "", http.StatusUnauthorized, false},
		{"a key's hash is not a key", apikey.Hash(keyAlpha), http.StatusUnauthorized, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &browser{h: f.h}
			w := b.login(t, tt.key)
			if w.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", w.Code, tt.wantCode, w.Body)
			}
			if (b.cookie != nil) != tt.wantCookie {
				t.Fatalf("session cookie set = %v, want %v", b.cookie != nil, tt.wantCookie)
			}
			if !tt.wantCookie {
				if !strings.Contains(w.Body.String(), "That API key is not valid.") {
					t.Fatalf("refusal does not say why: %s", w.Body)
				}
				return
			}
			c := b.cookie
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/console" {
				t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/console", c)
			}
			if strings.Contains(c.Value, tt.key) || strings.Contains(c.Value, apikey.Hash(tt.key)) {
				t.Fatalf("cookie %q holds the key or its hash", c.Value)
			}
			home := b.do(t, "GET", "/console", nil)
			if !strings.Contains(home.Body.String(), `id="project">alpha<`) {
				t.Fatalf("home after login does not name the project: %s", home.Body)
			}
		})
	}
	if logs := f.logs.String(); strings.Contains(logs, keyAlpha) || strings.Contains(logs, "sk_live_wrong") {
		t.Fatalf("a key reached the log:\n%s", logs)
	}
}

func TestConsoleRefusesForgedSessions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	b := &browser{h: f.h}
	b.login(t, keyAlpha)
	good := b.cookie.Value
	parts := strings.Split(good, ".")
	// Re-sign nothing, just swap the project for beta's: the MAC must fail.
	forgedProject := strings.Join([]string{"YmV0YQ", parts[1], parts[2], parts[3]}, ".")
	forgedExpiry := strings.Join([]string{parts[0], parts[1], "99999999999", parts[3]}, ".")
	tests := []struct{ name, value string }{
		{"another project", forgedProject},
		{"a later expiry", forgedExpiry},
		{"garbage", "not-a-session"},
		{"empty mac", strings.Join(parts[:3], ".") + "."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := &browser{h: f.h, cookie: &http.Cookie{Name: sessionCookie, Value: tt.value}}
			w := fb.do(t, "GET", "/console", nil)
			if !strings.Contains(w.Body.String(), `id="key"`) || strings.Contains(w.Body.String(), `id="grid"`) {
				t.Fatalf("forged session was not sent to log in: %s", w.Body)
			}
			w = fb.do(t, "GET", "/console/ingestions/ev_daily/days/2024-03-05", nil)
			if w.Code != http.StatusSeeOther {
				t.Fatalf("day page with a forged session: code %d, want 303", w.Code)
			}
		})
	}
}

func TestConsoleGridAndDay(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	seedConsole(t, f.store)
	b := &browser{h: f.h}
	b.login(t, keyAlpha)

	w := b.do(t, "GET", "/console", nil)
	if w.Code != http.StatusOK {
		t.Fatalf("grid: code %d: %s", w.Code, w.Body)
	}
	grid := gridOf(w.Body.String())
	for _, d := range consoleSeed {
		key := d.ingestion + "/" + d.date
		if d.project != "alpha" {
			if _, ok := grid[key]; ok {
				t.Errorf("alpha's grid shows beta's %s", key)
			}
			continue
		}
		if grid[key] != d.wantClass {
			t.Errorf("cell %s = %q, want %q", key, grid[key], d.wantClass)
		}
	}
	if got := grid["ev_daily/2024-03-04"]; got != "not-loaded" {
		t.Errorf("unseeded day = %q, want not-loaded", got)
	}
	if got := len(grid); got != 3*defaultGridDays {
		t.Errorf("%d cells, want %d (3 ingestions of alpha × %d days)", got, 3*defaultGridDays, defaultGridDays)
	}
	if !strings.Contains(w.Body.String(), `data-date="2024-03-09"`) || strings.Contains(w.Body.String(), `data-date="2024-03-10"`) {
		t.Errorf("default grid should end yesterday (2024-03-09)")
	}

	page := b.do(t, "GET", "/console/ingestions/ev_daily/days/2024-03-05", nil).Body.String()
	for _, want := range []string{
		`id="status" data-status="loaded"`,
		`id="count-extracted">11<`,
		`id="count-loaded">8<`,
		`id="count-rejected">3<`,
		`data-reason="missing_event_name"><td>missing_event_name</td><td class="num">2<`,
		`id="warehouse-now">12`,
		`data-run="run-ev_daily-2024-03-05"`,
		`<code>IMPORT_SUCCESSFUL</code>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("day page lacks %s", want)
		}
	}
	failed := b.do(t, "GET", "/console/ingestions/ev_daily/days/2024-03-07", nil).Body.String()
	if !strings.Contains(failed, "QUERY_ERROR: relation events does not exist") {
		t.Errorf("failed day does not show its error:\n%s", failed)
	}
}

func TestConsoleStaysInItsProject(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	seedConsole(t, f.store)
	b := &browser{h: f.h}
	b.login(t, keyBeta)
	grid := gridOf(b.do(t, "GET", "/console", nil).Body.String())
	for key := range grid {
		if !strings.HasPrefix(key, "beta_ev_api/") {
			t.Errorf("beta's grid shows %s", key)
		}
	}
	if grid["beta_ev_api/2024-03-05"] != "loaded" {
		t.Errorf("beta's own loaded day = %q", grid["beta_ev_api/2024-03-05"])
	}
	page := b.do(t, "GET", "/console", nil).Body.String()
	csrf := csrfOf(t, page)
	tests := []struct {
		name, method, path string
		form               url.Values
	}{
		{"alpha's day", "GET", "/console/ingestions/ev_daily/days/2024-03-05", nil},
		{"reload alpha's day", "POST", "/console/ingestions/ev_daily/days/2024-03-05/reload", url.Values{"csrf": {csrf}}},
		{"backfill alpha's ingestion", "POST", "/console/backfill", url.Values{"csrf": {csrf}, "source": {"ev_daily"}, "start": {"2024-03-01"}, "end": {"2024-03-02"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := b.do(t, tt.method, tt.path, tt.form)
			if w.Code != http.StatusNotFound || strings.Contains(w.Body.String(), "IMPORT_SUCCESSFUL") {
				t.Fatalf("code %d, want 404 showing nothing: %s", w.Code, w.Body)
			}
		})
	}
	if calls := f.dispatch.Calls(); len(calls) != 0 {
		t.Fatalf("beta dispatched alpha's runs: %+v", calls)
	}
}

func TestConsoleActions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	b := &browser{h: f.h}
	b.login(t, keyAlpha)
	csrf := csrfOf(t, b.do(t, "GET", "/console", nil).Body.String())
	tests := []struct {
		name      string
		path      string
		form      url.Values
		wantCode  int
		wantCalls []dispatch.Request
		wantText  string
	}{
		{"backfill a range", "/console/backfill",
			url.Values{"csrf": {csrf}, "source": {"ev_daily"}, "start": {"2024-03-01"}, "end": {"2024-03-03"}}, http.StatusOK,
			[]dispatch.Request{
				{Project: "alpha", Ingestion: "ev_daily", Date: "2024-03-01", Trigger: vocab.TriggerBackfill, Reason: "backfill"},
				{Project: "alpha", Ingestion: "ev_daily", Date: "2024-03-02", Trigger: vocab.TriggerBackfill, Reason: "backfill"},
				{Project: "alpha", Ingestion: "ev_daily", Date: "2024-03-03", Trigger: vocab.TriggerBackfill, Reason: "backfill"},
			}, "Backfill of ev_daily from 2024-03-01 to 2024-03-03 started"},
		{"reload a day", "/console/ingestions/mt_api/days/2024-03-05/reload", url.Values{"csrf": {csrf}}, http.StatusOK,
			[]dispatch.Request{{Project: "alpha", Ingestion: "mt_api", Date: "2024-03-05", Trigger: vocab.TriggerReload, Reason: "console reload"}},
			"Reload of mt_api on 2024-03-05 started"},
		{"a backfill ending after today is refused as the API refuses it", "/console/backfill",
			url.Values{"csrf": {csrf}, "source": {"ev_daily"}, "start": {"2024-03-09"}, "end": {"2024-03-12"}}, http.StatusBadRequest, nil, "datestamp_end"},
		{"a backfill without the CSRF token is refused", "/console/backfill",
			url.Values{"source": {"ev_daily"}, "start": {"2024-03-01"}, "end": {"2024-03-01"}}, http.StatusForbidden, nil, "security token"},
		{"a reload with a wrong CSRF token is refused", "/console/ingestions/ev_daily/days/2024-03-05/reload",
			url.Values{"csrf": {csrf + "0"}}, http.StatusForbidden, nil, "security token"},
		{"a reload of a day in the future is refused", "/console/ingestions/ev_daily/days/2024-03-11/reload",
			url.Values{"csrf": {csrf}}, http.StatusBadRequest, nil, "in the future"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.dispatch.Calls())
			w := b.do(t, "POST", tt.path, tt.form)
			if w.Code != tt.wantCode || !strings.Contains(w.Body.String(), tt.wantText) {
				t.Fatalf("code %d, want %d with %q: %s", w.Code, tt.wantCode, tt.wantText, w.Body)
			}
			calls := f.dispatch.Calls()[before:]
			if len(calls) != len(tt.wantCalls) {
				t.Fatalf("dispatched %+v, want %+v", calls, tt.wantCalls)
			}
			for i := range calls {
				if calls[i] != tt.wantCalls[i] {
					t.Errorf("call %d = %+v, want %+v", i, calls[i], tt.wantCalls[i])
				}
				if !strings.Contains(w.Body.String(), "run-") {
					t.Errorf("result page does not list the started runs: %s", w.Body)
				}
			}
		})
	}

	t.Run("a cross-site post is refused even with the token", func(t *testing.T) {
		req := httptest.NewRequest("POST", "/console/ingestions/ev_daily/days/2024-03-05/reload", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		req.AddCookie(b.cookie)
		w := httptest.NewRecorder()
		before := len(f.dispatch.Calls())
		f.h.ServeHTTP(w, req)
		if w.Code != http.StatusForbidden || len(f.dispatch.Calls()) != before {
			t.Fatalf("code %d, calls %d → %d: want 403 and no dispatch", w.Code, before, len(f.dispatch.Calls()))
		}
	})

	t.Run("logging out ends the session", func(t *testing.T) {
		w := b.do(t, "POST", "/console/logout", url.Values{"csrf": {csrf}})
		if w.Code != http.StatusSeeOther || b.cookie != nil {
			t.Fatalf("logout: code %d, cookie %v", w.Code, b.cookie)
		}
		if !strings.Contains(b.do(t, "GET", "/console", nil).Body.String(), `id="key"`) {
			t.Fatalf("after logout the console does not ask for a key")
		}
	})
}

func TestConsoleHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	b := &browser{h: f.h}
	w := b.do(t, "GET", "/console", nil)
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if got := w.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	css := b.do(t, "GET", "/console/static/console.css", nil)
	if css.Code != http.StatusOK || !strings.Contains(css.Body.String(), ".s-failed") {
		t.Errorf("stylesheet: code %d", css.Code)
	}
}

func TestConsoleValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		validator *fakeValidator
		wantCode  int
		wantText  []string
	}{
		{"a good mapping", &fakeValidator{rep: mapping.Report{OK: true, Day: "2024-03-05", SampleRows: 100, Mapped: 98, Rejected: 2,
			RejectedByReason: []mapping.ReasonCount{{Reason: "event_name_missing", Count: 2}}}},
			http.StatusOK, []string{`data-ok="true"`, `id="sample-rows">100<`, `id="sample-mapped">98<`, "event_name_missing"}},
		{"a mapping to fix", &fakeValidator{rep: mapping.Report{OK: false, Problems: []string{"column ts is missing"}}},
			http.StatusUnprocessableEntity, []string{`data-ok="false"`, "column ts is missing"}},
		{"no validator in this build", nil, http.StatusNotImplemented, []string{"use sluice validate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var v Validator
			if tt.validator != nil {
				v = tt.validator
			}
			b := &browser{h: newFixtureWithValidator(t, v)}
			b.login(t, keyAlpha)
			day := b.do(t, "GET", "/console/ingestions/ev_daily/days/2024-03-05", nil).Body.String()
			wantButton := `<button type="submit" id="validate">`
			if (tt.validator != nil) != strings.Contains(day, wantButton) {
				t.Errorf("validate button enabled = %v, want %v", strings.Contains(day, wantButton), tt.validator != nil)
			}
			w := b.do(t, "POST", "/console/ingestions/ev_daily/days/2024-03-05/validate", url.Values{"csrf": {csrfOf(t, day)}})
			if w.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", w.Code, tt.wantCode, w.Body)
			}
			for _, want := range tt.wantText {
				if !strings.Contains(w.Body.String(), want) {
					t.Errorf("page lacks %q", want)
				}
			}
			if tt.validator != nil {
				calls := tt.validator.calls
				if len(calls) != 1 || calls[0].project != "alpha" || calls[0].ingestion != "ev_daily" || calls[0].day.String() != "2024-03-05" {
					t.Errorf("validator calls %+v, want one for alpha's ev_daily on 2024-03-05", calls)
				}
			}
		})
	}
}

// newFixtureWithValidator is the service on the PostgreSQL test store with
// v as its Validator (none when nil).
func newFixtureWithValidator(tb testing.TB, v Validator) http.Handler {
	tb.Helper()
	svc, err := New(Config{}, Deps{Config: testConfig(), Store: newStore(tb), State: newState(tb), Dispatcher: &recorder{},
		Logger: slog.New(slog.DiscardHandler), Clock: func() time.Time { return testNow }, Registry: prometheus.NewRegistry(), Validator: v})
	if err != nil {
		tb.Fatal(err)
	}
	return svc.Handler()
}
