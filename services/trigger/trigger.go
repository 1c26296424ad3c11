// Package trigger is Sluice's HTTP service: mark_data_ready_dwh (drop-in
// compatible with the seed product), backfills, and the status, runs and
// usage of a project's days. Every /v1 route is authenticated by a project
// key and sees only that project.
package trigger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/pkg/apikey"
	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
)

// Dispatcher starts runs: *dispatch.Dispatcher, the one door through
// which a day's run starts.
type Dispatcher interface {
	Dispatch(ctx context.Context, r dispatch.Request) (runID string, err error)
}

// Config tunes the service. Zero values take the defaults below.
type Config struct {
	// Addr to listen on; default the config file's http.addr.
	Addr string
	// RateLimitWindow between accepted mark_data_ready calls per project
	// and type; default the config file's pipeline.rate_limit_window (2h).
	RateLimitWindow time.Duration
	// MaxBodyBytes caps a request body (default 64 KiB); more is a 413.
	MaxBodyBytes int64
	// MaxDates per mark_data_ready call (default 31).
	MaxDates int
	// MaxBackfillDays per backfill call (default 366).
	MaxBackfillDays int
	// DispatchTimeout bounds starting the runs of one call (default 30s).
	DispatchTimeout time.Duration
	// Server timeouts, so slow clients cannot pin connections.
	ReadHeaderTimeout time.Duration // default 5s
	ReadTimeout       time.Duration // default 15s
	WriteTimeout      time.Duration // default 60s
	IdleTimeout       time.Duration // default 120s
	// ShutdownTimeout bounds the drain of in-flight requests (default 10s).
	ShutdownTimeout time.Duration

	// ConsoleSessionKey signs console session cookies; replicas behind
	// one address must share it. Default: random per process.
	ConsoleSessionKey []byte
	// ConsoleSessionTTL is how long a console login lasts (default 12h).
	ConsoleSessionTTL time.Duration
	// ConsoleSecureCookies marks session cookies Secure even on plain
	// HTTP (behind a TLS-terminating proxy); they are on TLS anyway.
	ConsoleSecureCookies bool
	// ConsoleDays is how many days the console's grid shows (default 30).
	ConsoleDays int
}

// Deps are the service's collaborators.
type Deps struct {
	Config     *config.File
	Store      store.Store
	State      *state.State
	Dispatcher Dispatcher
	Logger     *slog.Logger
	Clock      func() time.Time
	// Registry gets the service's metrics; /metrics serves it when it is
	// also a prometheus.Gatherer (as *prometheus.Registry is).
	Registry prometheus.Registerer
	// Validator, when set, serves POST /v1/ingestions/{name}/validate.
	Validator Validator
}

// Service is the trigger HTTP service.
type Service struct {
	cfg      Config
	file     *config.File
	store    store.Store
	state    *state.State
	dispatch Dispatcher
	log      *slog.Logger
	now      func() time.Time
	keys     *apikey.Resolver
	metrics  *metrics
	console  *console
	// validator, when set, also backs the console's validation button.
	validator Validator
	gatherer  prometheus.Gatherer
	handler   http.Handler
}

// New checks the dependencies and builds the routes.
func New(cfg Config, deps Deps) (*Service, error) {
	switch {
	case deps.Config == nil:
		return nil, errors.New("new trigger service: Deps.Config is required")
	case deps.Store == nil:
		return nil, errors.New("new trigger service: Deps.Store is required")
	case deps.State == nil:
		return nil, errors.New("new trigger service: Deps.State is required")
	case deps.Dispatcher == nil:
		return nil, errors.New("new trigger service: Deps.Dispatcher is required")
	}
	cfg.applyDefaults(deps.Config)
	keys, err := apikey.NewResolver(deps.Config.Projects)
	if err != nil {
		return nil, fmt.Errorf("new trigger service: %w", err)
	}
	s := &Service{
		cfg:      cfg,
		file:     deps.Config,
		store:    deps.Store,
		state:    deps.State,
		dispatch: deps.Dispatcher,
		log:      deps.Logger,
		now:      deps.Clock,
		keys:     keys,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	reg := deps.Registry
	if reg == nil {
		r := prometheus.NewRegistry()
		reg = r
	}
	if g, ok := reg.(prometheus.Gatherer); ok {
		s.gatherer = g
	}
	if s.metrics, err = newMetrics(reg); err != nil {
		return nil, fmt.Errorf("new trigger service: %w", err)
	}
	if s.console, err = newConsole(cfg); err != nil {
		return nil, fmt.Errorf("new trigger service: %w", err)
	}
	s.validator = deps.Validator
	s.handler = s.routes()
	if deps.Validator != nil {
		s.handler = s.withValidate(s.handler, deps.Validator)
	}
	return s, nil
}

func (c *Config) applyDefaults(f *config.File) {
	if c.Addr == "" {
		c.Addr = f.HTTP.Addr
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.RateLimitWindow == 0 {
		c.RateLimitWindow = f.Pipeline.RateLimitWindow
	}
	if c.RateLimitWindow == 0 {
		c.RateLimitWindow = 2 * time.Hour
	}
	setDefault(&c.MaxBodyBytes, 64<<10)
	setDefault(&c.MaxDates, 31)
	setDefault(&c.MaxBackfillDays, 366)
	setDefault(&c.DispatchTimeout, 30*time.Second)
	setDefault(&c.ReadHeaderTimeout, 5*time.Second)
	setDefault(&c.ReadTimeout, 15*time.Second)
	setDefault(&c.WriteTimeout, 60*time.Second)
	setDefault(&c.IdleTimeout, 120*time.Second)
	setDefault(&c.ShutdownTimeout, 10*time.Second)
	setDefault(&c.ConsoleDays, defaultGridDays)
	c.ConsoleDays = min(c.ConsoleDays, maxGridDays)
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Handler serves every route; tests drive it with httptest.
func (s *Service) Handler() http.Handler { return s.handler }

// Run listens on Config.Addr and serves until ctx is cancelled, then drains
// in-flight requests for at most ShutdownTimeout. It returns nil on
// cancellation.
func (s *Service) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened; it closes ln.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	srv := s.server()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("trigger listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if serveErr := <-errc; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), serveErr)
	}
	if err != nil {
		srv.Close()
		return fmt.Errorf("shut down http server: %w", err)
	}
	return nil
}

func (s *Service) server() *http.Server {
	return &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}
