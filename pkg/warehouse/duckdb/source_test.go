package duckdb

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/warehousetest"
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
