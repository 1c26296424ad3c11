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

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// reader fills one reusable batch from Arrow records or driver rows and
// emits it whenever it holds batchRows rows, with the cursor the result
// continues from after it.
type reader struct {
	specs   []warehouse.ColumnSpec
	scales  []int
	batch   warehouse.Batch
	max     int
	emit    func(*warehouse.Batch, warehouse.Cursor) error
	total   int64
	emitted bool
	ctx     context.Context // the stream's, checked after each emit
	dest    []driver.Value

	// Where the next row comes from, for the cursor: Arrow results count
	// chunks (the driver's arrow batches, one per result chunk) and rows
	// within the current one; JSON rowsets count rows from the start.
	token    string
	arrow    bool
	chunk    int
	row      int   // rows of chunk before the next one (skipped on resume, then consumed)
	jsonRows int64 // JSON rows before the next one
}

func newReader(rows driver.Rows, batchRows int, emit func(*warehouse.Batch, warehouse.Cursor) error) (*reader, error) {
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

// maxRefetches bounds how often in a row one chunk's download may fail
// and the result be fetched again by query id before the stream fails.
const maxRefetches = 3

// read consumes the result: Arrow batches one chunk at a time, or the
// driver's rows when the server answered with a JSON rowset. A chunk whose
// download fails (its URL expired, the connection dropped part-way) is
// retried after refetch, which fetches the result again by query id with
// fresh URLs; refetch nil fails the stream instead.
func (r *reader) read(ctx context.Context, rows driver.Rows, refetch func() (driver.Rows, error)) error {
	r.ctx = ctx
	sfRows, ok := rows.(sf.SnowflakeRows)
	if !ok {
		return r.readJSON(rows, refetch)
	}
	batches, err := sfRows.GetArrowBatches()
	var se *sf.SnowflakeError
	if errors.As(err, &se) && se.Number == sf.ErrNonArrowResponseInArrowBatches {
		return r.readJSON(rows, refetch)
	}
	if err != nil {
		return classify(err)
	}
	if r.jsonRows > 0 {
		return fmt.Errorf("resume at JSON row %d of an Arrow result: %w", r.jsonRows, warehouse.ErrCursorExpired)
	}
	r.arrow = true
	if r.chunk > len(batches) {
		return fmt.Errorf("resume at chunk %d of a result with %d: %w", r.chunk, len(batches), warehouse.ErrCursorExpired)
	}
	failures := 0
	for r.chunk < len(batches) {
		if err := ctx.Err(); err != nil {
			return err
		}
		recs, err := batches[r.chunk].WithContext(ctx).Fetch()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if refetch == nil || failures == maxRefetches {
				return fmt.Errorf("chunk %d after %d fetches of the result: %w", r.chunk, failures+1, chunkError(err))
			}
			failures++
			again, rerr := refetch()
			if rerr != nil {
				return rerr
			}
			if batches, err = arrowBatchesOf(again); err != nil {
				return err
			}
			continue
		}
		failures = 0
		if recs != nil {
			err = r.appendRecords(*recs)
			// Release the chunk now: only the outgoing batch stays in memory.
			for _, rec := range *recs {
				rec.Release()
			}
			if err != nil {
				return err
			}
		}
		r.chunk++
		r.row = 0
	}
	return nil
}

// readJSON reads a JSON rowset, which a resume can continue only from a
// JSON cursor. The driver downloads its chunks as rows are read; when one
// fails, the result is fetched again (refetch) and read on after the rows
// already taken, as a resume would.
func (r *reader) readJSON(rows driver.Rows, refetch func() (driver.Rows, error)) error {
	if r.chunk > 0 || r.row > 0 {
		return fmt.Errorf("resume at chunk %d row %d of a JSON result: %w", r.chunk, r.row, warehouse.ErrCursorExpired)
	}
	failures := 0
	for {
		at := r.jsonRows
		err := r.readRows(rows)
		var se *sf.SnowflakeError
		if err == nil || r.ctx.Err() != nil || !errors.As(err, &se) || se.Number != sf.ErrFailedToGetChunk {
			return err
		}
		if r.jsonRows > at {
			failures = 0
		}
		if refetch == nil || failures == maxRefetches {
			return fmt.Errorf("JSON row %d after %d fetches of the result: %w", r.jsonRows, failures+1, err)
		}
		failures++
		if rows, err = refetch(); err != nil {
			return err
		}
	}
}

// chunkError categorizes a chunk download that kept failing: a connection
// problem worth retrying (from the last acknowledged batch) whatever the
// driver's error, a body cut short included.
func chunkError(err error) error {
	err = classify(err)
	var we *warehouse.Error
	if errors.As(err, &we) {
		return err
	}
	return &warehouse.Error{Category: vocab.CategoryConnection, Transient: true, Err: err}
}

// arrowBatchesOf is the result's chunks as arrow batches.
func arrowBatchesOf(rows driver.Rows) ([]*sf.ArrowBatch, error) {
	sfRows, ok := rows.(sf.SnowflakeRows)
	if !ok {
		return nil, fmt.Errorf("driver rows %T are not Snowflake rows", rows)
	}
	batches, err := sfRows.GetArrowBatches()
	if err != nil {
		return nil, classify(err)
	}
	return batches, nil
}

// appendRecords appends one chunk's records, skipping its first r.row rows
// (emitted before a resume).
func (r *reader) appendRecords(recs []arrow.Record) error {
	skip, start := r.row, 0
	for _, rec := range recs {
		n := int(rec.NumRows())
		off := min(n, max(0, skip-start))
		for off < n {
			k := min(n-off, r.max-r.batch.Rows)
			for ci, col := range rec.Columns() {
				if err := r.appendArrow(ci, col, off, off+k); err != nil {
					return fmt.Errorf("column %s: %w", r.specs[ci].Name, err)
				}
			}
			r.batch.Rows += k
			off += k
			r.row = start + off
			if err := r.flushIfFull(); err != nil {
				return err
			}
		}
		start += n
	}
	return nil
}

// cursor is where the result continues after the rows in the batch.
func (r *reader) cursor() warehouse.Cursor {
	if r.token == "" {
		return warehouse.Cursor{}
	}
	if r.arrow {
		return warehouse.Cursor{Token: r.token, Position: "arrow:" + strconv.Itoa(r.chunk) + ":" + strconv.Itoa(r.row)}
	}
	return warehouse.Cursor{Token: r.token, Position: "rows:" + strconv.FormatInt(r.jsonRows, 10)}
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
	if err := r.emit(&r.batch, r.cursor()); err != nil {
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
// precision, time.Time for dates and timestamps). On a resume it first
// skips the r.jsonRows rows emitted before.
func (r *reader) readRows(rows driver.Rows) error {
	r.dest = make([]driver.Value, len(r.specs))
	for skipped := int64(0); skipped < r.jsonRows; skipped++ {
		err := rows.Next(r.dest)
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("resume at row %d of a result with %d: %w", r.jsonRows, skipped, warehouse.ErrCursorExpired)
		}
		if err != nil {
			return classify(err)
		}
	}
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
		r.jsonRows++
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
