// Command chaostool is the fault suite behind scripts/chaos: it runs every
// Sluice service as its own process (sluice run --target=X) against a
// kfake broker process persisted to disk (sluice kafka --data-dir), the
// real Redis (DB 9, flushed by the suite) and the real PostgreSQL (a
// database of its own holding the warehouse and the store), loads a
// multi-day data set with bad rows, and meanwhile injects faults: SIGKILL
// of each service at random moments, broker kill -9 and restart, Redis
// flushes, warehouse query errors and (full run only) a PostgreSQL
// restart. After each scenario every day must reconcile with the
// warehouse: counts, content checksum, no duplicates, no loss, every
// rejected row accounted for and dead-lettered.
//
// Besides the rows, every scenario checks what runs produce: usage, run
// histories, day statuses and the webhooks a receiver in the suite's
// process counts (check_effects.go, webhooks.go).
//
//	go run ./scripts/chaostool [--short] [--days N] [--rows N] [--seed S] [--only 6,7]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"cloud.google.com/go/civil"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/schemas"
)

const (
	adminDSN   = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	redisAddr  = "127.0.0.1:6379"
	redisDB    = 9 // the suite's own; never DB 0
	apiKey     = "sk_chaos_key"
	whSchema   = "wh"
	storeSchma = "store"
)

// services are the processes the suite kills, in a stable order.
var services = []string{"planner", "extractor", "mapper", "loader", "watcher", "trigger"}

type options struct {
	short    bool
	days     int
	rows     int
	seed     uint64
	kills    int // SIGKILLs per service per kill scenario
	settle   time.Duration
	bin      string // a built sluice binary; built when empty
	keep     bool   // keep the database and work directory
	logLevel string // the services' --log-level (default warn)
	logEvery bool
	only     string // scenarios to run: numbers or name fragments, comma-separated; all when empty
}

func main() {
	var o options
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.BoolVar(&o.short, "short", false, "a quick run (a couple of minutes): fewer rows and kills, no PostgreSQL restart")
	fs.IntVar(&o.days, "days", 0, "days of data (default 4, 3 with --short)")
	fs.IntVar(&o.rows, "rows", 0, "events per day (default 20000, 2000 with --short); metrics are a quarter")
	seed := fs.Uint64("seed", 0, "random seed of the data and the fault timing (default: the time)")
	fs.IntVar(&o.kills, "kills", 0, "SIGKILLs per service in each kill scenario (default 4, 1 with --short)")
	fs.DurationVar(&o.settle, "settle", 0, "how long a scenario may take to reconcile after its faults (default 4m, 2m with --short)")
	fs.StringVar(&o.bin, "bin", "", "a built sluice binary (default: go build ./services/sluice)")
	fs.BoolVar(&o.keep, "keep", false, "keep the database and the work directory (logs) afterwards")
	fs.StringVar(&o.logLevel, "log-level", "warn", "the services' log level (their logs are in the work directory)")
	fs.StringVar(&o.only, "only", "", "run only these scenarios: numbers (as --short or the full run lists them) or name fragments, comma-separated, e.g. 6,7 or snowflake")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	o.seed = *seed
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, o, os.Stdout)
	stop()
	os.Exit(code)
}

