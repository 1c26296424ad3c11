package duckdb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/warehousetest"
	"github.com/sluicehq/sluice/schemas"
)

func openTemp(tb testing.TB, maxConcurrency int) *Source {
	tb.Helper()
	src, err := Open(config.Connection{Name: "test", Kind: "duckdb", Path: filepath.Join(tb.TempDir(), "wh.duckdb"), MaxConcurrency: maxConcurrency})
	if err != nil {
		tb.Fatalf("open duckdb: %v", err)
	}
	tb.Cleanup(func() { src.Close() })
	return src
}

func harness() warehousetest.Harness {
	return warehousetest.Harness{
		Open: func(tb testing.TB) (warehouse.Source, func(testing.TB, string)) {
			src := openTemp(tb, 4)
			return src, func(tb testing.TB, sql string) {
				tb.Helper()
				if _, err := src.DB().Exec(sql); err != nil {
					tb.Fatalf("exec %s: %v", sql, err)
				}
			}
		},
		TypeName: func(t warehousetest.Type) string {
			return map[warehousetest.Type]string{
				warehousetest.Int8: "TINYINT", warehousetest.Int16: "SMALLINT", warehousetest.Int32: "INTEGER",
				warehousetest.Int64: "BIGINT", warehousetest.Decimal38x10: "DECIMAL(38,10)", warehousetest.Decimal10x2: "DECIMAL(10,2)",
				warehousetest.Float32: "FLOAT", warehousetest.Float64: "DOUBLE", warehousetest.Bool: "BOOLEAN",
				warehousetest.String: "VARCHAR", warehousetest.Bytes: "BLOB", warehousetest.Date: "DATE",
				warehousetest.Timestamp: "TIMESTAMP", warehousetest.TimestampTZ: "TIMESTAMPTZ", warehousetest.JSON: "JSON",
				warehousetest.IntArray: "BIGINT[]", warehousetest.Struct: "STRUCT(a BIGINT, b VARCHAR)",
			}[t]
		},
		Placeholder: "$1",
		Literal: func(t warehousetest.Type, v any) string {
			switch v := v.(type) {
			case []int64:
				return fmt.Sprintf("CAST(%s AS BIGINT[])", warehousetest.Quote(strings.ReplaceAll(fmt.Sprint(v), " ", ",")))
			case warehousetest.StructValue:
				return fmt.Sprintf("{'a': %d, 'b': %s}", v.A, warehousetest.Quote(v.B))
			case []byte:
				s := ""
				for _, c := range v {
					s += fmt.Sprintf(`\x%02X`, c)
				}
				return "CAST(" + warehousetest.Quote(s) + " AS BLOB)"
			}
			return ""
		},
		SpecialFloats: true,
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	warehousetest.Run(t, harness())
}

func exec(tb testing.TB, src *Source, sql string) {
	tb.Helper()
	if _, err := src.DB().Exec(sql); err != nil {
		tb.Fatalf("exec %s: %v", sql, err)
	}
}

func TestDuckDBSpecificTypes(t *testing.T) {
	t.Parallel()
	src := openTemp(t, 2)
	query := `SELECT 170141183460469231731687303715884105727::HUGEINT AS huge, 18446744073709551615::UBIGINT AS ubig,
		4294967295::UINTEGER AS uint, MAP {'k': 1} AS m, [[1, 2], [3]] AS nested,
		'7d444840-9dc0-11d1-b245-5ffdce74fad2'::UUID AS id, INTERVAL 1 DAY AS iv, TIME '01:02:03' AS t,
		'2024-01-02 03:04:05.123456789'::TIMESTAMP_NS AS ns, sum(x) AS s, 1 AS dup, 2 AS dup,
		CAST($1 AS DATE) AS day
		FROM (SELECT 1 AS x)`
	b, err := src.Sample(context.Background(), query, civil.Date{Year: 2024, Month: 5, Day: 6}, 10)
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	want := []struct {
		name, typ string
		long      int64
		str       string
	}{
		{"huge", schemas.TypeDecimal, 0, "170141183460469231731687303715884105727"},
		{"ubig", schemas.TypeDecimal, 0, "18446744073709551615"},
		{"uint", schemas.TypeLong, 4294967295, ""},
		{"m", schemas.TypeJSON, 0, `{"k":1}`},
		{"nested", schemas.TypeJSON, 0, `[[1,2],[3]]`},
		{"id", schemas.TypeString, 0, "7d444840-9dc0-11d1-b245-5ffdce74fad2"},
		{"iv", schemas.TypeString, 0, "1 day"},
		{"t", schemas.TypeString, 0, "01:02:03"},
		{"ns", schemas.TypeTimestamp, time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC).UnixMicro(), ""},
		{"s", schemas.TypeDecimal, 0, "1"}, // sum() of integers is HUGEINT in DuckDB
		{"dup", schemas.TypeLong, 1, ""},
		{"dup_1", schemas.TypeLong, 2, ""}, // DuckDB renames a repeated name in a subquery
		{"day", schemas.TypeDate, 19849, ""},
	}
	if b.Rows != 1 || len(b.Columns) != len(want) {
		t.Fatalf("Sample = %d rows, %d columns; want 1, %d", b.Rows, len(b.Columns), len(want))
	}
	for i, w := range want {
		c := b.Columns[i]
		if c.Name != w.name || c.Type != w.typ {
			t.Errorf("column %d = %s %s (%s), want %s %s", i, c.Name, c.Type, c.DBType, w.name, w.typ)
			continue
		}
		switch w.typ {
		case schemas.TypeLong, schemas.TypeDate, schemas.TypeTimestamp:
			if c.Longs[0] != w.long {
				t.Errorf("%s = %d, want %d", w.name, c.Longs[0], w.long)
			}
		default:
			if c.Strings[0] != w.str {
				t.Errorf("%s = %q, want %q", w.name, c.Strings[0], w.str)
			}
		}
	}
}

