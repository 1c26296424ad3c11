package duckdb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

var streamDay = civil.Date{Year: 2024, Month: 1, Day: 2}

// wideColumns covers every type the streaming reader decodes itself and
// the ones plan() renders to text, with nulls, empty, inlined (<= 12
// bytes) and pointed-to strings, and dates and timestamps before 1970.
var wideColumns = []string{
	"CAST(i % 256 - 128 AS TINYINT)",
	"CAST(i % 65536 - 32768 AS SMALLINT)",
	"CAST(i * 7919 % 2147483647 - 1073741823 AS INTEGER)",
	"i * 1000003 - 5000000000",
	"CAST(i % 256 AS UTINYINT)",
	"CAST(i % 65536 AS USMALLINT)",
	"CAST(i * 65537 % 4294967295 AS UINTEGER)",
	"CAST(i AS FLOAT) / 3",
	"CAST(i AS DOUBLE) / 7 - 1000",
	"i % 3 = 0",
	"CASE i % 5 WHEN 0 THEN '' WHEN 1 THEN 'twelve bytes' WHEN 2 THEN repeat('long-', i % 40) ELSE 'ünïcode-' || i END",
	"CAST(repeat('x', i % 20) AS BLOB)",
	"DATE '1960-01-01' + CAST(i % 40000 AS INTEGER)",
	"TIMESTAMP '1969-12-31 23:59:59' + INTERVAL (i * 1234567) MICROSECOND",
	"CAST(TIMESTAMPTZ '2024-03-10 01:30:00+00' + INTERVAL (i) MINUTE AS TIMESTAMPTZ)",
	"CAST(TIMESTAMP '1969-12-31 23:00:00' + INTERVAL (i) SECOND AS TIMESTAMP_S)",
	"CAST(TIMESTAMP '1969-12-31 23:00:00' + INTERVAL (i) MILLISECOND AS TIMESTAMP_MS)",
	"CAST('1969-12-31 23:59:59.' || lpad(CAST(i * 7 % 1000000000 AS VARCHAR), 9, '0') AS TIMESTAMP_NS)",
	"CAST(i AS DECIMAL(18,3)) / 8",
	"CAST(i AS HUGEINT) * 100000000000000000000",
	"CAST(i AS UBIGINT) * 1000000000000",
	"{'a': i, 'b': 'x' || i}",
	"[i, i + 1]",
	"CAST('{\"k\": ' || i || '}' AS JSON)",
	"CAST(md5(CAST(i AS VARCHAR)) AS UUID)",
	"INTERVAL (i) SECOND",
}

// createWide creates table wide with rows rows of wideColumns (c0, c1, ...),
// each null in one row of 13, ordered by i.
func createWide(tb testing.TB, src *Source, rows int) string {
	tb.Helper()
	cols := make([]string, len(wideColumns))
	names := make([]string, len(wideColumns))
	for k, expr := range wideColumns {
		cols[k] = fmt.Sprintf("CASE WHEN (i + %d) %% 13 = 0 THEN NULL ELSE %s END AS c%d", k, expr, k)
		names[k] = fmt.Sprintf("c%d", k)
	}
	exec(tb, src, fmt.Sprintf("CREATE TABLE wide AS SELECT i, %s FROM range(%d) t(i)", strings.Join(cols, ", "), rows))
	return "SELECT " + strings.Join(names, ", ") + " FROM wide WHERE CAST($1 AS DATE) IS NOT NULL ORDER BY i"
}

// collectAll merges every emitted batch and records the batch sizes.
func collectAll(stream func(emit func(*warehouse.Batch) error) (int64, error)) (*warehouse.Batch, []int, error) {
	var all warehouse.Batch
	var sizes []int
	n, err := stream(func(b *warehouse.Batch) error {
		sizes = append(sizes, b.Rows)
		if all.Columns == nil {
			all.Columns = make([]schemas.Column, len(b.Columns))
		}
		for i, c := range b.Columns {
			if len(c.Nulls) != b.Rows {
				return fmt.Errorf("column %s: %d nulls for %d rows", c.Name, len(c.Nulls), b.Rows)
			}
			a := &all.Columns[i]
			a.Name, a.Type, a.DBType = c.Name, c.Type, c.DBType
			a.Nulls = append(a.Nulls, c.Nulls...)
			a.Bools = append(a.Bools, c.Bools...)
			a.Longs = append(a.Longs, c.Longs...)
			a.Doubles = append(a.Doubles, c.Doubles...)
			a.Strings = append(a.Strings, c.Strings...)
		}
		all.Rows += b.Rows
		return nil
	})
	if err == nil && n != int64(all.Rows) {
		err = fmt.Errorf("returned %d rows, emitted %d", n, all.Rows)
	}
	return &all, sizes, err
}

