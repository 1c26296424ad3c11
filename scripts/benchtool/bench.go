package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"cloud.google.com/go/civil"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/state"
	pgstore "github.com/sluicehq/sluice/pkg/store/postgres"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// benchDay is far from today so the planner's catch-up never touches it.
var benchDay = civil.Date{Year: 2024, Month: 3, Day: 14}

// Environment variables the service processes read their DSNs from.
const (
	envStoreDSN     = "SLUICE_BENCH_STORE_DSN"
	envWarehouseDSN = "SLUICE_BENCH_WAREHOUSE_DSN"
)

// topicRetention keeps the kfake broker's in-memory log bounded: it drops
// segments older than this on its once-a-minute cleaner pass.
const topicRetention = time.Minute

type bench struct {
	o       Options
	log     *slog.Logger
	dir     string
	ownDir  bool
	dbName  string
	dbURL   string
	admin   *pgxpool.Pool // the server's default database: create/drop
	db      *pgxpool.Pool // the bench database: warehouse schemas and stores
	rdb     *redis.Client
	broker  *proc
	brokers []string
	seeded  map[string]bool
	seq     int
	machine Machine
}

func newBench(ctx context.Context, o Options, logger *slog.Logger) (*bench, error) {
	b := &bench{o: o, log: logger, dir: o.WorkDir, seeded: map[string]bool{}}
	if b.dir == "" {
		d, err := os.MkdirTemp("", "sluice-bench-")
		if err != nil {
			return nil, err
		}
		b.dir, b.ownDir = d, true
	}
	if err := b.setup(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *bench) setup(ctx context.Context) error {
	admin, err := pgxpool.New(ctx, b.o.PGURL)
	if err == nil {
		err = admin.Ping(ctx)
	}
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL at %s: %w", b.o.PGURL, err)
	}
	b.admin = admin
	b.dbName = fmt.Sprintf("sluice_bench_%d", time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+b.dbName); err != nil {
		return fmt.Errorf("create bench database: %w", err)
	}
	u, err := url.Parse(b.o.PGURL)
	if err != nil {
		return fmt.Errorf("parse --pg: %w", err)
	}
	u.Path = "/" + b.dbName
	b.dbURL = u.String()
	// The direct copy opens the PostgreSQL warehouse in this process.
	if err := os.Setenv(envWarehouseDSN, b.dbURL); err != nil {
		return err
	}
	if b.db, err = pgxpool.New(ctx, b.dbURL); err != nil {
		return fmt.Errorf("connect to bench database: %w", err)
	}
	b.rdb = redis.NewClient(&redis.Options{Addr: b.o.RedisAddr, DB: b.o.RedisDB})
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("connect to Redis at %s: %w", b.o.RedisAddr, err)
	}
	if b.machine, err = describeMachine(ctx, b.db); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	b.broker, err = startProc(ctx, "broker", b.o.Sluice, []string{"kafka", "--addr", addr}, nil, filepath.Join(b.dir, "broker.log"))
	if err != nil {
		return err
	}
	if err := waitDial(ctx, addr, 30*time.Second); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	b.brokers = []string{addr}
	return nil
}

// Close stops the broker and drops everything the bench created.
func (b *bench) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if b.broker != nil {
		b.broker.stop(10 * time.Second)
	}
	if b.db != nil {
		b.db.Close()
	}
	if b.rdb != nil {
		errs = append(errs, b.cleanRedis(ctx))
		b.rdb.Close()
	}
	if b.admin != nil {
		if b.dbName != "" {
			if _, err := b.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+b.dbName+" WITH (FORCE)"); err != nil {
				errs = append(errs, fmt.Errorf("drop bench database: %w", err))
			}
		}
		b.admin.Close()
	}
	if b.ownDir && !b.o.KeepLogs && !b.o.Profile {
		errs = append(errs, os.RemoveAll(b.dir))
	} else {
		b.log.Info("bench files kept", "dir", b.dir)
	}
	return errors.Join(errs...)
}

// cleanRedis deletes the coordination keys the runs left in the bench's
// Redis database (leases are released, but dedupe keys stay).
func (b *bench) cleanRedis(ctx context.Context) error {
	iter := b.rdb.Scan(ctx, 0, state.DefaultPrefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("clean redis: %w", err)
	}
	if len(keys) > 0 {
		return b.rdb.Del(ctx, keys...).Err()
	}
	return nil
}

// seed generates the bench day of rows in warehouse wh, once.
func (b *bench) seed(ctx context.Context, wh string, rows int) error {
	key := wh + "/" + strconv.Itoa(rows)
	if b.seeded[key] {
		return nil
	}
	start := time.Now()
	spec := demo.BenchSpec(benchDay, rows)
	var err error
	switch wh {
	case "duckdb":
		_, err = demo.SeedDuckDBFile(ctx, b.duckPath(rows), spec)
	case "postgres":
		_, err = demo.SeedPostgres(ctx, b.db, b.whSchema(rows), spec)
		if err == nil {
			_, err = b.db.Exec(ctx, "ANALYZE "+pgx.Identifier{b.whSchema(rows), "events"}.Sanitize())
		}
	}
	if err != nil {
		return fmt.Errorf("seed %s with %d rows: %w", wh, rows, err)
	}
	b.log.Info("seeded", "warehouse", wh, "rows", rows, "took", time.Since(start).Round(time.Millisecond))
	b.seeded[key] = true
	return nil
}

