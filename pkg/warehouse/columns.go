package warehouse

import (
	"context"
	"encoding/base64"
	"time"
	"unsafe"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/schemas"
)

// ColumnSpec describes one result column before any row is read: its name,
// its raw-rows type (schemas.Type*) and the warehouse's own type name.
type ColumnSpec struct {
	Name   string
	Type   string
	DBType string
}

// SetColumns makes the batch empty with exactly the given columns, reusing
// the value slices it already has, so a source can keep one Batch per query.
func (b *Batch) SetColumns(specs []ColumnSpec) {
	if cap(b.Columns) < len(specs) {
		b.Columns = append(b.Columns[:cap(b.Columns)], make([]schemas.Column, len(specs)-cap(b.Columns))...)
	}
	b.Columns = b.Columns[:len(specs)]
	for i, s := range specs {
		c := &b.Columns[i]
		c.Name, c.Type, c.DBType = s.Name, s.Type, s.DBType
	}
	b.Reset()
}

// The Append methods add the value of column i for the row being built;
// a source calls exactly one of them per column and then EndRow. Every
// column keeps Nulls and its value slice aligned by row: a null row holds
// the zero value in the slice that matches the column's type.

// AppendNull records a null in column i.
func (b *Batch) AppendNull(i int) {
	c := &b.Columns[i]
	c.Nulls = append(c.Nulls, 1)
	switch c.Type {
	case schemas.TypeBoolean:
		c.Bools = append(c.Bools, false)
	case schemas.TypeLong, schemas.TypeDate, schemas.TypeTimestamp:
		c.Longs = append(c.Longs, 0)
	case schemas.TypeDouble:
		c.Doubles = append(c.Doubles, 0)
	default: // STRING, DECIMAL, JSON, BYTES
		c.Strings = append(c.Strings, "")
	}
}

// AppendBool appends a BOOLEAN value.
func (b *Batch) AppendBool(i int, v bool) {
	c := &b.Columns[i]
	c.Nulls = append(c.Nulls, 0)
	c.Bools = append(c.Bools, v)
}

// AppendLong appends a LONG value.
func (b *Batch) AppendLong(i int, v int64) {
	c := &b.Columns[i]
	c.Nulls = append(c.Nulls, 0)
	c.Longs = append(c.Longs, v)
}

// AppendDouble appends a DOUBLE value.
func (b *Batch) AppendDouble(i int, v float64) {
	c := &b.Columns[i]
	c.Nulls = append(c.Nulls, 0)
	c.Doubles = append(c.Doubles, v)
}

// AppendString appends a STRING value; it also serves DECIMAL (exact
// decimal text) and JSON (JSON text), which travel as strings.
func (b *Batch) AppendString(i int, v string) {
	c := &b.Columns[i]
	c.Nulls = append(c.Nulls, 0)
	c.Strings = append(c.Strings, v)
}

// AppendDecimal appends a DECIMAL value as exact decimal text.
func (b *Batch) AppendDecimal(i int, text string) { b.AppendString(i, text) }

// AppendJSON appends a JSON value as JSON text.
func (b *Batch) AppendJSON(i int, text string) { b.AppendString(i, text) }

// AppendBytes appends a BYTES value, base64-encoded (standard alphabet,
// padded) with one allocation for the encoded text.
func (b *Batch) AppendBytes(i int, v []byte) {
	n := base64.StdEncoding.EncodedLen(len(v))
	if n == 0 {
		b.AppendString(i, "")
		return
	}
	buf := make([]byte, n)
	base64.StdEncoding.Encode(buf, v)
	b.AppendString(i, unsafe.String(&buf[0], n)) // buf is never written again
}

// AppendDate appends a DATE as days since 1970-01-01.
func (b *Batch) AppendDate(i int, days int64) { b.AppendLong(i, days) }

// AppendTimestamp appends a TIMESTAMP as microseconds since the epoch, UTC.
func (b *Batch) AppendTimestamp(i int, micros int64) { b.AppendLong(i, micros) }

// EndRow counts the row whose columns were just appended.
func (b *Batch) EndRow() { b.Rows++ }

// Full reports whether the batch holds n rows or more.
func (b *Batch) Full(n int) bool { return b.Rows >= n }

// EmitIfFull hands the batch to emit once it holds batchRows rows, adds
// them to *total and resets the batch for reuse. It stops first if ctx is
// done, so a cancelled stream emits nothing more.
func (b *Batch) EmitIfFull(ctx context.Context, batchRows int, total *int64, emit func(*Batch) error) error {
	if !b.Full(batchRows) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	*total += int64(b.Rows)
	if err := emit(b); err != nil {
		return err
	}
	b.Reset()
	return nil
}

const secondsPerDay = 86400

// DaysSinceEpoch converts a calendar date to days since 1970-01-01.
func DaysSinceEpoch(d civil.Date) int64 {
	return DaysOf(time.Date(d.Year, d.Month, d.Day, 0, 0, 0, 0, time.UTC))
}

// DaysOf returns the days since 1970-01-01 of t's calendar date in t's own
// location (drivers hand DATE values over as midnight of that date).
func DaysOf(t time.Time) int64 {
	y, m, d := t.Date()
	s := time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix()
	days := s / secondsPerDay
	if s%secondsPerDay < 0 {
		days--
	}
	return days
}

// MicrosOf returns t as microseconds since the epoch (UTC). Sub-microsecond
// digits are dropped: raw-rows TIMESTAMP is microseconds.
func MicrosOf(t time.Time) int64 { return t.UnixMicro() }
