package snowflake

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	sf "github.com/snowflakedb/gosnowflake"

	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// reader fills one reusable batch from Arrow records or driver rows and
// emits it whenever it holds batchRows rows.
type reader struct {
	specs   []warehouse.ColumnSpec
	scales  []int
	batch   warehouse.Batch
	max     int
	emit    func(*warehouse.Batch) error
	total   int64
	emitted bool
	ctx     context.Context // the stream's, checked after each emit
	dest    []driver.Value
}

func newReader(rows driver.Rows, batchRows int, emit func(*warehouse.Batch) error) (*reader, error) {
	names := rows.Columns()
	r := &reader{specs: make([]warehouse.ColumnSpec, len(names)), scales: make([]int, len(names)), max: batchRows, emit: emit}
	typed, _ := rows.(driver.RowsColumnTypeDatabaseTypeName)
	ps, _ := rows.(driver.RowsColumnTypePrecisionScale)
	for i, name := range names {
		dbType := "TEXT"
		if typed != nil {
			dbType = typed.ColumnTypeDatabaseTypeName(i)
		}
		var p, sc int64
		if ps != nil {
			p, sc, _ = ps.ColumnTypePrecisionScale(i)
		}
		r.scales[i] = int(sc)
		r.specs[i] = warehouse.ColumnSpec{Name: name, Type: rawType(dbType, sc), DBType: dbTypeName(dbType, p, sc)}
	}
	r.batch.SetColumns(r.specs)
	return r, nil
}

// rawType maps a Snowflake rowtype to a raw-rows column type.
func rawType(dbType string, scale int64) string {
	switch dbType {
	case "FIXED":
		if scale == 0 {
			return schemas.TypeLong
		}
		return schemas.TypeDecimal
	case "DECFLOAT":
		return schemas.TypeDecimal
	case "REAL":
		return schemas.TypeDouble
	case "BOOLEAN":
		return schemas.TypeBoolean
	case "DATE":
		return schemas.TypeDate
	case "TIMESTAMP_NTZ", "TIMESTAMP_LTZ", "TIMESTAMP_TZ":
		return schemas.TypeTimestamp
	case "VARIANT", "OBJECT", "ARRAY", "MAP":
		return schemas.TypeJSON
	case "BINARY":
		return schemas.TypeBytes
	default: // TEXT, TIME, GEOGRAPHY, ...
		return schemas.TypeString
	}
}

func dbTypeName(dbType string, p, s int64) string {
	if dbType == "FIXED" {
		return fmt.Sprintf("NUMBER(%d,%d)", p, s)
	}
	return dbType
}

// read consumes the result: Arrow batches one chunk at a time, or the
// driver's rows when the server answered with a JSON rowset.
func (r *reader) read(ctx context.Context, rows driver.Rows) error {
	r.ctx = ctx
	sfRows, ok := rows.(sf.SnowflakeRows)
	if !ok {
		return r.readRows(rows)
	}
	batches, err := sfRows.GetArrowBatches()
	var se *sf.SnowflakeError
	if errors.As(err, &se) && se.Number == sf.ErrNonArrowResponseInArrowBatches {
		return r.readRows(rows)
	}
	if err != nil {
		return classify(err)
	}
	for _, b := range batches {
		if err := ctx.Err(); err != nil {
			return err
		}
		recs, err := b.WithContext(ctx).Fetch()
		if err != nil {
			return classify(err)
		}
		if recs == nil {
			continue
		}
		err = r.appendRecords(*recs)
		// Release the chunk now: only the outgoing batch stays in memory.
		for _, rec := range *recs {
			rec.Release()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *reader) appendRecords(recs []arrow.Record) error {
	for _, rec := range recs {
		n := int(rec.NumRows())
		for off := 0; off < n; {
			k := min(n-off, r.max-r.batch.Rows)
			for ci, col := range rec.Columns() {
				if err := r.appendArrow(ci, col, off, off+k); err != nil {
					return fmt.Errorf("column %s: %w", r.specs[ci].Name, err)
				}
			}
			r.batch.Rows += k
			off += k
			if err := r.flushIfFull(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *reader) flushIfFull() error {
	if r.batch.Rows < r.max {
		return nil
	}
	return r.flush(false)
}

// flush emits the batch if it has rows (or if emitEmpty, so a sample of an
// empty day still reports its columns), then resets it.
func (r *reader) flush(emitEmpty bool) error {
	if r.batch.Rows == 0 && (!emitEmpty || r.emitted) {
		return nil
	}
	r.emitted = true
	r.total += int64(r.batch.Rows)
	if err := r.emit(&r.batch); err != nil {
		return err
	}
	r.batch.SetColumns(r.specs) // also undoes a LONG column's promotion to DECIMAL
	if r.ctx != nil {
		// A chunk holds many batches: stop between them once cancelled.
		if err := r.ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// promote turns LONG column ci of the current batch into DECIMAL text,
// for a NUMBER(p,0) value beyond int64.
func (r *reader) promote(ci int) {
	c := &r.batch.Columns[ci]
	c.Type = schemas.TypeDecimal
	for i, v := range c.Longs {
		s := ""
		if c.Nulls[i] == 0 {
			s = strconv.FormatInt(v, 10)
		}
		c.Strings = append(c.Strings, s)
	}
	c.Longs = c.Longs[:0]
}

func (r *reader) appendInt(ci int, v int64) {
	c := &r.batch.Columns[ci]
	switch {
	case c.Type == schemas.TypeLong:
		r.batch.AppendLong(ci, v)
	default:
		r.batch.AppendDecimal(ci, scaledText(v, r.scales[ci]))
	}
}

func (r *reader) appendBig(ci int, v *big.Int) {
	c := &r.batch.Columns[ci]
	if c.Type == schemas.TypeLong {
		if v.IsInt64() {
			r.batch.AppendLong(ci, v.Int64())
			return
		}
		r.promote(ci)
	}
	r.batch.AppendDecimal(ci, bigText(v, r.scales[ci]))
}

func (r *reader) appendArrow(ci int, col arrow.Array, from, to int) error {
	b := &r.batch
	switch a := col.(type) {
	case *array.Int8:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				r.appendInt(ci, int64(a.Value(i)))
			}
		}
	case *array.Int16:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				r.appendInt(ci, int64(a.Value(i)))
			}
		}
	case *array.Int32:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				r.appendInt(ci, int64(a.Value(i)))
			}
		}
	case *array.Int64:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				r.appendInt(ci, a.Value(i))
			}
		}
	case *array.Decimal128:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				r.appendBig(ci, a.Value(i).BigInt())
			}
		}
	case *array.Float64:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				b.AppendDouble(ci, a.Value(i))
			}
		}
	case *array.Boolean:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				b.AppendBool(ci, a.Value(i))
			}
		}
	case *array.Date32:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				b.AppendDate(ci, int64(a.Value(i)))
			}
		}
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				b.AppendTimestamp(ci, a.Value(i).ToTime(unit).UnixMicro())
			}
		}
	case *array.Time64:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				b.AppendString(ci, timeOfDay(time.Duration(a.Value(i))))
			}
		}
	case *array.String:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				// Value aliases the chunk's buffer, released after this chunk.
				b.AppendString(ci, strings.Clone(a.Value(i)))
			}
		}
	case *array.Binary:
		for i := from; i < to; i++ {
			if a.IsNull(i) {
				b.AppendNull(ci)
			} else {
				b.AppendBytes(ci, a.Value(i))
			}
		}
	default:
		return fmt.Errorf("arrow type %s not supported", col.DataType())
	}
	return nil
}

// readRows reads a JSON rowset through the driver, which has already
// converted each value (strings for NUMBER, big numbers with higher
// precision, time.Time for dates and timestamps).
func (r *reader) readRows(rows driver.Rows) error {
	r.dest = make([]driver.Value, len(r.specs))
	for {
		err := rows.Next(r.dest)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return classify(err)
		}
		for ci, v := range r.dest {
			if err := r.appendValue(ci, v); err != nil {
				return fmt.Errorf("column %s: %w", r.specs[ci].Name, err)
			}
		}
		r.batch.EndRow()
		if err := r.flushIfFull(); err != nil {
			return err
		}
	}
}

func (r *reader) appendValue(ci int, v driver.Value) error {
	b := &r.batch
	if v == nil {
		b.AppendNull(ci)
		return nil
	}
	switch r.specs[ci].Type {
	case schemas.TypeLong, schemas.TypeDecimal:
		switch n := v.(type) {
		case big.Int:
			r.appendBig(ci, &n)
		case big.Float:
			b.AppendDecimal(ci, n.Text('f', r.scales[ci]))
		case string:
			if b.Columns[ci].Type == schemas.TypeLong {
				if x, err := strconv.ParseInt(n, 10, 64); err == nil {
					b.AppendLong(ci, x)
					return nil
				}
				u, ok := new(big.Int).SetString(n, 10)
				if !ok {
					return fmt.Errorf("%q is not an integer", n)
				}
				r.appendBig(ci, u)
				return nil
			}
			b.AppendDecimal(ci, n)
		case int64:
			r.appendInt(ci, n)
		default:
			return fmt.Errorf("number arrived as %T", v)
		}
	case schemas.TypeDouble:
		switch f := v.(type) {
		case string:
			x, err := strconv.ParseFloat(f, 64)
			if err != nil {
				return err
			}
			b.AppendDouble(ci, x)
		case float64:
			b.AppendDouble(ci, f)
		default:
			return fmt.Errorf("float arrived as %T", v)
		}
	case schemas.TypeBoolean:
		switch x := v.(type) {
		case bool:
			b.AppendBool(ci, x)
		case string:
			b.AppendBool(ci, x == "1" || strings.EqualFold(x, "true"))
		default:
			return fmt.Errorf("boolean arrived as %T", v)
		}
	case schemas.TypeDate:
		t, ok := v.(time.Time)
		if !ok {
			return fmt.Errorf("date arrived as %T", v)
		}
		b.AppendDate(ci, warehouse.DaysOf(t))
	case schemas.TypeTimestamp:
		t, ok := v.(time.Time)
		if !ok {
			return fmt.Errorf("timestamp arrived as %T", v)
		}
		b.AppendTimestamp(ci, warehouse.MicrosOf(t))
	case schemas.TypeBytes:
		x, ok := v.([]byte)
		if !ok {
			return fmt.Errorf("binary arrived as %T", v)
		}
		b.AppendBytes(ci, x)
	default: // STRING, JSON
		switch x := v.(type) {
		case string:
			b.AppendString(ci, x)
		case time.Time: // TIME
			b.AppendString(ci, timeOfDay(x.Sub(time.Date(x.Year(), x.Month(), x.Day(), 0, 0, 0, 0, x.Location()))))
		default:
			b.AppendString(ci, fmt.Sprint(x))
		}
	}
	return nil
}

// scaledText formats an unscaled NUMBER with its scale: 12345, 2 -> 123.45.
func scaledText(v int64, scale int) string {
	if scale == 0 {
		return strconv.FormatInt(v, 10)
	}
	return bigText(big.NewInt(v), scale)
}

func bigText(v *big.Int, scale int) string {
	s := new(big.Int).Abs(v).String()
	if scale > 0 {
		if len(s) <= scale {
			s = strings.Repeat("0", scale-len(s)+1) + s
		}
		s = s[:len(s)-scale] + "." + s[len(s)-scale:]
	}
	if v.Sign() < 0 {
		return "-" + s
	}
	return s
}

func timeOfDay(d time.Duration) string {
	t := time.Unix(0, int64(d)).UTC()
	return t.Format("15:04:05.000000000")
}
