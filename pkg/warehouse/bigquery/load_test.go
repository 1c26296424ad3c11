package bigquery

import (
	"math"
	"math/big"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/schemas"
)

func TestLoaderTypes(t *testing.T) {
	t.Parallel()
	schema := bigquery.Schema{
		{Name: "t", Type: bigquery.TimeFieldType},
		{Name: "dt", Type: bigquery.DateTimeFieldType},
		{Name: "g", Type: bigquery.GeographyFieldType},
		{Name: "rec", Type: bigquery.RecordFieldType, Schema: bigquery.Schema{
			{Name: "n", Type: bigquery.NumericFieldType},
			{Name: "f", Type: bigquery.FloatFieldType, Repeated: true},
			{Name: "s", Type: bigquery.StringFieldType},
			{Name: "j", Type: bigquery.JSONFieldType},
			{Name: "ts", Type: bigquery.TimestampFieldType},
		}},
	}
	l := newLoader()
	rat, _ := new(big.Rat).SetString("1.5")
	row := []bigquery.Value{
		civil.Time{Hour: 1, Minute: 2, Second: 3, Nanosecond: 4000},
		civil.DateTime{Date: civil.Date{Year: 2024, Month: 1, Day: 2}, Time: civil.Time{Hour: 3}},
		"POINT(1 2)",
		[]bigquery.Value{rat, []bigquery.Value{1.5, math.Inf(1)}, "a\"\n", `{"k":[1]}`, time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC)},
	}
	if err := l.Load(row, schema); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ string
		val any
	}{
		{schemas.TypeString, "01:02:03.000004"},
		{schemas.TypeTimestamp, time.Date(2024, 1, 2, 3, 0, 0, 0, time.UTC).UnixMicro()},
		{schemas.TypeString, "POINT(1 2)"},
		{schemas.TypeJSON, `{"n":1.500000000,"f":[1.5,"+Inf"],"s":"a\"\n","j":{"k":[1]},"ts":"2024-01-02T03:04:05.000006Z"}`},
	}
	for i, w := range want {
		c := l.batch.Columns[i]
		var got any
		if c.Type == schemas.TypeTimestamp {
			got = c.Longs[0]
		} else {
			got = c.Strings[0]
		}
		if c.Type != w.typ || got != w.val {
			t.Errorf("column %s = %s %v, want %s %v", c.Name, c.Type, got, w.typ, w.val)
		}
	}
	if l.batch.Columns[3].DBType != "STRUCT<n NUMERIC, f ARRAY<FLOAT64>, s STRING, j JSON, ts TIMESTAMP>" {
		t.Errorf("db type %s", l.batch.Columns[3].DBType)
	}
}

// BenchmarkLoad measures the per-row path: one typical events row into a batch.
func BenchmarkLoad(b *testing.B) {
	schema := bigquery.Schema{
		{Name: "user_id", Type: bigquery.StringFieldType},
		{Name: "event", Type: bigquery.StringFieldType},
		{Name: "ts", Type: bigquery.TimestampFieldType},
		{Name: "value", Type: bigquery.FloatFieldType},
		{Name: "n", Type: bigquery.IntegerFieldType},
		{Name: "day", Type: bigquery.DateFieldType},
	}
	row := []bigquery.Value{"u-123", "purchase", time.Unix(1700000000, 0), 9.99, int64(3), civil.Date{Year: 2024, Month: 1, Day: 2}}
	l := newLoader()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%1000 == 0 {
			l.batch.Reset()
		}
		if err := l.Load(row, schema); err != nil {
			b.Fatal(err)
		}
	}
}
