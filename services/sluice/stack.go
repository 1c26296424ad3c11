package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	daydispatch "github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/notify"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	pgstore "github.com/sluicehq/sluice/pkg/store/postgres"
	"github.com/sluicehq/sluice/pkg/validation"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/pkg/warehouse/postgres"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake"
	"github.com/sluicehq/sluice/schemas"
	"github.com/sluicehq/sluice/services/extractor"
	"github.com/sluicehq/sluice/services/loader"
	"github.com/sluicehq/sluice/services/mapper"
	"github.com/sluicehq/sluice/services/planner"
	"github.com/sluicehq/sluice/services/trigger"
	"github.com/sluicehq/sluice/services/watcher"
)

// Targets are the services `sluice run --target` can start.
var Targets = []string{"planner", "extractor", "mapper", "loader", "watcher", "trigger"}

// parseTargets expands "all" and checks every name.
func parseTargets(spec string) ([]string, error) {
	var out []string
	for _, t := range strings.Split(spec, ",") {
		t = strings.TrimSpace(t)
		switch {
		case t == "all":
			return slices.Clone(Targets), nil
		case slices.Contains(Targets, t):
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		case t == "":
		default:
			return nil, fmt.Errorf("unknown target %q: want one or more of %s, or all", t, strings.Join(Targets, ", "))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no target given: want one or more of " + strings.Join(Targets, ", ") + ", or all")
	}
	return out, nil
}

// Openers are the warehouse kinds built into this binary.
func Openers() map[string]warehouse.Opener {
	pg := func(ctx context.Context, c config.Connection) (warehouse.Source, error) { return postgres.Open(ctx, c) }
	return map[string]warehouse.Opener{
		"duckdb":   func(_ context.Context, c config.Connection) (warehouse.Source, error) { return duckdb.Open(c) },
		"postgres": pg,
		"redshift": pg,
		"snowflake": func(ctx context.Context, c config.Connection) (warehouse.Source, error) {
			return snowflake.Open(ctx, c)
		},
		"bigquery": func(ctx context.Context, c config.Connection) (warehouse.Source, error) { return bigquery.Open(ctx, c) },
	}
}

// Infra is what every service of a process shares.
type Infra struct {
	Settings *config.File
	Kafka    kafka.Config
	Redis    redis.UniversalClient
	State    *state.State
	Store    store.Store
	Sources  *warehouse.Pool
	Codecs   *schemas.Codecs
	Logger   *slog.Logger
	Registry *prometheus.Registry
	Clock    func() time.Time
}

// openStore opens and migrates the configured event store.
func openStore(ctx context.Context, s config.Store, logger *slog.Logger) (store.Store, error) {
	var st store.Store
	switch s.Kind {
	case "duckdb":
		d, err := duckstore.Open(ctx, s.Path, duckstore.Options{Logger: logger})
		if err != nil {
			return nil, err
		}
		st = d
	case "postgres":
		dsn := s.DSN
		if s.DSNEnv != "" {
			dsn = os.Getenv(s.DSNEnv)
			if dsn == "" {
				return nil, fmt.Errorf("store.dsn_env: environment variable %s is empty", s.DSNEnv)
			}
		}
		p, err := pgstore.Open(ctx, dsn, pgstore.Options{Schema: s.Schema, Logger: logger})
		if err != nil {
			return nil, err
		}
		st = p
	default:
		return nil, fmt.Errorf("store.kind %q: want duckdb or postgres", s.Kind)
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("migrate store: %w", err)
	}
	return st, nil
}

// NewInfra connects everything the settings name. The caller closes it.
func NewInfra(ctx context.Context, settings *config.File, logger *slog.Logger) (*Infra, error) {
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := &redis.Options{Addr: settings.Redis.Addr, DB: settings.Redis.DB}
	if settings.Redis.PasswordEnv != "" {
		opts.Password = os.Getenv(settings.Redis.PasswordEnv)
	}
	rdb := redis.NewClient(opts)
	st, err := openStore(ctx, settings.Store, logger)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	k := settings.Kafka
	return &Infra{
		Settings: settings,
		Kafka: kafka.Config{Brokers: k.Brokers, Partitions: k.Partitions, ReplicationFactor: k.ReplicationFactor,
			Retention: k.Retention, TopicPrefix: k.TopicPrefix},
		Redis:    rdb,
		State:    state.New(rdb, state.Options{}),
		Store:    st,
		Sources:  warehouse.NewPool(settings.Connections, Openers()),
		Codecs:   codecs,
		Logger:   logger,
		Registry: reg,
		Clock:    time.Now,
	}, nil
}

// Close releases every connection.
func (in *Infra) Close() error {
	return errors.Join(in.Sources.Close(), in.Store.Close(), in.Redis.Close())
}

// RunOptions tune the services of one process.
type RunOptions struct {
	Targets       []string
	Extractor     extractor.Config
	PlannerTick   time.Duration
	WatcherTick   time.Duration
	LoaderOnDone  func(ctx context.Context, end store.RunEnd, outcome store.Outcome)
	TriggerConfig trigger.Config
	// TriggerListener, when set, is where the trigger serves instead of
	// listening on its configured address (tests, port 0).
	TriggerListener net.Listener
	// DrainTimeout is each service's drain bound once told to stop
	// (--drain-timeout); pass the same to RunAll's Shutdown.Bound.
	DrainTimeout time.Duration
}

// Build creates the selected services on in.
func Build(ctx context.Context, in *Infra, o RunOptions) ([]runnable, error) {
	if err := ensureTopics(ctx, in); err != nil {
		return nil, err
	}
	p := in.Settings.Pipeline
	drain := o.DrainTimeout
	if drain <= 0 {
		drain = DefaultDrainTimeout
	}
	var out []runnable
	// One dispatcher publishes (planner, trigger); the services that only
	// claim, ask or release (extractor, watcher, loader) share one without
	// a Kafka client.
	dispatchCfg := daydispatch.Config{LeaseTTL: p.LeaseTTL, RetryBackoff: o.Extractor.RetryBackoff}
	days, err := newDispatch(in, dispatchCfg, nil)
	if err != nil {
		return nil, err
	}
	var dispatcher *daydispatch.Dispatcher
	dispatcherFor := func() (*daydispatch.Dispatcher, error) {
		if dispatcher != nil {
			return dispatcher, nil
		}
		cl, err := kafka.NewClient(in.Kafka, "dispatcher", in.Logger, in.Registry)
		if err != nil {
			return nil, err
		}
		// Closed after intake (trigger, planner) has stopped dispatching.
		out = append(out, runnable{name: "dispatcher", stop: stageClients,
			run: func(ctx context.Context) error { <-ctx.Done(); cl.Close(); return nil }})
		dispatcher, err = newDispatch(in, dispatchCfg, cl)
		return dispatcher, err
	}
	for _, t := range o.Targets {
		log := in.Logger.With("service", t)
		switch t {
		case "planner":
			d, err := dispatcherFor()
			if err != nil {
				return nil, err
			}
			svc, err := planner.New(planner.Config{Tick: o.PlannerTick, CatchUpDays: p.CatchUpDays, Window: p.ScheduleWindow, CheckEvery: p.ScheduleCheckEvery,
				DrainTimeout: drain},
				planner.Deps{Kafka: in.Kafka, Codecs: in.Codecs, Settings: in.Settings, Store: in.Store, State: in.State,
					Sources: in.Sources, Dispatcher: d, Logger: log, Clock: in.Clock, Registry: in.Registry})
			if err != nil {
				return nil, err
			}
			out = append(out, runnable{name: t, stop: stageIntake, run: svc.Run})
		case "extractor":
			cfg := o.Extractor
			if cfg.BatchRows == 0 {
				cfg.BatchRows = p.BatchRows
			}
			if cfg.DrainTimeout == 0 {
				cfg.DrainTimeout = drain
			}
			svc, err := extractor.New(cfg, extractor.Deps{Kafka: in.Kafka, Codecs: in.Codecs, Sources: in.Sources,
				Settings: in.Settings, Store: in.Store, Dispatcher: days, Logger: log, Clock: in.Clock, Registry: in.Registry})
			if err != nil {
				return nil, err
			}
			out = append(out, runnable{name: t, stop: stageExtract, run: svc.Run})
		case "mapper":
			svc, err := mapper.New(mapper.Config{DrainTimeout: drain}, mapper.Deps{Kafka: in.Kafka, Codecs: in.Codecs, Settings: in.Settings,
				Logger: log, Clock: in.Clock, Registry: in.Registry})
			if err != nil {
				return nil, err
			}
			out = append(out, runnable{name: t, stop: stageMap, run: svc.Run})
		case "loader":
			notifier, err := notifierFor(in, log, drain)
			if err != nil {
				return nil, err
			}
			out = append(out, notifier)
			svc, err := loader.New(loader.Config{MaxRejectedShare: p.MaxRejectedShare, DrainTimeout: drain}, loader.Deps{Kafka: in.Kafka,
				Codecs: in.Codecs, Store: in.Store, Dispatcher: days, Logger: log, Clock: in.Clock, Registry: in.Registry,
				OnDayDone: o.LoaderOnDone})
			if err != nil {
				return nil, err
			}
			out = append(out, runnable{name: t, stop: stageLoad, run: svc.Run})
		case "watcher":
			svc, err := watcher.New(watcher.Config{Days: p.WatchDays, Interval: p.WatchInterval, Threshold: p.ReloadThreshold, Tick: o.WatcherTick},
				watcher.Deps{Kafka: in.Kafka, Codecs: in.Codecs, Settings: in.Settings, Store: in.Store, State: in.State,
					Dispatcher: days, Sources: in.Sources, Logger: log, Clock: in.Clock, Registry: in.Registry})
			if err != nil {
				return nil, err
			}
			out = append(out, runnable{name: t, stop: stageIntake, run: svc.Run})
		case "trigger":
			d, err := dispatcherFor()
			if err != nil {
				return nil, err
			}
			tcfg := o.TriggerConfig
			if tcfg.ShutdownTimeout == 0 {
				tcfg.ShutdownTimeout = drain
			}
			svc, err := trigger.New(tcfg, trigger.Deps{Config: in.Settings, Store: in.Store, State: in.State,
				Dispatcher: d, Logger: log, Clock: in.Clock, Registry: in.Registry,
				Validator: validateAdapter{validation.New(validation.Deps{Settings: in.Settings, Sources: in.Sources, Clock: in.Clock})}})
			if err != nil {
				return nil, err
			}
			run := svc.Run
			if ln := o.TriggerListener; ln != nil {
				run = func(ctx context.Context) error { return svc.Serve(ctx, ln) }
			}
			out = append(out, runnable{name: t, stop: stageIntake, run: run})
		}
	}
	if groups := consumerGroups(o); len(groups) > 0 {
		lag, err := lagMonitor(in, groups)
		if err != nil {
			return nil, err
		}
		out = append(out, lag)
	}
	return out, nil
}

// consumerGroups are the groups of the selected consumer services, whose
// lag this process exports.
func consumerGroups(o RunOptions) []string {
	var groups []string
	for _, t := range o.Targets {
		switch t {
		case "planner":
			groups = append(groups, "sluice-planner")
		case "extractor":
			groups = append(groups, o.Extractor.GroupName())
		case "mapper":
			groups = append(groups, "sluice-mapper")
		case "loader":
			groups = append(groups, "sluice-loader")
		}
	}
	return groups
}

// lagMonitor exports sluice_kafka_consumer_lag for groups.
func lagMonitor(in *Infra, groups []string) (runnable, error) {
	cl, err := kafka.NewClient(in.Kafka, "lag", in.Logger, nil)
	if err != nil {
		return runnable{}, err
	}
	m, err := kafka.NewLagMonitor(cl, groups, 15*time.Second, in.Registry, in.Logger.With("service", "lag"))
	if err != nil {
		cl.Close()
		return runnable{}, err
	}
	return runnable{name: "lag", stop: stageClients, run: func(ctx context.Context) error { defer cl.Close(); return m.Run(ctx) }}, nil
}

// notifierFor is the notifier that runs beside the loader: it delivers
// the webhook notifications of the runs the loader ends, from the store's
// outbox, and marks the runs of projects without a webhook.
func notifierFor(in *Infra, log *slog.Logger, drain time.Duration) (runnable, error) {
	n, err := notify.New(notify.Config{DrainTimeout: drain}, notify.Deps{Settings: in.Settings, Store: in.Store,
		Logger: log.With("component", "notify"), Registry: in.Registry, Now: in.Clock})
	if err != nil {
		return runnable{}, err
	}
	return runnable{name: "notifier", stop: stageNotify, run: n.Run}, nil
}

func ensureTopics(ctx context.Context, in *Infra) error {
	cl, err := kafka.NewClient(in.Kafka, "admin", in.Logger, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return kafka.EnsureTopics(ctx, cl, in.Kafka, kafka.AllTopics...)
}

// newDispatch is the dispatcher on in's store and state; cl (nil for one
// that only claims, asks and releases) is its producing client.
func newDispatch(in *Infra, cfg daydispatch.Config, cl *kgo.Client) (*daydispatch.Dispatcher, error) {
	return daydispatch.New(cfg, daydispatch.Deps{Client: cl, Kafka: in.Kafka, Codecs: in.Codecs, Settings: in.Settings,
		Store: in.Store, State: in.State, Logger: in.Logger.With("component", "dispatch"), Clock: in.Clock})
}

// storeProbe is the cheapest store read: readiness only needs an answer.
// The space makes it a project name no config can hold; PostgreSQL
// rejects a NUL byte in text, so that cannot be the marker.
var storeProbe = store.RunFilter{Project: " probe", Limit: 1}
