package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"cloud.google.com/go/civil"
	"github.com/alicebob/miniredis/v2"

	"github.com/sluicehq/sluice/pkg/apikey"
	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/services/planner"
	"github.com/sluicehq/sluice/services/trigger"
)

// devOptions are `sluice dev`'s flags.
type devOptions struct {
	kafkaAddr  string
	httpAddr   string
	apiKey     string
	once       bool
	configPath string
	dataDir    string
	days       int
	eventsDay  int
	timeout    time.Duration
	drain      time.Duration
	logLevel   string
	logFormat  string
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("dev", "Runs the whole system in one process: an embedded Kafka (kfake), embedded Redis-protocol state (miniredis),\n"+
		"a DuckDB demo warehouse seeded with generated data and an embedded DuckDB store, all on 127.0.0.1.", stderr)
	var o devOptions
	fs.StringVar(&o.kafkaAddr, "kafka-addr", "127.0.0.1:9092", "where the embedded Kafka broker listens")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "where the HTTP API listens")
	fs.StringVar(&o.apiKey, "api-key", "", "the dev project's API key (default: a new random key, printed)")
	fs.BoolVar(&o.once, "once", false, "load every due day of the scheduled ingestions, print a reconciliation table and exit (0 only if every day reconciles)")
	fs.StringVar(&o.configPath, "config", "", "use this config's connections, store and ingestions instead of the demo (Kafka and Redis stay embedded)")
	fs.StringVar(&o.dataDir, "data-dir", "", "where the demo warehouse and store live (default: a temporary folder removed on exit)")
	fs.IntVar(&o.days, "days", 7, "days of demo data to generate and catch up")
	fs.IntVar(&o.eventsDay, "events-per-day", 5000, "demo events per day")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "with --once: how long to wait for every day")
	// Shorter than sluice run's: an embedded stack on a laptop drains in
	// well under a second, and Ctrl-C should not feel stuck.
	fs.DurationVar(&o.drain, "drain-timeout", devDrainTimeout, "after Ctrl-C, how long each shutdown step (intake, extractors, mapper, loader, notifier) may drain")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level of the services (logs go to stderr)")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json (json is what sluice run writes)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if err := dev(ctx, o, stdout, stderr); err != nil {
		var fail reconcileError
		if errors.As(err, &fail) {
			fmt.Fprintln(stderr, "sluice dev:", err)
			return exitFailure
		}
		fmt.Fprintln(stderr, "sluice dev:", err)
		return exitUnhealthy
	}
	return exitOK
}

// devDrainTimeout is `sluice dev`'s --drain-timeout.
const devDrainTimeout = 10 * time.Second

type reconcileError struct{ bad int }

func (e reconcileError) Error() string { return fmt.Sprintf("%d day(s) did not reconcile", e.bad) }