func sameColumn(a, b schemas.Column) error {
	if a.Name != b.Name || a.Type != b.Type || a.DBType != b.DBType {
		return fmt.Errorf("column %s %s (%s), want %s %s (%s)", a.Name, a.Type, a.DBType, b.Name, b.Type, b.DBType)
	}
	if len(a.Nulls) != len(b.Nulls) || len(a.Bools) != len(b.Bools) || len(a.Longs) != len(b.Longs) ||
		len(a.Doubles) != len(b.Doubles) || len(a.Strings) != len(b.Strings) {
		return fmt.Errorf("column %s: value counts differ", a.Name)
	}
	for r := range a.Nulls {
		if a.Nulls[r] != b.Nulls[r] {
			return fmt.Errorf("column %s row %d: null %d, want %d", a.Name, r, a.Nulls[r], b.Nulls[r])
		}
	}
	for r := range a.Bools {
		if a.Bools[r] != b.Bools[r] {
			return fmt.Errorf("column %s row %d: %v, want %v", a.Name, r, a.Bools[r], b.Bools[r])
		}
	}
	for r := range a.Longs {
		if a.Longs[r] != b.Longs[r] {
			return fmt.Errorf("column %s row %d: %d, want %d", a.Name, r, a.Longs[r], b.Longs[r])
		}
	}
	for r := range a.Doubles {
		if math.Float64bits(a.Doubles[r]) != math.Float64bits(b.Doubles[r]) {
			return fmt.Errorf("column %s row %d: %v, want %v", a.Name, r, a.Doubles[r], b.Doubles[r])
		}
	}
	for r := range a.Strings {
		if a.Strings[r] != b.Strings[r] {
			return fmt.Errorf("column %s row %d: %q, want %q", a.Name, r, a.Strings[r], b.Strings[r])
		}
	}
	return nil
}

// TestStreamMatchesDatabaseSQL streams a result of many chunks in batches
// that do not line up with DuckDB's chunks, and compares every value with
// what the database/sql reader gives.
func TestStreamMatchesDatabaseSQL(t *testing.T) {
	t.Parallel()
	src := openTemp(t, 2)
	const rows, batchRows = 30011, 777
	query := createWide(t, src, rows)
	ctx := context.Background()
	got, sizes, err := collectAll(func(emit func(*warehouse.Batch) error) (int64, error) {
		return src.Stream(ctx, query, streamDay, batchRows, emit)
	})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	want, _, err := collectAll(func(emit func(*warehouse.Batch) error) (int64, error) {
		return src.sqlStream(ctx, query, streamDay, batchRows, emit)
	})
	if err != nil {
		t.Fatalf("database/sql stream: %v", err)
	}
	if got.Rows != rows || want.Rows != rows || len(got.Columns) != len(wideColumns) {
		t.Fatalf("Stream = %d rows of %d columns, database/sql %d rows; want %d of %d", got.Rows, len(got.Columns), want.Rows, rows, len(wideColumns))
	}
	for i := range got.Columns {
		if err := sameColumn(got.Columns[i], want.Columns[i]); err != nil {
			t.Errorf("%s: %v", wideColumns[i], err)
		}
	}
	for k, n := range sizes {
		if last := k == len(sizes)-1; (!last && n != batchRows) || (last && n != rows%batchRows) {
			t.Fatalf("batch %d of %d has %d rows; want %d-row batches, then the rest", k, len(sizes), n, batchRows)
		}
	}
	sample, err := src.Sample(ctx, query, streamDay, 3000)
	if err != nil || sample.Rows != 3000 {
		t.Fatalf("Sample(3000) = %v, %v; want 3000 rows", sample, err)
	}
	for i, c := range sample.Columns {
		head := want.Columns[i]
		n := 3000
		head.Nulls, head.Bools, head.Longs = head.Nulls[:n], head.Bools[:min(n, len(head.Bools))], head.Longs[:min(n, len(head.Longs))]
		head.Doubles, head.Strings = head.Doubles[:min(n, len(head.Doubles))], head.Strings[:min(n, len(head.Strings))]
		if err := sameColumn(c, head); err != nil {
			t.Errorf("Sample %s: %v", wideColumns[i], err)
		}
	}
}

// TestStreamEmitsBeforeTheEnd shows the result streams: the batches before
// a row that fails arrive before the failure, which a materialized result
// would report before the first row. The failure is a query error.
func TestStreamEmitsBeforeTheEnd(t *testing.T) {
	t.Parallel()
	src := openTemp(t, 1)
	const failAt = 1_500_000
	query := fmt.Sprintf("SELECT CAST(CASE WHEN range < %d THEN '1' ELSE 'x' END AS INTEGER) AS v FROM range(3000000) WHERE CAST($1 AS DATE) IS NOT NULL", failAt)
	emitted := 0
	n, err := src.Stream(context.Background(), query, streamDay, 1000, func(b *warehouse.Batch) error {
		emitted += b.Rows
		return nil
	})
	if cat, transient := warehouse.Categorize(err); cat != vocab.CategoryQuery || transient {
		t.Fatalf("Stream = %v; category %s transient %v, want %s", err, cat, transient, vocab.CategoryQuery)
	}
	if emitted == 0 || n != int64(emitted) || emitted > failAt {
		t.Fatalf("Stream emitted %d rows (returned %d) before failing at row %d; want some, not past it", emitted, n, failAt)
	}
}

