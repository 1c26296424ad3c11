package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/warehousetest"
	"github.com/sluicehq/sluice/schemas"
)

const adminDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// freshDatabase creates a uniquely named database, dropped when tb ends.
// It skips when the server is unreachable, unless CI is set.
func freshDatabase(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		if os.Getenv("CI") == "" {
			tb.Skipf("PostgreSQL at 127.0.0.1:5432 unreachable (%v); set CI=true to make this a failure", err)
		}
		tb.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer admin.Close(ctx)
	var b [6]byte
	rand.Read(b[:])
	name := "sluice_wt_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		admin, err := pgx.Connect(context.Background(), adminDSN)
		if err != nil {
			tb.Errorf("drop database %s: %v", name, err)
			return
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	return name
}

func connection(kind, database string) config.Connection {
	return config.Connection{
		Name: "test", Kind: kind, Host: "127.0.0.1", Port: 5432, User: "postgres", Database: database,
		SSLMode: "disable", MaxConcurrency: 4,
	}
}

func openSource(tb testing.TB, cfg config.Connection) *Source {
	tb.Helper()
	src, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("open %s source: %v", cfg.Kind, err)
	}
	tb.Cleanup(func() { src.Close() })
	return src
}

// execer runs DDL/DML in database over one connection closed when tb ends.
func execer(tb testing.TB, database string) func(testing.TB, string) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, strings.Replace(adminDSN, "/postgres?", "/"+database+"?", 1))
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return func(tb testing.TB, sql string) {
		tb.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			tb.Fatalf("exec %s: %v", sql, err)
		}
	}
}

func harness(kind string) warehousetest.Harness {
	return warehousetest.Harness{
		Open: func(tb testing.TB) (warehouse.Source, func(testing.TB, string)) {
			db := freshDatabase(tb)
			return openSource(tb, connection(kind, db)), execer(tb, db)
		},
		TypeName: func(t warehousetest.Type) string {
			names := map[warehousetest.Type]string{
				warehousetest.Int16: "smallint", warehousetest.Int32: "integer", warehousetest.Int64: "bigint",
				warehousetest.Decimal38x10: "numeric(38,10)", warehousetest.Decimal10x2: "numeric(10,2)",
				warehousetest.Float32: "real", warehousetest.Float64: "double precision", warehousetest.Bool: "boolean",
				warehousetest.String: "text", warehousetest.Bytes: "bytea", warehousetest.Date: "date",
				warehousetest.Timestamp: "timestamp", warehousetest.TimestampTZ: "timestamptz", warehousetest.JSON: "jsonb",
			}
			if kind == KindPostgres {
				names[warehousetest.IntArray] = "bigint[]"
			}
			return names[t]
		},
		Placeholder: "$1",
		Literal: func(t warehousetest.Type, v any) string {
			switch v := v.(type) {
			case []int64:
				s := strings.ReplaceAll(strings.Trim(fmt.Sprint(v), "[]"), " ", ",")
				return "CAST('{" + s + "}' AS bigint[])"
			case []byte:
				return "CAST('\\x" + hex.EncodeToString(v) + "' AS bytea)"
			}
			return ""
		},
		SpecialFloats: true,
	}
}

func TestConformancePostgres(t *testing.T) {
	t.Parallel()
	warehousetest.Run(t, harness(KindPostgres))
}

// TestConformanceRedshiftFlavour runs the suite through the redshift
// kind: text-format results and the Redshift fingerprint SQL. There is no
// Redshift here, so it points at the local PostgreSQL with an explicit
// port and sslmode=disable (a real cluster needs require or verify-full).
func TestConformanceRedshiftFlavour(t *testing.T) {
	t.Parallel()
	warehousetest.Run(t, harness(KindRedshift))
}