func dev(ctx context.Context, o devOptions, stdout, stderr io.Writer) error {
	common := commonFlags{logLevel: o.logLevel, logFormat: o.logFormat}
	logger, err := common.logger(stderr)
	if err != nil {
		return err
	}
	dataDir := o.dataDir
	if dataDir == "" {
		if dataDir, err = os.MkdirTemp("", "sluice-dev-"); err != nil {
			return err
		}
		defer os.RemoveAll(dataDir)
	} else if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}

	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: o.kafkaAddr})
	if err != nil {
		return err
	}
	defer broker.Close()
	redisServer := miniredis.NewMiniRedis()
	if err := redisServer.StartAddr("127.0.0.1:0"); err != nil {
		return fmt.Errorf("start embedded redis: %w", err)
	}
	defer redisServer.Close()

	var settings *config.File
	var spec *demo.Spec
	key := o.apiKey
	if o.configPath != "" {
		if settings, err = config.Load(o.configPath); err != nil {
			return err
		}
		key = "(the keys of " + o.configPath + ")"
	} else {
		if key == "" {
			if key, err = apikey.Generate(); err != nil {
				return err
			}
		}
		hour := 0 // the demo's days are due as soon as the dev stack starts
		settings = demo.Config(demo.ConfigOptions{
			APIKey:     key,
			DuckDBPath: filepath.Join(dataDir, "warehouse.duckdb"),
			Store:      config.Store{Kind: "duckdb", Path: filepath.Join(dataDir, "store.duckdb")},
			HTTPAddr:   o.httpAddr,
			Pipeline:   config.Pipeline{CatchUpDays: o.days},
			Schedule:   &config.Schedule{Hour: &hour, Timezone: config.DefaultTimezone},
		})
		s, err := seedDemo(ctx, settings, o)
		if err != nil {
			return err
		}
		spec = &s
	}
	settings.Kafka.Brokers = broker.Addrs()
	settings.Redis.Addr = redisServer.Addr()
	settings.HTTP.Addr = o.httpAddr
	if err := settings.Validate(); err != nil {
		return err
	}

	in, err := NewInfra(ctx, settings, logger)
	if err != nil {
		return err
	}
	defer in.Close()
	// The embedded broker keeps its log in memory: keep an hour, at most
	// 64 MiB a partition, however many days are loaded.
	in.Kafka.Retention = time.Hour
	in.Kafka.RetentionBytes = 64 << 20
	services, err := Build(ctx, in, RunOptions{
		Targets:       Targets,
		PlannerTick:   2 * time.Second,
		WatcherTick:   time.Minute,
		TriggerConfig: trigger.Config{Addr: o.httpAddr},
		DrainTimeout:  o.drain,
	})
	if err != nil {
		return err
	}

	fmt.Fprintln(stdout, "Sluice dev stack")
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  Kafka (kfake)\t%s\ttopics: %s\n", strings.Join(broker.Addrs(), ","), strings.Join(kafka.AllTopics, ", "))
	fmt.Fprintf(tw, "  Redis (miniredis)\t%s\n", redisServer.Addr())
	for _, c := range settings.Connections {
		fmt.Fprintf(tw, "  Warehouse %s (%s)\t%s\n", c.Name, c.Kind, firstNonEmpty(c.Path, c.Host, c.DSNEnv, c.Account, c.ProjectID))
	}
	fmt.Fprintf(tw, "  Store (%s)\t%s\n", settings.Store.Kind, firstNonEmpty(settings.Store.Path, settings.Store.DSNEnv, "postgres"))
	fmt.Fprintf(tw, "  HTTP API\thttp://%s\n", o.httpAddr)
	fmt.Fprintf(tw, "  Console\thttp://%s/console (log in with the API key)\n", o.httpAddr)
	fmt.Fprintf(tw, "  API key\t%s\n", key)
	tw.Flush()
	if spec != nil {
		fmt.Fprintf(stdout, "  Demo data: %d days, %s to %s, %d events and %d metric rows a day (a few bad rows mixed in)\n",
			spec.Days, spec.FirstDay(), spec.LastDay, spec.EventsPerDay, spec.MetricsPerDay)
	}
	fmt.Fprintf(stdout, "\nTry:\n  curl -H 'statsig-api-key: %s' -H 'Content-Type: application/json' \\\n"+
		"       -d '{\"datestamps\": \"%s\", \"type\": \"events\"}' http://%s/v1/mark_data_ready_dwh\n"+
		"  curl -H 'statsig-api-key: %s' 'http://%s/v1/ingestions/status'\n\n",
		key, civil.DateOf(time.Now()).AddDays(-1), o.httpAddr, key, o.httpAddr)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- RunAll(runCtx, services, Shutdown{Bound: o.drain, Logger: logger}) }()

	expected, err := dueDemoDays(ctx, in, in.Settings.Pipeline.CatchUpDays)
	if err != nil {
		return err
	}
	progress := newProgress(stdout, len(expected))
	if !o.once {
		go progress.follow(runCtx, in, expected)
		fmt.Fprintln(stdout, "Loading the due days; Ctrl-C stops.")
		err := <-done
		return err
	}
	waitCtx, cancelWait := context.WithTimeout(ctx, o.timeout)
	defer cancelWait()
	progress.follow(waitCtx, in, expected)
	cancel()
	if err := <-done; err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	bad, err := printReconciliation(context.WithoutCancel(ctx), stdout, in, expected)
	if err != nil {
		return err
	}
	if bad > 0 {
		return reconcileError{bad: bad}
	}
	fmt.Fprintf(stdout, "\nAll %d days reconciled.\n", len(expected))
	return nil
}

// seedDemo writes the generated days into the demo DuckDB warehouse.
func seedDemo(ctx context.Context, settings *config.File, o devOptions) (demo.Spec, error) {
	conn := settings.Connections[0]
	ing := settings.Ingestions[0]
	_, last, err := planner.DueDays(&ing, time.Now(), 1)
	if err != nil {
		return demo.Spec{}, err
	}
	spec := demo.DefaultSpec(last.AddDays(1))
	spec.Days = o.days
	spec.EventsPerDay = o.eventsDay
	src, err := duckdb.Open(conn)
	if err != nil {
		return spec, err
	}
	defer src.Close()
	if _, err := demo.SeedDuckDB(ctx, src.DB(), spec); err != nil {
		return spec, fmt.Errorf("seed demo warehouse: %w", err)
	}
	return spec, nil
}

