package bigquery

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"cloud.google.com/go/civil"
	"google.golang.org/api/option"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery/bqtest"
	"github.com/sluicehq/sluice/pkg/warehouse/warehousetest"
)

const testDataset = "sluice_test"

// testConn is a connection to srv with testDataset as the default dataset.
func testConn(srv *bqtest.Server) config.Connection {
	return config.Connection{Name: "bq", Kind: "bigquery", ProjectID: "sluice-test", Location: "US", Schema: testDataset, Endpoint: srv.URL}
}

// openTest opens a source on srv that is closed when tb ends.
func openTest(tb testing.TB, cfg config.Connection, o Options) *Source {
	tb.Helper()
	o.ClientOptions = append(o.ClientOptions, option.WithoutAuthentication())
	src, err := OpenWith(context.Background(), cfg, o)
	if err != nil {
		tb.Fatalf("open bigquery source: %v", err)
	}
	tb.Cleanup(func() { src.Close() })
	return src
}

// bqString renders s as a GoogleSQL string literal.
func bqString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\t", `\t`, "\r", `\r`)
	return "'" + r.Replace(s) + "'"
}

func harness() warehousetest.Harness {
	return warehousetest.Harness{
		Open: func(tb testing.TB) (warehouse.Source, func(testing.TB, string)) {
			srv := bqtest.NewServer(tb)
			srv.SetPageSize(700) // the large day spans many pages and Arrow batches
			src := openTest(tb, testConn(srv), Options{})
			return src, func(tb testing.TB, sql string) {
				tb.Helper()
				if err := srv.Exec(testDataset, sql); err != nil {
					tb.Fatal(err)
				}
			}
		},
		TypeName: func(t warehousetest.Type) string {
			return map[warehousetest.Type]string{
				warehousetest.Int8: "INT64", warehousetest.Int16: "INT64", warehousetest.Int32: "INT64", warehousetest.Int64: "INT64",
				warehousetest.Decimal38x10: "BIGNUMERIC(38,10)", warehousetest.Decimal10x2: "NUMERIC(10,2)",
				warehousetest.Float32: "FLOAT64", warehousetest.Float64: "FLOAT64", warehousetest.Bool: "BOOL",
				warehousetest.String: "STRING", warehousetest.Bytes: "BYTES", warehousetest.Date: "DATE",
				warehousetest.Timestamp: "DATETIME", warehousetest.TimestampTZ: "TIMESTAMP", warehousetest.JSON: "JSON",
				warehousetest.IntArray: "ARRAY<INT64>", warehousetest.Struct: "STRUCT<a INT64, b STRING>",
			}[t]
		},
		Placeholder: "@date",
		Literal: func(t warehousetest.Type, v any) string {
			switch v := v.(type) {
			case []int64:
				s := strings.Trim(strings.ReplaceAll(fmt.Sprint(v), " ", ", "), "[]")
				return "ARRAY<INT64>[" + s + "]"
			case warehousetest.StructValue:
				return fmt.Sprintf("STRUCT(%d AS a, %s AS b)", v.A, bqString(v.B))
			case []byte:
				return "FROM_BASE64(" + bqString(base64Std(v)) + ")"
			case string:
				switch t {
				case warehousetest.String:
					return bqString(v)
				case warehousetest.JSON:
					return "JSON " + bqString(v)
				}
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

var testDay = civil.Date{Year: 2024, Month: 1, Day: 2}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
