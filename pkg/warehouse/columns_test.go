package warehouse

import (
	"context"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/schemas"
)

func TestBatchAppendKeepsRowsAligned(t *testing.T) {
	specs := []ColumnSpec{
		{Name: "b", Type: schemas.TypeBoolean, DBType: "BOOLEAN"},
		{Name: "l", Type: schemas.TypeLong, DBType: "BIGINT"},
		{Name: "f", Type: schemas.TypeDouble, DBType: "DOUBLE"},
		{Name: "d", Type: schemas.TypeDecimal, DBType: "DECIMAL(10,2)"},
		{Name: "s", Type: schemas.TypeString, DBType: "VARCHAR"},
		{Name: "day", Type: schemas.TypeDate, DBType: "DATE"},
		{Name: "ts", Type: schemas.TypeTimestamp, DBType: "TIMESTAMP"},
		{Name: "j", Type: schemas.TypeJSON, DBType: "JSON"},
		{Name: "y", Type: schemas.TypeBytes, DBType: "BLOB"},
	}
	var b Batch
	b.SetColumns(specs)
	// row 0: values; row 1: all null.
	b.AppendBool(0, true)
	b.AppendLong(1, math.MinInt64)
	b.AppendDouble(2, math.Inf(-1))
	b.AppendDecimal(3, "-1.50")
	b.AppendString(4, "é\n'")
	b.AppendDate(5, DaysSinceEpoch(civil.Date{Year: 1969, Month: 12, Day: 31}))
	b.AppendTimestamp(6, MicrosOf(time.Date(2024, 1, 2, 3, 4, 5, 6000, time.FixedZone("x", 3600))))
	b.AppendJSON(7, `{"a":1}`)
	b.AppendBytes(8, []byte{0, 1, 255})
	b.EndRow()
	for i := range specs {
		b.AppendNull(i)
	}
	b.EndRow()

	want := []schemas.Column{
		{Name: "b", Type: schemas.TypeBoolean, DBType: "BOOLEAN", Nulls: []byte{0, 1}, Bools: []bool{true, false}},
		{Name: "l", Type: schemas.TypeLong, DBType: "BIGINT", Nulls: []byte{0, 1}, Longs: []int64{math.MinInt64, 0}},
		{Name: "f", Type: schemas.TypeDouble, DBType: "DOUBLE", Nulls: []byte{0, 1}, Doubles: []float64{math.Inf(-1), 0}},
		{Name: "d", Type: schemas.TypeDecimal, DBType: "DECIMAL(10,2)", Nulls: []byte{0, 1}, Strings: []string{"-1.50", ""}},
		{Name: "s", Type: schemas.TypeString, DBType: "VARCHAR", Nulls: []byte{0, 1}, Strings: []string{"é\n'", ""}},
		{Name: "day", Type: schemas.TypeDate, DBType: "DATE", Nulls: []byte{0, 1}, Longs: []int64{-1, 0}},
		{Name: "ts", Type: schemas.TypeTimestamp, DBType: "TIMESTAMP", Nulls: []byte{0, 1}, Longs: []int64{1704161045000006, 0}},
		{Name: "j", Type: schemas.TypeJSON, DBType: "JSON", Nulls: []byte{0, 1}, Strings: []string{`{"a":1}`, ""}},
		{Name: "y", Type: schemas.TypeBytes, DBType: "BLOB", Nulls: []byte{0, 1}, Strings: []string{"AAH/", ""}},
	}
	if b.Rows != 2 {
		t.Fatalf("rows = %d, want 2", b.Rows)
	}
	for i := range want {
		got := b.Columns[i]
		w := want[i]
		if got.Name != w.Name || got.Type != w.Type || got.DBType != w.DBType ||
			!reflect.DeepEqual(got.Nulls, w.Nulls) || !equalOrEmpty(got.Bools, w.Bools) ||
			!equalOrEmpty(got.Longs, w.Longs) || !equalOrEmpty(got.Doubles, w.Doubles) || !equalOrEmpty(got.Strings, w.Strings) {
			t.Errorf("column %d = %+v, want %+v", i, got, w)
		}
	}

	t.Run("SetColumns reuses and resets", func(t *testing.T) {
		b.SetColumns(specs[:2])
		if b.Rows != 0 || len(b.Columns) != 2 || len(b.Columns[1].Longs) != 0 || cap(b.Columns[1].Longs) < 2 {
			t.Fatalf("after SetColumns: rows=%d cols=%d longs=%v cap=%d", b.Rows, len(b.Columns), b.Columns[1].Longs, cap(b.Columns[1].Longs))
		}
		b.SetColumns(specs)
		if len(b.Columns) != len(specs) || b.Columns[8].Name != "y" || len(b.Columns[8].Strings) != 0 {
			t.Fatalf("grown columns = %+v", b.Columns)
		}
	})
}