func TestQueryTimeoutAndConcurrency(t *testing.T) {
	t.Parallel()
	src, err := Open(config.Connection{Name: "t", Kind: "duckdb", Path: filepath.Join(t.TempDir(), "wh.duckdb"), MaxConcurrency: 1, QueryTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer src.Close()
	day := civil.Date{Year: 2024, Month: 1, Day: 1}
	// A cross join large enough to outlast the timeout by far.
	_, err = src.Count(context.Background(), "SELECT * FROM range(100000000) a, range(100000000) b WHERE CAST($1 AS DATE) IS NOT NULL AND a.range + b.range = -1", day)
	if cat, transient := warehouse.Categorize(err); cat != vocab.CategoryTimeout || !transient {
		t.Fatalf("Count past the timeout = %v; category %s transient %v, want %s transient", err, cat, transient, vocab.CategoryTimeout)
	}
	_, release, err := src.slots.Acquire(context.Background()) // hold the only slot
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := src.Count(ctx, "SELECT 1 WHERE CAST($1 AS DATE) IS NOT NULL", day); !errors.Is(err, context.Canceled) {
		t.Fatalf("Count while the slot is held = %v, want context.Canceled", err)
	}
	release()
	if n, err := src.Count(context.Background(), "SELECT 1 WHERE CAST($1 AS DATE) IS NOT NULL", day); err != nil || n != 1 {
		t.Fatalf("Count after release = %d, %v; want 1", n, err)
	}
}

// BenchmarkDuckDBStream streams 100k event-like rows (8 columns, one JSON)
// through the streaming reader and, as the baseline, the database/sql
// reader Stream used before.
func BenchmarkDuckDBStream(b *testing.B) {
	src := openTemp(b, 1)
	exec(b, src, `CREATE TABLE events AS SELECT
		'user_' || CAST(i % 5000 AS VARCHAR) AS user_id, 'device_' || CAST(i % 7000 AS VARCHAR) AS device_id,
		'event_' || CAST(i % 20 AS VARCHAR) AS event_name, TIMESTAMP '2024-01-02 00:00:00' + INTERVAL (i) SECOND AS ts,
		CAST(i % 100 AS DOUBLE) AS value, i % 2 = 0 AS flag, DATE '2024-01-02' AS day,
		CAST('{"plan": "pro", "n": ' || CAST(i AS VARCHAR) || '}' AS JSON) AS metadata
		FROM range(100000) t(i)`)
	query := "SELECT user_id, device_id, event_name, ts, value, flag, day, metadata FROM events WHERE day = $1"
	day := civil.Date{Year: 2024, Month: 1, Day: 2}
	for _, r := range readers(src) {
		b.Run("reader="+r.name, func(b *testing.B) {
			benchStream(b, r.stream, query, day, 100000)
		})
	}
}

type streamFunc func(ctx context.Context, query string, day civil.Date, batchRows int, emit func(*warehouse.Batch) error) (int64, error)

func readers(src *Source) []struct {
	name   string
	stream streamFunc
} {
	return []struct {
		name   string
		stream streamFunc
	}{{"stream", src.Stream}, {"database-sql", src.sqlStream}}
}

func benchStream(b *testing.B, stream streamFunc, query string, day civil.Date, want int64) {
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var rows int64
	for b.Loop() {
		n, err := stream(context.Background(), query, day, 2000, func(*warehouse.Batch) error { return nil })
		if err != nil || n != want {
			b.Fatalf("Stream = %d, %v; want %d", n, err, want)
		}
		rows += n
	}
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(rows), "ns/row")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(rows), "allocs/row")
}

