package bigquery

import (
	"bytes"
	"fmt"
	"io"
	"math/big"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// The Storage Read API sends Arrow record batches
// (https://cloud.google.com/bigquery/docs/reference/storage#arrow_schema_details):
// INT64 int64, FLOAT64 float64, BOOL boolean, STRING/JSON/GEOGRAPHY utf8,
// BYTES binary, DATE date32, TIMESTAMP timestamp(us, UTC), DATETIME
// timestamp(us), TIME time64(us), NUMERIC decimal128(38,9), BIGNUMERIC
// decimal256(76,38), REPEATED list, STRUCT and RANGE struct. Scalar
// columns go straight into the batch, column by column; nested values are
// built as bigquery.Values and rendered by the loader, as REST rows are.

// decodeRecord decodes one serialized record batch of a read session whose
// serialized Arrow schema is schema. The caller releases the record.
func decodeRecord(schema, data []byte) (arrow.RecordBatch, error) {
	r, err := ipc.NewReader(io.MultiReader(bytes.NewReader(schema), bytes.NewReader(data)),
		ipc.WithAllocator(memory.DefaultAllocator))
	if err != nil {
		return nil, fmt.Errorf("decode arrow record batch: %w", err)
	}
	defer r.Release()
	if !r.Next() {
		if err := r.Err(); err != nil {
			return nil, fmt.Errorf("decode arrow record batch: %w", err)
		}
		return nil, fmt.Errorf("decode arrow record batch: no record in a message of %d bytes", len(data))
	}
	rec := r.RecordBatch()
	rec.Retain()
	return rec, nil
}

// appendArrow appends rows [from, to) of col, the result's column i, to the
// batch. Strings alias the record's buffers, which the Go allocator leaves
// to the garbage collector, so they stay valid after the record's release.
func (l *loader) appendArrow(i int, col arrow.Array, from, to int) error {
	b := &l.batch
	f := l.schema[i]
	if f.Repeated || f.Type == bigquery.RecordFieldType {
		return l.appendValues(i, col, from, to)
	}
	switch a := col.(type) {
	case *array.Int64:
		for j := from; j < to; j++ {
			if a.IsNull(j) {
				b.AppendNull(i)
			} else {
				b.AppendLong(i, a.Value(j))
			}
		}
	case *array.Float64:
		for j := from; j < to; j++ {
			if a.IsNull(j) {
				b.AppendNull(i)
			} else {
				b.AppendDouble(i, a.Value(j))
			}
		}
	case *array.Boolean:
		for j := from; j < to; j++ {
			if a.IsNull(j) {
				b.AppendNull(i)
			} else {
				b.AppendBool(i, a.Value(j))
			}
		}
	case *array.String: // STRING, JSON, GEOGRAPHY
		for j := from; j < to; j++ {
			if a.IsNull(j) {
				b.AppendNull(i)
			} else {
				b.AppendString(i, a.Value(j))
			}
		}
	case *array.Binary:
		for j := from; j < to; j++ {
			if a.IsNull(j) {
				b.AppendNull(i)
			} else {
				b.AppendBytes(i, a.Value(j))
			}
		}
	case *array.Date32:
		for j := from; j < to; j++ {
			if a.IsNull(j) {
				b.AppendNull(i)
			} else {
				b.AppendDate(i, int64(a.Value(j)))
			}
		}
	case *array.Timestamp:
		// TIMESTAMP is UTC; DATETIME's wall time is read as UTC: the same
		// microseconds either way.
		unit := a.DataType().(*arrow.TimestampType).Unit
		for j := from; j < to; j++ {
			if a.IsNull(j) {
				b.AppendNull(i)
			} else {
				b.AppendTimestamp(i, a.Value(j).ToTime(unit).UnixMicro())
			}
		}
	case *array.Time64:
		unit := a.DataType().(*arrow.Time64Type).Unit
		for j := from; j < to; j++ {
			if a.IsNull(j) {
				b.AppendNull(i)
			} else {
				b.AppendString(i, timeText(timeOfDay(a.Value(j), unit)))
			}
		}
	case *array.Decimal128:
		scale := a.DataType().(*arrow.Decimal128Type).Scale
		for j := from; j < to; j++ {
			if a.IsNull(j) {
				b.AppendNull(i)
			} else {
				b.AppendDecimal(i, rescale(a.Value(j).ToString(scale), int(scale), l.scales[i]))
			}
		}
	case *array.Decimal256:
		scale := a.DataType().(*arrow.Decimal256Type).Scale
		for j := from; j < to; j++ {
			if a.IsNull(j) {
				b.AppendNull(i)
			} else {
				b.AppendDecimal(i, rescale(a.Value(j).ToString(scale), int(scale), l.scales[i]))
			}
		}
	default: // INTERVAL, RANGE
		return l.appendValues(i, col, from, to)
	}
	return nil
}

// appendValues appends rows [from, to) of col through bigquery.Values, for
// the nested types the loader renders as JSON text.
func (l *loader) appendValues(i int, col arrow.Array, from, to int) error {
	f := l.schema[i]
	for j := from; j < to; j++ {
		v, err := arrowValue(col, j, f, f.Repeated)
		if err != nil {
			return err
		}
		if err := l.append(i, v); err != nil {
			return err
		}
	}
	return nil
}

// arrowValue is value j of col as the client's REST path returns it.
func arrowValue(col arrow.Array, j int, f *bigquery.FieldSchema, repeated bool) (bigquery.Value, error) {
	if col.IsNull(j) {
		return nil, nil
	}
	if repeated {
		a, ok := col.(*array.List)
		if !ok {
			return nil, fmt.Errorf("REPEATED column arrived as arrow %s", col.DataType())
		}
		start, end := a.ValueOffsets(j)
		elems := a.ListValues()
		vals := make([]bigquery.Value, 0, end-start)
		for k := start; k < end; k++ {
			v, err := arrowValue(elems, int(k), f, false)
			if err != nil {
				return nil, err
			}
			vals = append(vals, v)
		}
		return vals, nil
	}
	switch a := col.(type) {
	case *array.Int64:
		return a.Value(j), nil
	case *array.Float64:
		return a.Value(j), nil
	case *array.Boolean:
		return a.Value(j), nil
	case *array.String:
		return a.Value(j), nil
	case *array.Binary:
		return a.Value(j), nil
	case *array.Date32:
		return civil.DateOf(a.Value(j).ToTime()), nil
	case *array.Timestamp:
		dt := a.DataType().(*arrow.TimestampType)
		t := a.Value(j).ToTime(dt.Unit)
		if dt.TimeZone == "" {
			return civil.DateTimeOf(t), nil
		}
		return t.UTC(), nil
	case *array.Time64:
		return timeOfDay(a.Value(j), a.DataType().(*arrow.Time64Type).Unit), nil
	case *array.Decimal128:
		return decimalRat(a.Value(j).ToString(a.DataType().(*arrow.Decimal128Type).Scale))
	case *array.Decimal256:
		return decimalRat(a.Value(j).ToString(a.DataType().(*arrow.Decimal256Type).Scale))
	case *array.MonthDayNanoInterval:
		v := a.Value(j)
		iv := &bigquery.IntervalValue{Years: v.Months / 12, Months: v.Months % 12, Days: v.Days,
			Hours: int32(v.Nanoseconds / int64(time.Hour)), Minutes: int32(v.Nanoseconds / int64(time.Minute) % 60),
			Seconds: int32(v.Nanoseconds / int64(time.Second) % 60), SubSecondNanos: int32(v.Nanoseconds % int64(time.Second))}
		return iv, nil
	case *array.Struct:
		if f.Type == bigquery.RangeFieldType && f.RangeElementType != nil {
			elem := &bigquery.FieldSchema{Type: f.RangeElementType.Type}
			start, err := arrowValue(a.Field(0), j, elem, false)
			if err != nil {
				return nil, err
			}
			end, err := arrowValue(a.Field(1), j, elem, false)
			if err != nil {
				return nil, err
			}
			return &bigquery.RangeValue{Start: start, End: end}, nil
		}
		if a.NumField() != len(f.Schema) {
			return nil, fmt.Errorf("STRUCT arrived with %d fields for %d", a.NumField(), len(f.Schema))
		}
		vals := make([]bigquery.Value, len(f.Schema))
		for k, sf := range f.Schema {
			v, err := arrowValue(a.Field(k), j, sf, sf.Repeated)
			if err != nil {
				return nil, err
			}
			vals[k] = v
		}
		return vals, nil
	}
	return nil, fmt.Errorf("arrow type %s not supported", col.DataType())
}

// timeOfDay is a TIME value of the given unit since midnight.
func timeOfDay(v arrow.Time64, unit arrow.TimeUnit) civil.Time {
	d := time.Duration(v) * unit.Multiplier()
	return civil.Time{Hour: int(d / time.Hour), Minute: int(d / time.Minute % 60), Second: int(d / time.Second % 60),
		Nanosecond: int(d % time.Second)}
}

// rescale turns decimal text with from decimal places, as Arrow renders
// it, into text with to places, the column's scale: BigQuery's values fit
// their column's scale, so the digits cut are zeros.
func rescale(text string, from, to int) string {
	switch {
	case to == from:
		return text
	case to > from:
		if from == 0 {
			text += "."
		}
		for range to - from {
			text += "0"
		}
		return text
	case to == 0:
		return text[:len(text)-from-1]
	}
	return text[:len(text)-(from-to)]
}

func decimalRat(text string) (*big.Rat, error) {
	r, ok := new(big.Rat).SetString(text)
	if !ok {
		return nil, fmt.Errorf("decimal %q does not parse", text)
	}
	return r, nil
}