// dayRef names one day of one ingestion.
type dayRef struct {
	project, ingestion, typ string
	date                    civil.Date
	warehouse               int64
}

// dueDemoDays lists the days the planner's catch-up will load (n is the
// config's catch_up_days, which --days sets for the demo): due days of
// the daily ingestions that have rows in the warehouse.
func dueDemoDays(ctx context.Context, in *Infra, n int) ([]dayRef, error) {
	var out []dayRef
	for i := range in.Settings.Ingestions {
		ing := &in.Settings.Ingestions[i]
		if ing.Schedule.Mode != config.ScheduleDaily {
			continue
		}
		first, last, err := planner.DueDays(ing, in.Clock(), n)
		if err != nil {
			return nil, err
		}
		src, err := in.Sources.Source(ctx, ing.Connection)
		if err != nil {
			return nil, err
		}
		for d := first; !d.After(last); d = d.AddDays(1) {
			count, err := src.Count(ctx, ing.Query, d)
			if err != nil {
				return nil, fmt.Errorf("count %s on %s: %w", ing.Name, d, err)
			}
			if count > 0 {
				out = append(out, dayRef{project: ing.Project, ingestion: ing.Name, typ: ing.Type, date: d, warehouse: count})
			}
		}
	}
	return out, nil
}

// progress prints each day as it finishes.
type progress struct {
	w     io.Writer
	total int
	seen  map[string]bool
}

func newProgress(w io.Writer, total int) *progress {
	return &progress{w: w, total: total, seen: map[string]bool{}}
}

// follow polls the store until every expected day is finished or ctx ends.
func (p *progress) follow(ctx context.Context, in *Infra, expected []dayRef) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		finished := 0
		for _, ref := range expected {
			days, err := in.Store.Days(ctx, store.DayFilter{Project: ref.project, Ingestion: ref.ingestion, From: ref.date.String(), To: ref.date.String()})
			if err != nil || len(days) == 0 {
				continue
			}
			d := days[0]
			if !finishedStatus(d.Status) {
				continue
			}
			finished++
			k := ref.ingestion + "/" + d.Date
			if p.seen[k] {
				continue
			}
			p.seen[k] = true
			mark := "✓"
			if d.Status == vocab.StatusFailed {
				mark = "✗"
			}
			fmt.Fprintf(p.w, "  %s [%d/%d] %s %-18s %-18s %6d rows loaded, %d rejected\n", mark, len(p.seen), p.total, d.Date,
				ref.ingestion, d.Status, d.RowsLoaded, sum(d.Rejected))
		}
		if finished == len(expected) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func finishedStatus(s vocab.Status) bool {
	return s == vocab.StatusSuccessful || s == vocab.StatusLoadedEmpty || s == vocab.StatusFailed
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// printReconciliation prints the per-day table and returns how many days
// do not reconcile: warehouse rows = extracted = loaded + rejected.
func printReconciliation(ctx context.Context, w io.Writer, in *Infra, expected []dayRef) (int, error) {
	sort.Slice(expected, func(i, j int) bool {
		if expected[i].date != expected[j].date {
			return expected[i].date.Before(expected[j].date)
		}
		return expected[i].ingestion < expected[j].ingestion
	})
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATE\tINGESTION\tTYPE\tWAREHOUSE\tLOADED\tREJECTED\tBY REASON\tSTATUS\tOK")
	bad := 0
	for _, ref := range expected {
		days, err := in.Store.Days(ctx, store.DayFilter{Project: ref.project, Ingestion: ref.ingestion, From: ref.date.String(), To: ref.date.String()})
		if err != nil {
			return 0, err
		}
		var d store.Day
		if len(days) > 0 {
			d = days[0]
		}
		rejected := sum(d.Rejected)
		ok := (d.Status == vocab.StatusSuccessful || d.Status == vocab.StatusLoadedEmpty) &&
			d.Extracted == ref.warehouse && d.RowsLoaded+rejected == d.Extracted
		mark := "✓"
		if !ok {
			mark = "✗"
			bad++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", ref.date, ref.ingestion, ref.typ, ref.warehouse,
			d.RowsLoaded, rejected, reasons(d.Rejected), firstNonEmpty(string(d.Status), "NOT LOADED"), mark)
	}
	return bad, tw.Flush()
}

func reasons(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