// slowQuery scans without producing a row for far longer than any test.
const slowQuery = "SELECT a.range FROM range(1000000000000) a WHERE a.range = -1 AND CAST($1 AS DATE) IS NOT NULL"

// TestStreamCancel cancels a stream between batches and while DuckDB works
// on a chunk; each returns context.Canceled and frees the query slot.
func TestStreamCancel(t *testing.T) {
	t.Parallel()
	src := openTemp(t, 1)
	exec(t, src, "CREATE TABLE many AS SELECT range AS id, 'name-' || range AS name FROM range(200000)")
	between := func(ctx context.Context, cancel func()) (int64, error) {
		return src.Stream(ctx, "SELECT id, name FROM many WHERE CAST($1 AS DATE) IS NOT NULL", streamDay, 500, func(*warehouse.Batch) error {
			cancel()
			return nil
		})
	}
	during := func(ctx context.Context, cancel func()) (int64, error) {
		time.AfterFunc(100*time.Millisecond, cancel)
		return src.Stream(ctx, slowQuery, streamDay, 500, func(*warehouse.Batch) error { return nil })
	}
	for name, stream := range map[string]func(context.Context, func()) (int64, error){"between batches": between, "during a fetch": during} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		var n int64
		go func() {
			var err error
			n, err = stream(ctx, cancel)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) || n > 500 {
				t.Fatalf("%s: Stream = %d rows, %v; want context.Canceled after at most one batch", name, n, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s: Stream still running a minute after cancel", name)
		}
		// The only slot is free again: a count gets it.
		countCtx, stop := context.WithTimeout(context.Background(), 30*time.Second)
		if c, err := src.Count(countCtx, "SELECT 1 WHERE CAST($1 AS DATE) IS NOT NULL", streamDay); err != nil || c != 1 {
			t.Fatalf("%s: Count after the cancelled stream = %d, %v; want 1", name, c, err)
		}
		stop()
	}
}

func TestStreamQueryTimeout(t *testing.T) {
	t.Parallel()
	src, err := Open(config.Connection{Name: "t", Kind: "duckdb", Path: filepath.Join(t.TempDir(), "wh.duckdb"), QueryTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = src.Stream(context.Background(), slowQuery, streamDay, 100, func(*warehouse.Batch) error { return nil })
	if cat, transient := warehouse.Categorize(err); cat != vocab.CategoryTimeout || !transient {
		t.Fatalf("Stream past the timeout = %v; category %s transient %v, want %s transient", err, cat, transient, vocab.CategoryTimeout)
	}
}

// TestStreamErrors checks the categories of errors that only the
// streaming query meets: at run time, not when the query is described.
func TestStreamErrors(t *testing.T) {
	t.Parallel()
	src := openTemp(t, 1)
	exec(t, src, "CREATE TABLE nums AS SELECT range AS n FROM range(10)")
	for _, tt := range []struct{ name, query string }{
		{"conversion", "SELECT CAST('x' || n AS INTEGER) AS v FROM nums WHERE CAST($1 AS DATE) IS NOT NULL"},
		{"out of range", "SELECT CAST(n + 300 AS TINYINT) AS v FROM nums WHERE CAST($1 AS DATE) IS NOT NULL"},
		{"error()", "SELECT error('boom ' || n) AS v FROM nums WHERE CAST($1 AS DATE) IS NOT NULL"},
	} {
		_, err := src.Stream(context.Background(), tt.query, streamDay, 100, func(*warehouse.Batch) error { return nil })
		if cat, transient := warehouse.Categorize(err); cat != vocab.CategoryQuery || transient {
			t.Errorf("%s: Stream = %v; category %s transient %v, want %s", tt.name, err, cat, transient, vocab.CategoryQuery)
		}
	}
}

// TestOpenWithDSNOptions opens a file with configuration options in its
// path: the streaming reader must join the driver's instance, which the
// instance cache only allows with the same configuration. After Close the
// file is free for an instance with another configuration.
func TestOpenWithDSNOptions(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "wh.duckdb")
	src, err := Open(config.Connection{Name: "t", Kind: "duckdb", Path: path + "?threads=1&preserve_insertion_order=true"})
	if err != nil {
		t.Fatalf("open with options: %v", err)
	}
	exec(t, src, "CREATE TABLE t AS SELECT range AS id FROM range(5000)")
	if n, err := src.Stream(context.Background(), "SELECT id FROM t WHERE CAST($1 AS DATE) IS NOT NULL", streamDay, 1000, func(*warehouse.Batch) error { return nil }); err != nil || n != 5000 {
		t.Fatalf("Stream = %d, %v; want 5000", n, err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(config.Connection{Name: "t", Kind: "duckdb", Path: path + "?access_mode=READ_ONLY"})
	if err != nil {
		t.Fatalf("reopen read-only after Close: %v", err)
	}
	defer ro.Close()
	if n, err := ro.Count(context.Background(), "SELECT id FROM t WHERE CAST($1 AS DATE) IS NOT NULL", streamDay); err != nil || n != 5000 {
		t.Fatalf("Count = %d, %v; want 5000", n, err)
	}
}