func (b *bench) duckPath(rows int) string {
	return filepath.Join(b.dir, fmt.Sprintf("wh-%d.duckdb", rows))
}
func (b *bench) whSchema(rows int) string { return fmt.Sprintf("wh_%d", rows) }

// settings is the configuration of one pipeline run: its own store schema
// and topic prefix, so runs never see each other's data.
func (b *bench) settings(wh string, rows int, tag string) (*config.File, error) {
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	f := demo.Config(demo.ConfigOptions{
		APIKey:     "bench",
		Warehouse:  wh,
		DuckDBPath: b.duckPath(rows),
		Postgres:   demo.PostgresWarehouse{DSNEnv: envWarehouseDSN, Schema: b.whSchema(rows)},
		Store:      config.Store{Kind: "postgres", DSNEnv: envStoreDSN, Schema: "store_" + tag},
		Kafka:      b.brokers,
		RedisAddr:  b.o.RedisAddr,
		HTTPAddr:   "127.0.0.1:" + strconv.Itoa(httpPort),
		Pipeline:   config.Pipeline{BatchRows: b.o.BatchRows},
	})
	f.Kafka.Retention = topicRetention
	f.Kafka.TopicPrefix = tag + "."
	f.Redis.DB = b.o.RedisDB
	return f, f.Validate()
}

// Run measures everything the options ask for.
func (b *bench) Run(ctx context.Context) (*Results, error) {
	res := &Results{Options: b.o, Machine: b.machine, LoadBefore: loadAvg(), Started: time.Now()}
	for _, wh := range b.o.Warehouses {
		if err := b.seed(ctx, wh, b.o.Rows); err != nil {
			return nil, err
		}
		var pipes []PipelineRun
		var directs []DirectRun
		for i := range b.o.Repeat {
			// Alternate the order so neither kind always runs on a warm cache.
			first, second := b.pipeline, b.directRun
			if i%2 == 1 {
				first, second = b.directRun, b.pipeline
			}
			for _, step := range []func(context.Context, string, int) (any, error){first, second} {
				r, err := step(ctx, wh, b.o.Rows)
				if err != nil {
					return nil, err
				}
				switch r := r.(type) {
				case PipelineRun:
					pipes = append(pipes, r)
				case DirectRun:
					directs = append(directs, r)
				}
			}
		}
		res.Warehouses = append(res.Warehouses, summarize(wh, b.o.Rows, pipes, directs))
	}
	for _, wh := range b.o.Warehouses {
		for _, n := range b.o.MemorySizes {
			if err := b.seed(ctx, wh, n); err != nil {
				return nil, err
			}
			r, err := b.pipeline(ctx, wh, n)
			if err != nil {
				return nil, err
			}
			res.Memory = append(res.Memory, r.(PipelineRun))
		}
	}
	res.LoadAfter = loadAvg()
	res.Took = time.Since(res.Started)
	return res, nil
}

