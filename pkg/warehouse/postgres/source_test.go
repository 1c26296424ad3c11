package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/warehousetest"
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

func execer(database string) func(testing.TB, string) {
	return func(tb testing.TB, sql string) {
		tb.Helper()
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, strings.Replace(adminDSN, "/postgres?", "/"+database+"?", 1))
		if err != nil {
			tb.Fatalf("connect: %v", err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			tb.Fatalf("exec %s: %v", sql, err)
		}
	}
}

func harness(kind string) warehousetest.Harness {
	return warehousetest.Harness{
		Open: func(tb testing.TB) (warehouse.Source, func(testing.TB, string)) {
			db := freshDatabase(tb)
			return openSource(tb, connection(kind, db)), execer(db)
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