func TestPostgresSpecificTypes(t *testing.T) {
	t.Parallel()
	db := freshDatabase(t)
	src := openSource(t, connection(KindPostgres, db))
	query := `SELECT 'NaN'::numeric AS nan, 'Infinity'::numeric AS inf, 1e-30::numeric AS tiny,
		'infinity'::date AS d_inf, '-infinity'::timestamptz AS ts_inf,
		ROW(1, 'x')::record AS rec, ARRAY[1.5, NULL]::numeric[] AS nums, ARRAY['a"b']::text[] AS texts,
		'7d444840-9dc0-11d1-b245-5ffdce74fad2'::uuid AS id, 'ab'::char(3) AS bp, interval '1 day' AS iv,
		$1::date AS day`
	b, err := src.Sample(context.Background(), query, civil.Date{Year: 2024, Month: 5, Day: 6}, 10)
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	want := []struct {
		name, typ string
		long      int64
		str       string
	}{
		{"nan", schemas.TypeDecimal, 0, "NaN"},
		{"inf", schemas.TypeDecimal, 0, "Infinity"},
		{"tiny", schemas.TypeDecimal, 0, "0.000000000000000000000000000001"},
		{"d_inf", schemas.TypeDate, math.MaxInt64, ""},
		{"ts_inf", schemas.TypeTimestamp, math.MinInt64, ""},
		{"rec", schemas.TypeJSON, 0, `[1,"x"]`},
		{"nums", schemas.TypeJSON, 0, `[1.5,null]`},
		{"texts", schemas.TypeJSON, 0, `["a\"b"]`},
		{"id", schemas.TypeString, 0, "7d444840-9dc0-11d1-b245-5ffdce74fad2"},
		{"bp", schemas.TypeString, 0, "ab "},
		{"iv", schemas.TypeString, 0, "1 day"},
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
		case schemas.TypeDate, schemas.TypeTimestamp:
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

func TestCategory(t *testing.T) {
	tests := []struct {
		err       error
		category  vocab.Category
		transient bool
	}{
		{&pgconn.PgError{Code: "28P01"}, vocab.CategoryAuthentication, false},
		{&pgconn.PgError{Code: "28000"}, vocab.CategoryAuthentication, false},
		{&pgconn.PgError{Code: "42501"}, vocab.CategoryPermission, false},
		{&pgconn.PgError{Code: "42P01"}, vocab.CategoryQuery, false},
		{&pgconn.PgError{Code: "42703"}, vocab.CategoryQuery, false},
		{&pgconn.PgError{Code: "42601"}, vocab.CategoryQuery, false},
		{&pgconn.PgError{Code: "22012"}, vocab.CategoryQuery, false},
		{&pgconn.PgError{Code: "08006"}, vocab.CategoryConnection, true},
		{&pgconn.PgError{Code: "57P01"}, vocab.CategoryConnection, true},
		{&pgconn.PgError{Code: "57014"}, vocab.CategoryTimeout, true},
		{&pgconn.PgError{Code: "3D000"}, vocab.CategoryConfig, false},
		{fmt.Errorf("query: %w", context.DeadlineExceeded), vocab.CategoryTimeout, true},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, vocab.CategoryConnection, true},
		{io.ErrUnexpectedEOF, vocab.CategoryConnection, true},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := category(tt.err); got != tt.category {
				t.Errorf("category = %s, want %s", got, tt.category)
			}
			if got := transient(tt.err); got != tt.transient {
				t.Errorf("transient = %v, want %v", got, tt.transient)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	db := freshDatabase(t)
	const password = "s3cret-Pa55word"
	t.Setenv("SLUICE_TEST_PG_PASSWORD", password)
	tests := []struct {
		name     string
		cfg      config.Connection
		category vocab.Category
	}{
		{"unknown role", func() config.Connection {
			c := connection(KindPostgres, db)
			c.User, c.PasswordEnv = "sluice_no_such_role", "SLUICE_TEST_PG_PASSWORD"
			return c
		}(), vocab.CategoryAuthentication},
		{"unknown database", connection(KindPostgres, "sluice_no_such_database"), vocab.CategoryConfig},
		{"nothing listening", func() config.Connection {
			c := connection(KindRedshift, db)
			c.Port, c.PasswordEnv = 1, "SLUICE_TEST_PG_PASSWORD"
			return c
		}(), vocab.CategoryConnection},
		{"empty dsn env", config.Connection{Name: "x", Kind: KindPostgres, DSNEnv: "SLUICE_TEST_UNSET_DSN"}, vocab.CategoryConfig},
		{"bad dsn", func() config.Connection {
			t.Setenv("SLUICE_TEST_BAD_DSN", "postgres://u:"+password+"@127.0.0.1:notaport/db")
			return config.Connection{Name: "x", Kind: KindPostgres, DSNEnv: "SLUICE_TEST_BAD_DSN"}
		}(), vocab.CategoryConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(context.Background(), tt.cfg)
			if cat, _ := warehouse.Categorize(err); cat != tt.category {
				t.Fatalf("Open = %v; category %s, want %s", err, cat, tt.category)
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("error message leaks the password: %v", err)
			}
		})
	}
}

func TestOpenFromDSNEnv(t *testing.T) {
	db := freshDatabase(t)
	t.Setenv("SLUICE_TEST_PG_DSN", "postgres://postgres@127.0.0.1:5432/"+db)
	src := openSource(t, config.Connection{Name: "env", Kind: KindPostgres, DSNEnv: "SLUICE_TEST_PG_DSN", SSLMode: "disable", MaxConcurrency: 1})
	n, err := src.Count(context.Background(), "SELECT current_database() WHERE $1::date IS NOT NULL AND current_database() = '"+db+"'", civil.Date{Year: 2024, Month: 1, Day: 1})
	if err != nil || n != 1 {
		t.Fatalf("Count = %d, %v; want 1 row from database %s", n, err, db)
	}
}

func TestBuildDSNDefaults(t *testing.T) {
	tests := []struct {
		cfg  config.Connection
		want string
	}{
		{config.Connection{Kind: KindRedshift, Host: "cluster.example", User: "u", Database: "dev"}, "postgres://u@cluster.example:5439/dev?application_name=sluice&sslmode=require"},
		{config.Connection{Kind: KindPostgres, Host: "db", User: "u", Database: "d"}, "postgres://u@db:5432/d?application_name=sluice&sslmode=prefer"},
		{config.Connection{Kind: KindRedshift, Host: "h", Port: 5440, User: "u", Database: "d", SSLMode: "verify-full"}, "postgres://u@h:5440/d?application_name=sluice&sslmode=verify-full"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got, _, err := buildDSN(tt.cfg)
			if err != nil || got != tt.want {
				t.Fatalf("buildDSN = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestQueryTimeoutAndConcurrency(t *testing.T) {
	t.Parallel()
	db := freshDatabase(t)
	cfg := connection(KindPostgres, db)
	cfg.QueryTimeout = 200 * time.Millisecond
	cfg.MaxConcurrency = 1
	src := openSource(t, cfg)
	_, err := src.Count(context.Background(), "SELECT pg_sleep(30) WHERE $1::date IS NOT NULL", civil.Date{Year: 2024, Month: 1, Day: 1})
	if cat, transient := warehouse.Categorize(err); cat != vocab.CategoryTimeout || !transient {
		t.Fatalf("Count past the timeout = %v; category %s transient %v, want %s transient", err, cat, transient, vocab.CategoryTimeout)
	}
	// With the one slot held, a second query waits and gives up with its context.
	_, release, err := src.slots.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := src.Count(ctx, "SELECT 1 WHERE $1::date IS NOT NULL", civil.Date{Year: 2024, Month: 1, Day: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Count while the slot is held = %v, want context.Canceled", err)
	}
	release()
}

// BenchmarkPostgresStream streams 100k event-like rows (8 columns, one JSON).
func BenchmarkPostgresStream(b *testing.B) {
	for _, kind := range []string{KindPostgres, KindRedshift} {
		b.Run(kind, func(b *testing.B) {
			db := freshDatabase(b)
			execer(b, db)(b, `CREATE TABLE events AS SELECT
				'user_' || (i % 5000) AS user_id, 'device_' || (i % 7000) AS device_id,
				'event_' || (i % 20) AS event_name, timestamptz '2024-01-02 00:00:00+00' + i * interval '1 second' AS ts,
				(i % 100)::float8 AS value, i % 2 = 0 AS flag, date '2024-01-02' AS day,
				jsonb_build_object('plan', 'pro', 'n', i) AS metadata
				FROM generate_series(0, 99999) AS t(i)`)
			src := openSource(b, connection(kind, db))
			day := civil.Date{Year: 2024, Month: 1, Day: 2}
			query := "SELECT user_id, device_id, event_name, ts, value, flag, day, metadata FROM events WHERE day = $1"
			b.ReportAllocs()
			var rows int64
			for b.Loop() {
				n, err := src.Stream(context.Background(), query, day, 2000, func(*warehouse.Batch) error { return nil })
				if err != nil || n != 100000 {
					b.Fatalf("Stream = %d, %v", n, err)
				}
				rows += n
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// TestFingerprintOfUnhashableRows: a json column has no extended hash
// function, so the fingerprint falls back to hashing the row's text, and
// still sees a changed value.
func TestFingerprintOfUnhashableRows(t *testing.T) {
	t.Parallel()
	db := freshDatabase(t)
	src := openSource(t, connection(KindPostgres, db))
	exec := execer(t, db)
	exec(t, `CREATE TABLE fp (id bigint, day date, doc json, tags jsonb)`)
	exec(t, `INSERT INTO fp SELECT i, '2024-05-06', json_build_object('n', i), '{"a": 1}' FROM generate_series(1, 50) i`)
	day := civil.Date{Year: 2024, Month: 5, Day: 6}
	fingerprint := func(query string) string {
		t.Helper()
		fp, err := src.Fingerprint(context.Background(), query, day)
		if err != nil {
			t.Fatalf("Fingerprint(%s): %v", query, err)
		}
		return fp
	}
	withJSON := `SELECT id, doc FROM fp WHERE day = $1`
	hashable := `SELECT id, tags FROM fp WHERE day = $1`
	before, beforeHashable := fingerprint(withJSON), fingerprint(hashable)
	if !strings.HasPrefix(before, "t:50:") {
		t.Fatalf("fingerprint of rows with json = %q, want the text form t:50:...", before)
	}
	if strings.HasPrefix(beforeHashable, "t:") || !strings.HasPrefix(beforeHashable, "50:") {
		t.Fatalf("fingerprint of hashable rows = %q, want the record-hash form 50:...", beforeHashable)
	}
	if again := fingerprint(withJSON); again != before {
		t.Fatalf("fingerprint not stable: %q then %q", before, again)
	}
	exec(t, `UPDATE fp SET doc = '{"n": -1}', tags = '{"a": 2}' WHERE id = 7`)
	if after := fingerprint(withJSON); after == before {
		t.Errorf("fingerprint %q did not change when a json value did", after)
	}
	if after := fingerprint(hashable); after == beforeHashable {
		t.Errorf("fingerprint %q did not change when a jsonb value did", after)
	}
}