func (o *options) defaults() {
	if o.days == 0 {
		o.days = 4
		if o.short {
			o.days = 3
		}
	}
	if o.rows == 0 {
		o.rows = 20000
		if o.short {
			o.rows = 2000
		}
	}
	if o.kills == 0 {
		o.kills = 4
		if o.short {
			o.kills = 1
		}
	}
	// A SIGKILLed group member is evicted after the 10 s session
	// timeout; a scenario reconciles in well under a minute.
	if o.settle == 0 {
		o.settle = 4 * time.Minute
		if o.short {
			o.settle = 2 * time.Minute
		}
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	if o.logLevel == "" {
		o.logLevel = "warn"
	}
}

var logOut io.Writer = os.Stderr

func logf(format string, args ...any) {
	fmt.Fprintf(logOut, "chaos %s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// suite is one chaos run's world.
type suite struct {
	o        options
	rng      *rand.Rand
	spec     demo.Spec
	dir      string
	dbName   string
	pool     *pgxpool.Pool
	rdb      *redis.Client
	broker   *proc
	procs    map[string]*proc
	rec      *reconciler
	hooks    *receiver    // the project's webhook
	sf       *snowflakeWH // the Snowflake warehouse of sfIngestion
	all      *proc        // sluice run --target=all, while a scenario runs it instead of the services
	allSeen  *proc        // the last such process, for the report
	bin      string
	cfgPath  string
	httpAddr string // the trigger's API
	env      []string
	rounds   map[string]int
	pgMajor  string
	results  []result
	superCtx context.Context
}

// result is one line of the final table.
type result struct {
	scenario string
	faults   []string
	changes  []string
	took     time.Duration
	problems []mismatch
}

// run returns the process exit code: 0 when every scenario reconciled.
func run(ctx context.Context, o options, stdout io.Writer) int {
	o.defaults()
	s := &suite{o: o, rng: newRand(o.seed), procs: map[string]*proc{}, rounds: map[string]int{}}
	logf("seed %d, %d days of %d events, %d kills per service", o.seed, o.days, o.rows, o.kills)
	cleanup, err := s.setUp(ctx)
	defer cleanup()
	if err != nil {
		logf("set up: %v", err)
		return 1
	}
	scenarios, err := s.scenarios()
	if err != nil {
		logf("%v", err)
		return 2
	}
	for _, sc := range scenarios {
		if ctx.Err() != nil {
			break
		}
		s.runScenario(ctx, sc)
	}
	if ctx.Err() == nil {
		s.awaitHeldWebhooks(ctx)
	}
	return s.report(stdout)
}

// setUp builds the binary, creates the database, seeds the warehouse,
// writes the config and starts every process. cleanup undoes all of it.
func (s *suite) setUp(ctx context.Context) (func(), error) {
	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	dir, err := os.MkdirTemp("", "sluice-chaos-")
	if err != nil {
		return cleanup, err
	}
	s.dir = dir
	undo = append(undo, func() {
		if s.o.keep || s.failed() {
			logf("logs and broker data kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})

	bin := s.o.bin
	if bin == "" {
		bin = filepath.Join(dir, "sluice")
		root, err := repoRoot()
		if err != nil {
			return cleanup, err
		}
		logf("building %s", bin)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./services/sluice")
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, logOut, logOut
		if err := cmd.Run(); err != nil {
			return cleanup, fmt.Errorf("go build ./services/sluice: %w", err)
		}
	}
	s.bin = bin

	// PostgreSQL: one database of our own for the warehouse and the store.
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return cleanup, fmt.Errorf("PostgreSQL at 127.0.0.1:5432: %w", err)
	}
	s.dbName = "sluice_chaos_" + strconv.Itoa(os.Getpid())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+s.dbName); err != nil {
		admin.Close(ctx)
		return cleanup, fmt.Errorf("create database %s: %w", s.dbName, err)
	}
	admin.Close(ctx)
	undo = append(undo, func() {
		if s.o.keep {
			logf("database %s kept", s.dbName)
			return
		}
		c, err := pgx.Connect(context.Background(), adminDSN)
		if err == nil {
			_, err = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+s.dbName+" WITH (FORCE)")
			c.Close(context.Background())
		}
		if err != nil {
			logf("drop database %s: %v", s.dbName, err)
		}
	})
	dsn := "postgres://postgres@127.0.0.1:5432/" + s.dbName + "?sslmode=disable"
	s.pool, err = pgxpool.New(ctx, dsn)
	if err != nil {
		return cleanup, err
	}
	undo = append(undo, s.pool.Close)
	s.spec = demo.Spec{Days: s.o.days, LastDay: civil.DateOf(time.Now().UTC()).AddDays(-1),
		EventsPerDay: s.o.rows, MetricsPerDay: max(s.o.rows/4, 10), BadRowEvery: 40, Seed: s.o.seed}
	if _, err := demo.SeedPostgres(ctx, s.pool, whSchema, s.spec); err != nil {
		return cleanup, fmt.Errorf("seed warehouse: %w", err)
	}
	if _, err := s.pool.Exec(ctx, isJSONFunc); err != nil {
		return cleanup, fmt.Errorf("create chaos_is_json: %w", err)
	}

	// Redis: DB 9, flushed now and at the end.
	s.rdb = redis.NewClient(&redis.Options{Addr: redisAddr, DB: redisDB})
	if err := s.rdb.FlushDB(ctx).Err(); err != nil {
		return cleanup, fmt.Errorf("flush Redis DB %d at %s: %w", redisDB, redisAddr, err)
	}
	undo = append(undo, func() { s.rdb.FlushDB(context.Background()); s.rdb.Close() })

	if entries, err := os.ReadDir("/etc/postgresql"); err == nil && len(entries) > 0 {
		s.pgMajor = entries[len(entries)-1].Name()
	}

	// Processes. Their supervision outlives scenario contexts.
	superCtx, cancelSuper := context.WithCancel(context.WithoutCancel(ctx))
	s.superCtx = superCtx
	brokerPort, err := freePort()
	if err != nil {
		cancelSuper()
		return cleanup, err
	}
	brokerAddr := "127.0.0.1:" + strconv.Itoa(brokerPort)
	s.broker = &proc{name: "broker", bin: bin, restartDelay: time.Second, logPath: filepath.Join(dir, "broker.log"),
		args: []string{"kafka", "--addr", brokerAddr, "--data-dir", filepath.Join(dir, "kafka"), "--partitions", "3"}}
	s.broker.supervise(superCtx)
	undo = append(undo, func() { s.broker.stop(5 * time.Second) })
	undo = append(undo, cancelSuper)
	if err := waitPort(ctx, brokerAddr, 30*time.Second); err != nil {
		return cleanup, err
	}

	// The project's webhook and the Snowflake warehouse run in this
	// process.
	if s.hooks, err = startReceiver(); err != nil {
		return cleanup, err
	}
	undo = append(undo, s.hooks.close)
	sfRows := 8 * sfChunkRows
	if s.o.short {
		sfRows = 4 * sfChunkRows
	}
	if s.sf, err = startSnowflake(s.spec.LastDay, sfRows); err != nil {
		return cleanup, err
	}
	undo = append(undo, s.sf.close)

	httpPort, err := freePort()
	if err != nil {
		return cleanup, err
	}
	s.httpAddr = "127.0.0.1:" + strconv.Itoa(httpPort)
	s.cfgPath = filepath.Join(dir, "sluice.yaml")
	if err := s.writeConfig(s.cfgPath, brokerAddr, dsn, s.httpAddr); err != nil {
		return cleanup, err
	}
	s.env = []string{"SLUICE_CHAOS_WAREHOUSE_DSN=" + dsn, sfPasswordEnv + "=" + sfPassword,
		"SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true", "SF_DISABLE_MINICORE=true"}
	for _, name := range services {
		p, err := s.serviceProc(name)
		if err != nil {
			return cleanup, err
		}
		s.procs[name] = p
		p.supervise(superCtx)
		undo = append(undo, func() { p.stop(10 * time.Second) })
	}
	undo = append(undo, func() {
		if s.all != nil {
			s.all.stop(30 * time.Second)
		}
	})
	days := make([]string, 0, s.o.days)
	for _, d := range s.spec.Dates() {
		days = append(days, d.String())
	}
	s.rec = &reconciler{pool: s.pool, whSchema: whSchema, storeSchema: storeSchma, kafka: []string{brokerAddr},
		dlTopic: schemas.TopicDeadLetter, days: days,
		effects: &effects{pool: s.pool, schema: storeSchma, hooks: s.hooks, liveNotifiers: s.liveNotifiers}}
	logf("work directory %s, database %s, broker %s", dir, s.dbName, brokerAddr)
	return cleanup, nil
}

// drainTimeout is every process's --drain-timeout.
const drainTimeout = 5 * time.Second

// serviceProc is the process of sluice run --target=name ("all" for
// every service in one process).
func (s *suite) serviceProc(name string) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return &proc{name: name, bin: s.bin, restartDelay: 300 * time.Millisecond, logPath: filepath.Join(s.dir, name+".log"),
		env: s.env,
		args: []string{"run", "--target=" + name, "--config", s.cfgPath, "--admin-addr", "127.0.0.1:" + strconv.Itoa(port),
			"--log-format", "text", "--log-level", s.o.logLevel, "--drain-timeout", drainTimeout.String(),
			"--planner-tick", "1s", "--watcher-tick", "1s"}}, nil
}

// liveNotifiers are the pids of the processes running a notifier now.
func (s *suite) liveNotifiers() map[int]bool {
	live := map[int]bool{}
	for _, p := range []*proc{s.procs["loader"], s.all} {
		if p != nil {
			if pid := p.pid(); pid != 0 {
				live[pid] = true
			}
		}
	}
	return live
}

func (s *suite) writeConfig(path, broker, dsn, httpAddr string) error {
	hour := 0
	f := demo.Config(demo.ConfigOptions{
		APIKey:    apiKey,
		Warehouse: demo.WarehousePostgres,
		Postgres:  demo.PostgresWarehouse{DSNEnv: "SLUICE_CHAOS_WAREHOUSE_DSN", Schema: whSchema},
		Store:     config.Store{Kind: "postgres", DSN: dsn, Schema: storeSchma},
		Kafka:     []string{broker},
		RedisAddr: redisAddr,
		HTTPAddr:  httpAddr,
		Pipeline: config.Pipeline{
			BatchRows:       500,
			CatchUpDays:     s.o.days,
			WatchDays:       3,
			WatchInterval:   2 * time.Second,
			ReloadThreshold: 0.05,
			LeaseTTL:        10 * time.Minute,
		},
		Schedule: &config.Schedule{Hour: &hour, Timezone: "UTC"},
		Extra:    []config.Ingestion{s.sf.ingestion()},
	})
	f.Connections = append(f.Connections, s.sf.connection())
	for i := range f.Projects {
		f.Projects[i].WebhookURL = s.hooks.url
	}
	f.ApplyDefaults() // the Snowflake connection's
	f.Redis.DB = redisDB
	f.Kafka.Partitions = 3
	if err := f.Validate(); err != nil {
		return fmt.Errorf("chaos config: %w", err)
	}
	data, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	// The services read the file back: make sure it round-trips.
	if _, err := config.Load(path); err != nil {
		return fmt.Errorf("chaos config does not load back: %w", err)
	}
	return nil
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the chaos suite from inside the Sluice repository")
	}
	return filepath.Dir(mod), nil
}

func (s *suite) failed() bool {
	for _, r := range s.results {
		if len(r.problems) > 0 {
			return true
		}
	}
	return false
}

func (s *suite) report(w io.Writer) int {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tWAREHOUSE CHANGES\tFAULTS INJECTED\tRECONCILED IN\tOUTCOME")
	code := 0
	for _, r := range s.results {
		outcome := "ok: every day matches"
		if len(r.problems) > 0 {
			code = 1
			outcome = fmt.Sprintf("FAIL: %d mismatches", len(r.problems))
		}
		changes := strings.Join(r.changes, ", ")
		if changes == "" {
			changes = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.scenario, changes, strings.Join(r.faults, ", "), r.took.Round(100*time.Millisecond), outcome)
	}
	tw.Flush()
	var total []string
	for _, name := range append([]string{"broker"}, append(services, "all")...) {
		p := s.broker
		switch name {
		case "all":
			p = s.allSeen
		case "broker":
		default:
			p = s.procs[name]
		}
		if p == nil {
			continue
		}
		starts, kills, crashes := p.counts()
		total = append(total, fmt.Sprintf("%s: %d starts, %d SIGKILLs, %d exits on its own", name, starts, kills, crashes))
	}
	fmt.Fprintln(w, "\nprocesses:\n  "+strings.Join(total, "\n  "))
	if s.hooks != nil {
		fmt.Fprintln(w, s.hooks.summary())
	}
	for _, r := range s.results {
		for i, m := range r.problems {
			if i == 20 {
				fmt.Fprintf(w, "  ... %d more\n", len(r.problems)-20)
				break
			}
			fmt.Fprintf(w, "%s: %s\n", r.scenario, m)
		}
	}
	if len(s.results) == 0 {
		code = 1
	}
	return code
}

// sortedCounts renders "planner×2 loader×1".
func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }
