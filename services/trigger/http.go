package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Headers a key may come in: the seed product's, and the usual bearer.
const (
	keyHeader  = "statsig-api-key"
	authHeader = "Authorization"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sluice", Subsystem: "trigger", Name: "http_requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sluice", Subsystem: "trigger", Name: "http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register trigger metrics: %w", err)
		}
	}
	return m, nil
}

// reqInfo is filled in while a request is handled and logged at its end.
type reqInfo struct {
	route   string
	project string
}

type infoKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	if i, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		return i
	}
	return &reqInfo{}
}

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, authed bool, h func(http.ResponseWriter, *http.Request)) {
		var hh http.Handler = http.HandlerFunc(h)
		if authed {
			hh = s.authenticate(hh)
		}
		mux.Handle(pattern, named(pattern, hh))
	}
	handle("POST /v1/mark_data_ready_dwh", true, s.markDataReady)
	handle("POST /v1/ingestions/backfill", true, s.backfill)
	handle("GET /v1/ingestions/status", true, s.status)
	handle("GET /v1/ingestions/runs", true, s.runs)
	handle("GET /v1/ingestions/runs/{id}", true, s.run)
	handle("GET /v1/ingestions/usage", true, s.usage)
	handle("GET /healthz", false, s.healthz)
	handle("GET /readyz", false, s.readyz)
	s.consoleRoutes(func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, named(pattern, h)) })
	if s.gatherer != nil {
		mux.Handle("GET /metrics", named("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{})))
	}
	// Anything else under /v1 still needs a key: an unauthenticated caller
	// learns nothing about which routes exist.
	mux.Handle("/v1/", named("/v1/", s.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Error: "no such route", Reason: r.Method + " " + r.URL.Path + " is not a route"})
	}))))
	return s.observe(mux)
}

func named(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		infoFrom(r.Context()).route = route
		h.ServeHTTP(w, r)
	})
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe logs and counts every request. It logs the route, never the
// headers or the query, so a key cannot reach the log.
func (s *Service) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		info := &reqInfo{route: "unmatched"}
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
		sw := &statusWriter{ResponseWriter: w}
		sw.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		elapsed := s.now().Sub(start)
		code := strconv.Itoa(sw.code)
		s.metrics.requests.WithLabelValues(info.route, code).Inc()
		s.metrics.duration.WithLabelValues(info.route).Observe(elapsed.Seconds())
		s.log.Info("http request",
			"method", r.Method,
			"route", info.route,
			"code", sw.code,
			"project", info.project,
			"duration_ms", float64(elapsed.Microseconds())/1000)
	})
}

type projectKey struct{}

func projectFrom(ctx context.Context) string {
	p, _ := ctx.Value(projectKey{}).(string)
	return p
}

// authenticate resolves the key to its project or answers 401.
func (s *Service) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(keyHeader)
		if key == "" {
			if v, ok := strings.CutPrefix(r.Header.Get(authHeader), "Bearer "); ok {
				key = strings.TrimSpace(v)
			}
		}
		if key == "" {
			writeError(w, &apiError{Status: http.StatusUnauthorized, Error: "unauthorized", Field: keyHeader,
				Reason: "missing api key: send it in the statsig-api-key header or as Authorization: Bearer"})
			return
		}
		project, ok := s.keys.Resolve(key)
		if !ok {
			writeError(w, &apiError{Status: http.StatusUnauthorized, Error: "unauthorized", Field: keyHeader,
				Reason: "unknown api key"})
			return
		}
		infoFrom(r.Context()).project = project
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), projectKey{}, project)))
	})
}

// readBody reads at most MaxBodyBytes; more is a 413.
func (s *Service) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			reason := fmt.Sprintf("the body is larger than %d bytes", s.cfg.MaxBodyBytes)
			return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Error: "body too large: " + reason, Field: "body", Reason: reason}
		}
		return nil, badField("body", "could not read the body")
	}
	return body, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The status is out; an encode error can only mean the client left.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.FormatInt(e.RetryAfter, 10))
	}
	writeJSON(w, e.Status, e)
}

// internalError logs err (which never holds a key) and answers 500 or 503
// without details.
func (s *Service) internalError(w http.ResponseWriter, r *http.Request, status int, doing string, err error) {
	s.log.Error(doing, "route", infoFrom(r.Context()).route, "project", projectFrom(r.Context()), "err", err)
	writeError(w, &apiError{Status: status, Error: http.StatusText(status), Reason: doing + " did not succeed; retry later"})
}

// retrySeconds rounds a wait up to whole seconds, at least 1.
func retrySeconds(d time.Duration) int64 {
	secs := int64((d + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return secs
}
