package duckdb

import (
	"fmt"
	"math"
	"unsafe"

	bindings "github.com/duckdb/duckdb-go-bindings"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
)

// A fetched chunk's vectors are flat (DuckDB flattens what it hands the C
// API): one fixed-size value per row at VectorGetData, and a validity mask
// of uint64 words, bit r%64 of word r/64 set when row r is not null, or a
// nil mask when every row is valid. plan() projects every type whose value
// Go cannot hold exactly to VARCHAR, so only the types below reach here.

// reader appends rows [lo, hi) of one vector to column i of a batch.
type reader func(b *warehouse.Batch, i int, data, validity unsafe.Pointer, lo, hi int)

// readerFor picks the reader of a result column of DuckDB type t planned
// as c; a type the plan did not expect is an internal error.
func readerFor(c column, t bindings.Type) (reader, error) {
	var r reader
	switch c.kind {
	case kindLong:
		r = longReader(t)
	case kindDouble:
		switch t {
		case bindings.TypeDouble:
			r = readFixed(func(v float64) float64 { return v }, (*warehouse.Batch).AppendDouble)
		case bindings.TypeFloat:
			r = readFixed(func(v float32) float64 { return float64(v) }, (*warehouse.Batch).AppendDouble)
		}
	case kindBool:
		if t == bindings.TypeBoolean {
			r = readFixed(func(v bool) bool { return v }, (*warehouse.Batch).AppendBool)
		}
	case kindDate:
		if t == bindings.TypeDate { // int32 days since 1970-01-01
			r = readFixed(days, (*warehouse.Batch).AppendDate)
		}
	case kindTimestamp:
		r = timestampReader(t)
	case kindText:
		if t == bindings.TypeVarchar {
			r = readText
		}
	case kindBytes:
		if t == bindings.TypeBlob {
			r = readBlob
		}
	}
	if r == nil {
		return nil, &warehouse.Error{Category: vocab.CategoryInternal, Err: fmt.Errorf("column %s (%s): DuckDB returned type %d", c.spec.Name, c.spec.DBType, t)}
	}
	return r, nil
}

func longReader(t bindings.Type) reader {
	appendLong := (*warehouse.Batch).AppendLong
	switch t {
	case bindings.TypeTinyInt:
		return readFixed(func(v int8) int64 { return int64(v) }, appendLong)
	case bindings.TypeSmallInt:
		return readFixed(func(v int16) int64 { return int64(v) }, appendLong)
	case bindings.TypeInteger:
		return readFixed(func(v int32) int64 { return int64(v) }, appendLong)
	case bindings.TypeBigInt:
		return readFixed(func(v int64) int64 { return v }, appendLong)
	case bindings.TypeUTinyInt:
		return readFixed(func(v uint8) int64 { return int64(v) }, appendLong)
	case bindings.TypeUSmallInt:
		return readFixed(func(v uint16) int64 { return int64(v) }, appendLong)
	case bindings.TypeUInteger:
		return readFixed(func(v uint32) int64 { return int64(v) }, appendLong)
	}
	return nil
}

// timestampReader converts every TIMESTAMP flavour (an int64 count of its
// unit since the epoch, UTC; TIMESTAMPTZ is an instant) to microseconds,
// flooring nanoseconds as time.Time.UnixMicro does.
func timestampReader(t bindings.Type) reader {
	appendTS := (*warehouse.Batch).AppendTimestamp
	switch t {
	case bindings.TypeTimestamp, bindings.TypeTimestampTZ:
		return readFixed(infiniteOr(1, 1), appendTS)
	case bindings.TypeTimestampS:
		return readFixed(infiniteOr(1e6, 1), appendTS)
	case bindings.TypeTimestampMS:
		return readFixed(infiniteOr(1e3, 1), appendTS)
	case bindings.TypeTimestampNS:
		return readFixed(infiniteOr(1, 1e3), appendTS)
	}
	return nil
}

// DuckDB stores infinity and -infinity as the largest magnitudes of the
// value's integer type. They become math.MaxInt64 and math.MinInt64, as
// PostgreSQL's do (TYPES.md), instead of dates and instants that never were.
const (
	dateInfinity      = math.MaxInt32
	timestampInfinity = math.MaxInt64
)

func days(v int32) int64 {
	switch v {
	case dateInfinity:
		return math.MaxInt64
	case -dateInfinity:
		return math.MinInt64
	}
	return int64(v)
}

// infiniteOr converts a timestamp of some unit to microseconds, v*mul/div
// (div floors, as time.Time.UnixMicro does), passing infinities unscaled.
func infiniteOr(mul, div int64) func(int64) int64 {
	return func(v int64) int64 {
		switch v {
		case timestampInfinity:
			return math.MaxInt64
		case -timestampInfinity:
			return math.MinInt64
		}
		if div == 1 {
			return v * mul
		}
		return floorDiv(v, div)
	}
}

func floorDiv(v, div int64) int64 {
	q := v / div
	if v%div < 0 {
		q--
	}
	return q
}

// readFixed reads a vector of fixed-size values of type T, converted by
// conv and appended by add.
func readFixed[T, V any](conv func(T) V, add func(*warehouse.Batch, int, V)) reader {
	return func(b *warehouse.Batch, i int, data, validity unsafe.Pointer, lo, hi int) {
		values := unsafe.Slice((*T)(data), hi)
		for r := lo; r < hi; r++ {
			if !valid(validity, r) {
				b.AppendNull(i)
				continue
			}
			add(b, i, conv(values[r]))
		}
	}
}

func valid(validity unsafe.Pointer, r int) bool {
	if validity == nil {
		return true
	}
	word := *(*uint64)(unsafe.Add(validity, r/64*8))
	return word&(1<<(r%64)) != 0
}

// duckString is DuckDB's duckdb_string_t: a uint32 length, then either
// up to 12 inlined bytes, or a 4-byte prefix and a pointer to the bytes.
// The pointer is read only when the length says it is one.
type duckString struct {
	length uint32
	data   [12]byte
}

const maxInlined = 12

func (s *duckString) bytes() []byte {
	if s.length <= maxInlined {
		return unsafe.Slice(&s.data[0], s.length)
	}
	return unsafe.Slice(*(**byte)(unsafe.Pointer(&s.data[4])), s.length)
}

// readText copies the strings of rows [lo, hi) into one Go allocation.
// The chunk's memory goes away with the chunk; the arena never does and is
// never written again, so the strings stay valid after the batch is reused.
func readText(b *warehouse.Batch, i int, data, validity unsafe.Pointer, lo, hi int) {
	values := unsafe.Slice((*duckString)(data), hi)
	size := 0
	for r := lo; r < hi; r++ {
		if valid(validity, r) {
			size += int(values[r].length)
		}
	}
	arena := make([]byte, 0, size)
	for r := lo; r < hi; r++ {
		if !valid(validity, r) {
			b.AppendNull(i)
			continue
		}
		v := values[r].bytes()
		if len(v) == 0 {
			b.AppendString(i, "")
			continue
		}
		start := len(arena)
		arena = append(arena, v...)
		b.AppendString(i, unsafe.String(&arena[start], len(v)))
	}
}

// readBlob appends BLOB values as base64 text.
func readBlob(b *warehouse.Batch, i int, data, validity unsafe.Pointer, lo, hi int) {
	values := unsafe.Slice((*duckString)(data), hi)
	for r := lo; r < hi; r++ {
		if !valid(validity, r) {
			b.AppendNull(i)
			continue
		}
		b.AppendBytes(i, values[r].bytes())
	}
}
