// Command benchtool measures how fast one day of events moves from a
// warehouse (DuckDB or PostgreSQL) to the PostgreSQL event store: through
// the Sluice pipeline (the services as `sluice run` processes against a
// `sluice kafka` broker process, Redis and the store), and by a direct
// one-process COPY of the same rows into the same table layout. It prints
// the medians of --repeat runs and, with --write, puts the same text into
// BENCHMARKS.md. scripts/bench builds the binary and runs this.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Options are the bench's flags.
type Options struct {
	Rows        int
	Repeat      int
	Warehouses  []string
	Mode        string // processes or all
	MemorySizes []int  // extra pipeline runs (DuckDB) to show peak RSS as the day grows
	BatchRows   int    // rows per raw-rows record
	Sluice      string // the sluice binary
	PGURL       string // PostgreSQL server (the bench creates and drops its own database)
	RedisAddr   string
	RedisDB     int
	Write       string // BENCHMARKS.md path to update; empty = print only
	WorkDir     string
	ServiceEnv  []string // extra environment for the service processes (GOGC, GOMAXPROCS)
	KeepLogs    bool
	Profile     bool // CPU profile of every service process, kept in the working directory
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o Options
	var warehouses, memSizes, env string
	var write bool
	fs.IntVar(&o.Rows, "rows", 2_000_000, "rows in the bench day")
	fs.IntVar(&o.Repeat, "repeat", 3, "measurements of each kind; the median is reported")
	fs.StringVar(&warehouses, "warehouse", "duckdb,postgres", "warehouses to read from: duckdb, postgres or both (comma-separated)")
	fs.StringVar(&o.Mode, "mode", "processes", "processes: extractor, mapper and loader as three `sluice run` processes; all: one `sluice run --target=all` process")
	fs.StringVar(&memSizes, "memory", "", "also run the pipeline once (DuckDB) at each of these day sizes (comma-separated rows, e.g. 1000000,4000000) and report peak RSS")
	fs.IntVar(&o.BatchRows, "batch-rows", 0, "pipeline.batch_rows: rows per raw-rows record (0 = the config default)")
	fs.StringVar(&o.Sluice, "sluice", "", "the sluice binary (scripts/bench builds it)")
	fs.StringVar(&o.PGURL, "pg", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server URL; the bench creates and drops a database of its own on it")
	fs.StringVar(&o.RedisAddr, "redis", "127.0.0.1:6379", "Redis address")
	fs.IntVar(&o.RedisDB, "redis-db", 10, "Redis database number the bench uses (not 0)")
	fs.BoolVar(&write, "write", false, "write the results into BENCHMARKS.md")
	fs.StringVar(&o.WorkDir, "dir", "", "working directory for warehouse files, configs and logs (default a temporary one)")
	fs.StringVar(&env, "service-env", "GOMEMLIMIT=200MiB", "extra environment for the service processes, e.g. GOGC=200,GOMAXPROCS=2")
	fs.BoolVar(&o.KeepLogs, "keep", false, "keep the working directory (service logs) after the run")
	fs.BoolVar(&o.Profile, "profile", false, "write a CPU profile of each pipeline process (sluice run --cpu-profile) into the working directory; implies --keep")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	for _, w := range strings.Split(warehouses, ",") {
		switch w = strings.TrimSpace(w); w {
		case "duckdb", "postgres":
			if !slices.Contains(o.Warehouses, w) {
				o.Warehouses = append(o.Warehouses, w)
			}
		case "both":
			o.Warehouses = []string{"duckdb", "postgres"}
		default:
			fmt.Fprintf(os.Stderr, "bench: --warehouse %q: want duckdb, postgres or both\n", w)
			return 2
		}
	}
	for _, s := range strings.Split(memSizes, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: --memory %q: want positive row counts\n", memSizes)
			return 2
		}
		o.MemorySizes = append(o.MemorySizes, n)
	}
	for _, e := range strings.Split(env, ",") {
		if e = strings.TrimSpace(e); e != "" {
			o.ServiceEnv = append(o.ServiceEnv, e)
		}
	}
	if o.Mode != "processes" && o.Mode != "all" {
		fmt.Fprintf(os.Stderr, "bench: --mode %q: want processes or all\n", o.Mode)
		return 2
	}
	if o.Sluice == "" || o.Rows <= 0 || o.Repeat <= 0 || o.RedisDB == 0 {
		fmt.Fprintln(os.Stderr, "bench: --sluice, positive --rows and --repeat, and a --redis-db other than 0 are required")
		return 2
	}
	if write {
		o.Write = "BENCHMARKS.md"
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	b, err := newBench(ctx, o, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	res, err := b.Run(ctx)
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	text := res.Markdown()
	fmt.Print(text)
	if o.Write != "" {
		if err := writeResults(o.Write, text); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "bench: results written to %s\n", o.Write)
	}
	return 0
}
