package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	rpprof "runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/services/extractor"
)

// commonFlags are the flags every verb that reads the config shares.
type commonFlags struct {
	configPath string
	logLevel   string
	logFormat  string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.configPath, "config", "sluice.yaml", "the Sluice config file")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "json or text")
}

func (c *commonFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch c.logFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", c.logFormat)
}

// newFlagSet makes a verb's flag set that prints its usage to stderr.
func newFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sluice %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; it returns the exit code to stop with, or -1.
func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return exitUsage
	}
	return -1
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runServices(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("run", "Runs the chosen services against the Kafka, Redis, store and warehouses in the config file.", stderr)
	var common commonFlags
	common.register(fs)
	target := fs.String("target", "all", "comma-separated services to run: "+strings.Join(Targets, ", ")+", or all")
	connections := fs.String("connections", "", "extractor: serve only these connections (comma-separated)")
	kinds := fs.String("kinds", "", "extractor: serve only connections of these warehouse kinds (comma-separated)")
	adminAddr := fs.String("admin-addr", "127.0.0.1:9464", "where /metrics, /healthz and /readyz listen (processes without the trigger service)")
	pprofAddr := fs.String("pprof-addr", "", "where net/http/pprof listens (off when empty; keep it on loopback)")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile of the whole run to this file (for `go tool pprof`)")
	drain := fs.Duration("drain-timeout", DefaultDrainTimeout, "after SIGTERM services stop in order (intake, extractors, mapper, loader, notifier, clients);\n"+
		"each step's in-flight work may take this long, then has "+DefaultStopGrace.String()+" to commit and close before shutdown moves on")
	plannerTick := fs.Duration("planner-tick", 0, "planner: how often schedules and queued requests are looked at (default 30s)")
	watcherTick := fs.Duration("watcher-tick", 0, "watcher: how often it looks for days due a re-count (default 1m)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	targets, err := parseTargets(*target)
	if err != nil {
		fmt.Fprintln(stderr, "sluice run:", err)
		return exitUsage
	}
	if *cpuProfile != "" {
		stopProfile, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "sluice run:", err)
			return exitUsage
		}
		defer stopProfile()
	}
	logger, err := common.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "sluice run:", err)
		return exitUsage
	}
	settings, err := config.Load(common.configPath)
	if err != nil {
		fmt.Fprintln(stderr, "sluice run:", err)
		return exitConfig
	}
	in, err := NewInfra(ctx, settings, logger)
	if err != nil {
		fmt.Fprintln(stderr, "sluice run:", err)
		return exitUnhealthy
	}
	defer in.Close()
	services, err := Build(ctx, in, RunOptions{
		Targets:      targets,
		Extractor:    extractor.Config{Connections: splitList(*connections), Kinds: splitList(*kinds), DrainTimeout: *drain},
		PlannerTick:  *plannerTick,
		WatcherTick:  *watcherTick,
		DrainTimeout: *drain,
	})
	if err != nil {
		fmt.Fprintln(stderr, "sluice run:", err)
		return exitUnhealthy
	}
	if !slices.Contains(targets, "trigger") {
		admin, err := adminServer(*adminAddr, in, *drain)
		if err != nil {
			fmt.Fprintln(stderr, "sluice run:", err)
			return exitUnhealthy
		}
		services = append(services, admin)
	}
	if *pprofAddr != "" {
		services = append(services, pprofServer(*pprofAddr, *drain))
	}
	logger.Info("sluice running", "targets", strings.Join(targets, ","), "brokers", strings.Join(in.Kafka.Brokers, ","))
	if err := RunAll(ctx, services, Shutdown{Bound: *drain, Logger: logger}); err != nil {
		logger.Error("sluice stopped", "err", err)
		return exitFailure
	}
	return exitOK
}

// startCPUProfile profiles the process until the returned func is called:
// unlike /debug/pprof/profile it needs no duration known in advance, so a
// bench can profile exactly one run from start to SIGTERM.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := rpprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		rpprof.StopCPUProfile()
		f.Close()
	}, nil
}

// adminServer serves /metrics, /healthz and /readyz for processes that do
// not run the trigger service (which serves them itself).
func adminServer(addr string, in *Infra, drain time.Duration) (runnable, error) {
	// A client of its own, so readiness asks the brokers rather than the
	// metadata cache of a busy consumer.
	cl, err := kafka.NewClient(in.Kafka, "readyz", in.Logger, nil)
	if err != nil {
		return runnable{}, fmt.Errorf("admin kafka client: %w", err)
	}
	admin := httpRunnable("admin", addr, adminHandler(in, cl.Ping), 30*time.Second, drain)
	serve := admin.run
	admin.run = func(ctx context.Context) error {
		defer cl.Close()
		return serve(ctx)
	}
	return admin, nil
}

// httpRunnable serves handler on addr until ctx is cancelled, then lets
// in-flight requests finish for at most drain; a zero writeTimeout leaves
// responses unbounded. It stops last (stageServers).
func httpRunnable(name, addr string, handler http.Handler, writeTimeout, drain time.Duration) runnable {
	srv := &http.Server{Addr: addr, Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: writeTimeout}
	return runnable{name: name, stop: stageServers, run: func(ctx context.Context) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s listener: %w", name, err)
		}
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("serve %s on %s: %w", name, ln.Addr(), err)
		case <-ctx.Done():
		}
		// Serve returns as soon as Shutdown starts; Shutdown is what waits
		// for the requests in flight.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close() // a profile still streaming: cut it
		}
		<-errc
		return nil
	}}
}

// pprofServer serves net/http/pprof on a mux of its own, apart from the
// admin endpoints, so profiling is opt-in and never on the metrics port.
func pprofServer(addr string, drain time.Duration) runnable {
	// No write timeout: a CPU profile or trace streams for its seconds.
	return httpRunnable("pprof", addr, pprofMux(), 0, drain)
}

func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// adminHandler answers /readyz 200 only when Redis, the store and Kafka
// (pingKafka: a metadata request) answer within two seconds.
func adminHandler(in *Infra, pingKafka func(context.Context) error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(in.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		checks := []struct {
			name string
			ping func(context.Context) error
		}{
			{"redis", in.State.Ping},
			{"store", func(ctx context.Context) error { _, err := in.Store.Runs(ctx, storeProbe); return err }},
			{"kafka", pingKafka},
		}
		for _, c := range checks {
			if err := c.ping(ctx); err != nil {
				in.Logger.Warn("not ready", "dependency", c.name, "err", err)
				http.Error(w, c.name+" is not answering", http.StatusServiceUnavailable)
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	})
	return mux
}