// pipeline runs the day through the services and measures it.
func (b *bench) pipeline(ctx context.Context, wh string, rows int) (any, error) {
	b.seq++
	tag := fmt.Sprintf("p%d", b.seq)
	f, err := b.settings(wh, rows, tag)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(b.dir, tag+".yaml")
	data, err := yaml.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return nil, err
	}
	if _, err := config.Load(cfgPath); err != nil {
		return nil, fmt.Errorf("rendered config does not load: %w", err)
	}
	env := append([]string{envStoreDSN + "=" + b.dbURL, envWarehouseDSN + "=" + b.dbURL}, b.o.ServiceEnv...)

	targets := []string{"extractor", "mapper", "loader"}
	if b.o.Mode == "all" {
		targets = []string{"all"}
	}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop(30 * time.Second)
		}
	}()
	var ready []string
	for _, t := range targets {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		admin := "127.0.0.1:" + strconv.Itoa(port)
		if t == "all" {
			admin = f.HTTP.Addr // the trigger serves /readyz
		}
		args := []string{"run", "--config", cfgPath, "--target=" + t, "--admin-addr", admin, "--log-level", "warn"}
		if b.o.Profile {
			prof := filepath.Join(b.dir, tag+"-"+t+".pprof")
			args = append(args, "--cpu-profile", prof)
			b.log.Info("profiling", "process", t, "profile", prof)
		}
		p, err := startProc(ctx, t, b.o.Sluice, args, env, filepath.Join(b.dir, tag+"-"+t+".log"))
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		ready = append(ready, "http://"+admin+"/readyz")
	}
	for i, u := range ready {
		if err := waitReady(ctx, u, procs[i], time.Minute); err != nil {
			return nil, err
		}
	}
	kcfg := kafka.Config{Brokers: f.Kafka.Brokers, Partitions: f.Kafka.Partitions, ReplicationFactor: f.Kafka.ReplicationFactor,
		Retention: f.Kafka.Retention, TopicPrefix: f.Kafka.TopicPrefix}
	cl, err := kafka.NewClient(kcfg, "bench", b.log, nil)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	// Every consumer group must have joined before the clock starts, so the
	// figure is the day's journey, not the services' start-up.
	if err := waitGroups(ctx, kadm.NewClient(cl), 3, time.Minute); err != nil {
		return nil, err
	}
	st, err := pgstore.Open(ctx, b.dbURL, pgstore.Options{Schema: f.Store.Schema, Logger: b.log})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, err
	}
	d, err := dispatch.New(dispatch.Config{LeaseTTL: f.Pipeline.LeaseTTL}, dispatch.Deps{Client: cl, Kafka: kcfg, Codecs: codecs,
		Settings: f, Store: st, State: state.New(b.rdb, state.Options{}), Logger: b.log})
	if err != nil {
		return nil, err
	}

	brokerCPU0, pgCPU0, busy0 := b.broker.cpu(), postgresCPU(), machineBusy()
	start := time.Now()
	runID, err := d.Dispatch(ctx, dispatch.Request{Project: demo.ProjectName, Ingestion: demo.WebEventsAPI,
		Date: benchDay.String(), Trigger: vocab.TriggerAPI, Reason: "bench"})
	if err != nil {
		return nil, fmt.Errorf("dispatch the bench day: %w", err)
	}
	loadedRows, err := b.waitVisible(ctx, f.Store.Schema, runID, procs, 30*time.Minute)
	if err != nil {
		return nil, err
	}
	took := time.Since(start)
	if loadedRows != int64(rows) {
		return nil, fmt.Errorf("pipeline loaded %d rows, want %d", loadedRows, rows)
	}
	run := PipelineRun{Warehouse: wh, Rows: rows, Took: took, Broker: Usage{Name: "broker", CPU: b.broker.cpu() - brokerCPU0, PeakRSS: b.broker.peakRSS()},
		PostgresCPU: postgresCPU() - pgCPU0, MachineBusy: machineBusy() - busy0}
	// Read each process's figures just before it is told to stop.
	for _, p := range procs {
		run.Services = append(run.Services, Usage{Name: p.name, CPU: p.cpu(), PeakRSS: p.peakRSS()})
		p.stop(30 * time.Second)
	}
	procs = nil
	b.log.Info("pipeline run", "warehouse", wh, "rows", rows, "took", took.Round(time.Millisecond),
		"rows_per_s", int(run.RowsPerSec()), "services", fmt.Sprint(run.Services), "broker_cpu", run.Broker.CPU.Round(10*time.Millisecond),
		"postgres_cpu", run.PostgresCPU.Round(10*time.Millisecond), "machine_busy", fmt.Sprintf("%.0f%%", 100*busyShare(run.MachineBusy, took)))
	if _, err := b.db.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{f.Store.Schema}.Sanitize()+" CASCADE"); err != nil {
		return nil, fmt.Errorf("drop run store: %w", err)
	}
	return run, nil
}

// waitVisible polls the store's days table until runID's day is visible.
func (b *bench) waitVisible(ctx context.Context, schema, runID string, procs []*proc, limit time.Duration) (int64, error) {
	q := `SELECT status, visible_run_id, rows_loaded, error_message FROM ` + pgx.Identifier{schema, "days"}.Sanitize() +
		` WHERE project = $1 AND ingestion = $2 AND ds = $3::date`
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		var status vocab.Status
		var visible, msg string
		var n int64
		err := b.db.QueryRow(ctx, q, demo.ProjectName, demo.WebEventsAPI, benchDay.String()).Scan(&status, &visible, &n, &msg)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return 0, fmt.Errorf("poll the store's days: %w", err)
		case status == vocab.StatusSuccessful && visible == runID:
			return n, nil
		case status == vocab.StatusFailed:
			return 0, fmt.Errorf("run %s failed: %s", runID, msg)
		}
		for _, p := range procs {
			if err := p.exited(); err != nil {
				return 0, fmt.Errorf("%s exited during the run: %w (log %s)", p.name, err, p.logPath)
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
	return 0, fmt.Errorf("run %s: day not visible after %s", runID, limit)
}

// waitGroups waits until at least n consumer groups are stable.
func waitGroups(ctx context.Context, adm *kadm.Client, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		listed, err := adm.ListGroups(ctx)
		if err == nil {
			described, derr := adm.DescribeGroups(ctx, listed.Groups()...)
			stable := 0
			if derr == nil {
				for _, g := range described {
					if g.State == "Stable" && len(g.Members) > 0 {
						stable++
					}
				}
			}
			if stable >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("consumer groups not stable after %s", limit)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitDial(ctx context.Context, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not listening after %s", addr, limit)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
