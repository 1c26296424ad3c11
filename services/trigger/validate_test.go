package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/civil"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/pkg/mapping"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	"github.com/sluicehq/sluice/pkg/validation"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
)

// fakeValidator answers with a fixed report or error and records its calls.
type fakeValidator struct {
	rep   mapping.Report
	err   error
	mu    sync.Mutex
	calls []validateCall
}

type validateCall struct {
	project, ingestion string
	day                civil.Date
	limit              int
}

func (v *fakeValidator) Validate(_ context.Context, project, ingestion string, day civil.Date, limit int) (mapping.Report, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, validateCall{project, ingestion, day, limit})
	rep := v.rep
	rep.Ingestion = ingestion
	return rep, v.err
}

// newValidateService is the service with v as its Validator (none when nil).
func newValidateService(tb testing.TB, v Validator) http.Handler {
	tb.Helper()
	st, err := duckstore.Open(context.Background(), filepath.Join(tb.TempDir(), "store.duckdb"), duckstore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	deps := Deps{Config: testConfig(), Store: st, State: newState(tb), Dispatcher: &recorder{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry()}
	if v != nil {
		deps.Validator = v
	}
	svc, err := New(Config{}, deps)
	if err != nil {
		tb.Fatal(err)
	}
	return svc.Handler()
}

func postValidate(tb testing.TB, h http.Handler, key, ingestion, body string) *httptest.ResponseRecorder {
	tb.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/ingestions/"+ingestion+"/validate", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set(keyHeader, key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func TestValidateRoute(t *testing.T) {
	t.Parallel()
	okReport := mapping.Report{Type: "events", Day: "2024-03-09", OK: true, SampleRows: 3, Mapped: 3, Problems: []string{}}
	badReport := mapping.Report{Type: "events", Day: "2024-03-09", OK: false, SampleRows: 3, Rejected: 3,
		Problems: []string{`event_name: column "name" is not in the query result`}}
	queryErr := &validation.WarehouseError{Category: vocab.CategoryQuery, Op: "sample 2024-03-09",
		Err: &warehouse.Error{Category: vocab.CategoryQuery, Err: errors.New("column foo does not exist")}}
	tests := []struct {
		name       string
		key        string
		ingestion  string
		body       string
		validator  *fakeValidator
		wantStatus int
		wantCall   *validateCall // the validator's one call; nil: not called
		wantJSON   map[string]any
	}{
		{name: "empty body takes the defaults", key: keyAlpha, ingestion: "ev_api", validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusOK, wantCall: &validateCall{"alpha", "ev_api", civil.Date{}, 0},
			wantJSON: map[string]any{"ok": true, "ingestion": "ev_api", "sample_rows": 3.0}},
		{name: "date and limit", key: keyAlpha, ingestion: "mt_api", body: `{"date": "2024-03-09", "limit": 50}`,
			validator: &fakeValidator{rep: okReport}, wantStatus: http.StatusOK,
			wantCall: &validateCall{"alpha", "mt_api", civil.Date{Year: 2024, Month: 3, Day: 9}, 50}},
		{name: "null fields are absent", key: keyAlpha, ingestion: "ev_api", body: `{"date": null, "limit": null}`,
			validator: &fakeValidator{rep: okReport}, wantStatus: http.StatusOK, wantCall: &validateCall{"alpha", "ev_api", civil.Date{}, 0}},
		{name: "mapping not ok is 422 with the report", key: keyAlpha, ingestion: "ev_api", validator: &fakeValidator{rep: badReport},
			wantStatus: http.StatusUnprocessableEntity, wantCall: &validateCall{"alpha", "ev_api", civil.Date{}, 0},
			wantJSON: map[string]any{"ok": false, "problems": []any{`event_name: column "name" is not in the query result`}}},
		{name: "warehouse failure is 502 with its category", key: keyAlpha, ingestion: "ev_api", validator: &fakeValidator{err: queryErr},
			wantStatus: http.StatusBadGateway, wantCall: &validateCall{"alpha", "ev_api", civil.Date{}, 0},
			wantJSON: map[string]any{"category": "QUERY_ERROR", "error": "QUERY_ERROR: column foo does not exist", "transient": false}},
		{name: "validator option error names the field", key: keyAlpha, ingestion: "ev_api",
			validator:  &fakeValidator{err: &validation.OptionError{Field: "date", Reason: "in the future"}},
			wantStatus: http.StatusBadRequest, wantCall: &validateCall{"alpha", "ev_api", civil.Date{}, 0},
			wantJSON: map[string]any{"field": "date"}},
		{name: "not a date", key: keyAlpha, ingestion: "ev_api", body: `{"date": "2024-02-30"}`, validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusBadRequest, wantJSON: map[string]any{"field": "date"}},
		{name: "date carrying SQL", key: keyAlpha, ingestion: "ev_api", body: `{"date": "2024-03-09' OR 1=1 --"}`, validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusBadRequest, wantJSON: map[string]any{"field": "date"}},
		{name: "date not a string", key: keyAlpha, ingestion: "ev_api", body: `{"date": 20240309}`, validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusBadRequest, wantJSON: map[string]any{"field": "date"}},
		{name: "limit too big", key: keyAlpha, ingestion: "ev_api", body: `{"limit": 5000}`, validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusBadRequest, wantJSON: map[string]any{"field": "limit", "reason": "want a whole number from 1 to 1000"}},
		{name: "limit zero", key: keyAlpha, ingestion: "ev_api", body: `{"limit": 0}`, validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusBadRequest, wantJSON: map[string]any{"field": "limit"}},
		{name: "limit not a number", key: keyAlpha, ingestion: "ev_api", body: `{"limit": "ten"}`, validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusBadRequest, wantJSON: map[string]any{"field": "limit"}},
		{name: "unknown field", key: keyAlpha, ingestion: "ev_api", body: `{"day": "2024-03-09"}`, validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusBadRequest, wantJSON: map[string]any{"field": "day"}},
		{name: "malformed JSON", key: keyAlpha, ingestion: "ev_api", body: `{"date":`, validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusBadRequest, wantJSON: map[string]any{"field": "body"}},
		{name: "another project's ingestion", key: keyAlpha, ingestion: "beta_ev_api", validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusNotFound, wantJSON: map[string]any{"field": "name"}},
		{name: "unknown ingestion", key: keyBeta, ingestion: "ev_api", validator: &fakeValidator{rep: okReport},
			wantStatus: http.StatusNotFound},
		{name: "no key", ingestion: "ev_api", validator: &fakeValidator{rep: okReport}, wantStatus: http.StatusUnauthorized},
		{name: "bad key", key: "sk_nope", ingestion: "ev_api", validator: &fakeValidator{rep: okReport}, wantStatus: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newValidateService(t, tt.validator)
			w := postValidate(t, h, tt.key, tt.ingestion, tt.body)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.wantStatus, w.Body)
			}
			if got := w.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("content type %q", got)
			}
			var body map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, w.Body)
			}
			for k, want := range tt.wantJSON {
				if got, _ := json.Marshal(body[k]); string(got) != mustJSON(t, want) {
					t.Errorf("%s = %s, want %s; body %s", k, got, mustJSON(t, want), w.Body)
				}
			}
			calls := tt.validator.calls
			switch {
			case tt.wantCall == nil && len(calls) > 0:
				t.Errorf("validator called %+v, want no call", calls)
			case tt.wantCall != nil && (len(calls) != 1 || calls[0] != *tt.wantCall):
				t.Errorf("validator calls %+v, want one call %+v", calls, *tt.wantCall)
			}
		})
	}
}

func TestValidateRouteNeedsAValidator(t *testing.T) {
	t.Parallel()
	withRoute := newValidateService(t, &fakeValidator{rep: mapping.Report{OK: true}})
	without := newValidateService(t, nil)
	tests := []struct {
		name   string
		h      http.Handler
		method string
		path   string
		want   int
	}{
		{"no validator: no route", without, http.MethodPost, "/v1/ingestions/ev_api/validate", http.StatusNotFound},
		{"other routes still served", withRoute, http.MethodGet, "/healthz", http.StatusOK},
		{"other v1 routes still authenticated", withRoute, http.MethodGet, "/v1/ingestions/status", http.StatusUnauthorized},
		{"GET is not the validate route", withRoute, http.MethodGet, "/v1/ingestions/ev_api/validate", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.want == http.StatusNotFound {
				req.Header.Set(keyHeader, keyAlpha)
			}
			w := httptest.NewRecorder()
			tt.h.ServeHTTP(w, req)
			if w.Code != tt.want {
				t.Errorf("%s %s: status %d, want %d; body %s", tt.method, tt.path, w.Code, tt.want, w.Body)
			}
		})
	}
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
