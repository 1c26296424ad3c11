package snowflake

import (
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// BenchmarkAppendArrow measures the per-row path: one 10k-row chunk of
// (NUMBER int32, TEXT, timestamp micros) into reused 1000-row batches.
func BenchmarkAppendArrow(b *testing.B) {
	const n = 10000
	mem := memory.NewGoAllocator()
	ib := array.NewInt32Builder(mem)
	sb := array.NewStringBuilder(mem)
	tb := array.NewTimestampBuilder(mem, &arrow.TimestampType{Unit: arrow.Microsecond})
	for i := range n {
		ib.Append(int32(i))
		sb.Append("user-" + strconv.Itoa(i))
		tb.Append(arrow.Timestamp(1700000000000000 + int64(i)))
	}
	cols := []arrow.Array{ib.NewArray(), sb.NewArray(), tb.NewArray()}
	schema := arrow.NewSchema([]arrow.Field{{Name: "ID", Type: cols[0].DataType()}, {Name: "U", Type: cols[1].DataType()}, {Name: "TS", Type: cols[2].DataType()}}, nil)
	rec := array.NewRecord(schema, cols, n)
	defer rec.Release()
	r := &reader{
		specs: []warehouse.ColumnSpec{
			{Name: "ID", Type: schemas.TypeLong}, {Name: "U", Type: schemas.TypeString}, {Name: "TS", Type: schemas.TypeTimestamp},
		},
		scales: make([]int, 3),
		max:    1000,
		emit:   func(*warehouse.Batch, warehouse.Cursor) error { return nil },
	}
	r.batch.SetColumns(r.specs)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r.row = 0 // each pass is a fresh chunk, as read starts one
		if err := r.appendRecords([]arrow.Record{rec}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
}