func equalOrEmpty[T any](a, b []T) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func TestDays(t *testing.T) {
	tests := []struct {
		d    civil.Date
		want int64
	}{
		{civil.Date{Year: 1970, Month: 1, Day: 1}, 0},
		{civil.Date{Year: 1970, Month: 1, Day: 2}, 1},
		{civil.Date{Year: 1969, Month: 12, Day: 31}, -1},
		{civil.Date{Year: 2024, Month: 2, Day: 29}, 19782},
		{civil.Date{Year: 1, Month: 1, Day: 1}, -719162},
	}
	for _, tt := range tests {
		t.Run(tt.d.String(), func(t *testing.T) {
			if got := DaysSinceEpoch(tt.d); got != tt.want {
				t.Errorf("DaysSinceEpoch = %d, want %d", got, tt.want)
			}
			// A driver's midnight in some other zone is still that date.
			local := time.Date(tt.d.Year, tt.d.Month, tt.d.Day, 0, 0, 0, 0, time.FixedZone("m", -8*3600))
			if got := DaysOf(local); got != tt.want {
				t.Errorf("DaysOf(%v) = %d, want %d", local, got, tt.want)
			}
		})
	}
}

func BenchmarkBatchAppend(b *testing.B) {
	specs := []ColumnSpec{
		{Name: "l", Type: schemas.TypeLong},
		{Name: "f", Type: schemas.TypeDouble},
		{Name: "s", Type: schemas.TypeString},
		{Name: "ts", Type: schemas.TypeTimestamp},
		{Name: "n", Type: schemas.TypeBoolean},
	}
	var batch Batch
	batch.SetColumns(specs)
	const batchRows = 1000
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if batch.Full(batchRows) {
			batch.Reset()
		}
		batch.AppendLong(0, int64(i))
		batch.AppendDouble(1, float64(i))
		batch.AppendString(2, "event_name")
		batch.AppendTimestamp(3, int64(i)*1000)
		batch.AppendNull(4)
		batch.EndRow()
	}
}

func TestEmitIfFull(t *testing.T) {
	var b Batch
	b.SetColumns([]ColumnSpec{{Name: "n", Type: schemas.TypeLong}})
	var total int64
	var emitted []int
	emit := func(x *Batch) error { emitted = append(emitted, x.Rows); return nil }
	for i := range 5 {
		b.AppendLong(0, int64(i))
		b.EndRow()
		if err := b.EmitIfFull(context.Background(), 2, &total, emit); err != nil {
			t.Fatal(err)
		}
	}
	if len(emitted) != 2 || total != 4 || b.Rows != 1 {
		t.Fatalf("emitted %v, total %d, left %d rows; want two batches of 2, total 4, 1 left", emitted, total, b.Rows)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.AppendLong(0, 9)
	b.EndRow()
	if err := b.EmitIfFull(ctx, 2, &total, emit); !errors.Is(err, context.Canceled) || len(emitted) != 2 {
		t.Fatalf("cancelled: err %v, %d emits; want context.Canceled and no emit", err, len(emitted))
	}
}