// BenchmarkDuckDBDemoDay streams one day of the demo events (demo's
// BenchSpec, the extractor's bench query) with each reader and reports the
// process's peak RSS while streaming (VmHWM, reset once the day is seeded)
// next to the RSS it started from. Peak RSS is per process: run one reader
// per process, with SLUICE_BENCH_DAY_ROWS rows (default 100,000); a day
// seeded into SLUICE_BENCH_DUCKDB_DIR is kept for the next run, and
// SLUICE_BENCH_DUCKDB_MEMORY_LIMIT (e.g. 128MB) is the connection's
// memory_limit:
//
//	SLUICE_BENCH_DAY_ROWS=2000000 go test -run '^$' -bench 'DemoDay/reader=stream$' -benchtime 1x ./pkg/warehouse/duckdb/
func BenchmarkDuckDBDemoDay(b *testing.B) {
	rows := 100_000
	if v := os.Getenv("SLUICE_BENCH_DAY_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("SLUICE_BENCH_DAY_ROWS=%q: %v", v, err)
		}
		rows = n
	}
	day := civil.Date{Year: 2024, Month: 3, Day: 14}
	path := seededDemoDay(b, day, rows)
	src, err := Open(config.Connection{Name: "bench", Kind: "duckdb", Path: path, MemoryLimit: os.Getenv("SLUICE_BENCH_DUCKDB_MEMORY_LIMIT")})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	for _, r := range readers(src) {
		b.Run("reader="+r.name, func(b *testing.B) {
			runtime.GC()
			debug.FreeOSMemory()
			start := resetPeakRSS(b)
			benchStream(b, r.stream, demo.EventsQuery(`"events"`), day, int64(rows))
			b.ReportMetric(float64(procStatusKiB(b, "VmHWM"))/1024, "peak-RSS-MiB")
			b.ReportMetric(float64(start)/1024, "start-RSS-MiB")
		})
	}
}

func seededDemoDay(b *testing.B, day civil.Date, rows int) string {
	dir := os.Getenv("SLUICE_BENCH_DUCKDB_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("demo-%s-%d.duckdb", day, rows))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if _, err := demo.SeedDuckDBFile(context.Background(), path+".tmp", demo.BenchSpec(day, rows)); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		b.Fatal(err)
	}
	return path
}

// resetPeakRSS sets VmHWM to the current RSS (Linux 4.0+) and returns it.
func resetPeakRSS(b *testing.B) int64 {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skipf("cannot reset peak RSS: %v", err)
	}
	return procStatusKiB(b, "VmRSS")
}

func procStatusKiB(b *testing.B, field string) int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatalf("%s: %v", line, err)
			}
			return kib
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// TestInfinities: DuckDB's infinite dates and timestamps arrive as the
// extreme int64 values, as PostgreSQL's do, whatever the timestamp unit.
func TestInfinities(t *testing.T) {
	src := openTemp(t, 1)
	query := `SELECT 'infinity'::DATE AS d, '-infinity'::DATE AS nd, 'infinity'::TIMESTAMP AS ts, '-infinity'::TIMESTAMP AS nts,
		'infinity'::TIMESTAMPTZ AS tz, CAST('infinity' AS TIMESTAMP_S) AS s, CAST('-infinity' AS TIMESTAMP_MS) AS nms,
		CAST('infinity' AS TIMESTAMP_NS) AS ns, DATE '1969-12-31' AS finite_d, CAST('1969-12-31 23:59:59.999999999' AS TIMESTAMP_NS) AS finite_ns
		WHERE $1::DATE IS NOT NULL`
	var got []int64
	_, err := src.Stream(context.Background(), query, civil.Date{Year: 2024, Month: 5, Day: 6}, 10, func(b *warehouse.Batch) error {
		for _, c := range b.Columns {
			got = append(got, c.Longs[0])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{math.MaxInt64, math.MinInt64, math.MaxInt64, math.MinInt64, math.MaxInt64, math.MaxInt64, math.MinInt64, math.MaxInt64, -1, -1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("values %v, want %v", got, want)
	}
}

// TestMemoryLimit: the database's block cache is capped by the
// connection's memory_limit, 32MB when unset; a malformed limit is a
// configuration error, never SQL.
func TestMemoryLimit(t *testing.T) {
	limitOf := func(src *Source) string {
		t.Helper()
		var v string
		if err := src.DB().QueryRow("SELECT current_setting('memory_limit')").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	src := openTemp(t, 1)
	if got := limitOf(src); got != "30.5 MiB" { // DuckDB prints 32MB (10^6 bytes) in MiB
		t.Errorf("default memory_limit = %q, want 32MB (30.5 MiB)", got)
	}
	path := filepath.Join(t.TempDir(), "other.duckdb")
	big, err := Open(config.Connection{Name: "big", Kind: "duckdb", Path: path, MemoryLimit: "1GB"})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	if got := limitOf(big); got != "953.6 MiB" {
		t.Errorf("memory_limit 1GB = %q, want 953.6 MiB", got)
	}
	_, err = Open(config.Connection{Name: "bad", Kind: "duckdb", Path: filepath.Join(t.TempDir(), "bad.duckdb"), MemoryLimit: "1GB'; DROP TABLE x; --"})
	var we *warehouse.Error
	if !errors.As(err, &we) || we.Category != vocab.CategoryConfig {
		t.Fatalf("Open with a malformed memory_limit = %v, want a %s", err, vocab.CategoryConfig)
	}
}
