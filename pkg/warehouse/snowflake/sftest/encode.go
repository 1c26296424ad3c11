package sftest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// encode builds the query-request answer: rowtype, the first rowset
// inline and the rest as chunk URLs under base, of URL generation gen.
func (res *result) encode(base string, gen int) (map[string]any, error) {
	rowType := make([]map[string]any, len(res.columns))
	for i, c := range res.columns {
		rowType[i] = c.rowType()
	}
	first := res.rows[:min(res.per, len(res.rows))]
	data := map[string]any{
		"rowtype":           rowType,
		"total":             len(res.rows),
		"returned":          len(res.rows),
		"queryId":           res.id,
		"queryResultFormat": res.format,
		"parameters":        []map[string]any{{"name": "TIMEZONE", "value": "UTC"}},
		"statementTypeId":   4096,
		"qrmk":              "sftest-qrmk",
	}
	if res.format == FormatArrow {
		if len(first) > 0 {
			b, err := res.arrowStream(first)
			if err != nil {
				return nil, err
			}
			data["rowsetBase64"] = base64.StdEncoding.EncodeToString(b)
		}
	} else {
		rowset := make([][]*string, len(first))
		for i, row := range first {
			rowset[i] = res.jsonRow(row)
		}
		data["rowset"] = rowset
	}
	var chunks []map[string]any
	for i, lo := 0, res.per; lo < len(res.rows); i, lo = i+1, lo+res.per {
		n := min(res.per, len(res.rows)-lo)
		chunks = append(chunks, map[string]any{
			"url":              fmt.Sprintf("%s/chunks/%s/%d?gen=%d", base, res.id, i, gen),
			"rowCount":         n,
			"uncompressedSize": n * 100,
			"compressedSize":   n * 50,
		})
	}
	if len(chunks) > 0 {
		data["chunks"] = chunks
	}
	return map[string]any{"success": true, "code": nil, "message": nil, "data": data}, nil
}

// chunkBody is one chunk's content before gzip: an Arrow IPC stream, or
// JSON rows joined by commas without the outer brackets.
func (res *result) chunkBody(rows [][]any) ([]byte, error) {
	if res.format == FormatArrow {
		return res.arrowStream(rows)
	}
	var buf bytes.Buffer
	for i, row := range rows {
		if i > 0 {
			buf.WriteByte(',')
		}
		b, err := json.Marshal(res.jsonRow(row))
		if err != nil {
			return nil, err
		}
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

func (res *result) jsonRow(row []any) []*string {
	out := make([]*string, len(row))
	for i, v := range row {
		out[i] = jsonValue(res.columns[i], v)
	}
	return out
}

// jsonValue renders a value as Snowflake's JSON rowsets carry it.
func jsonValue(c column, v any) *string {
	if v == nil {
		return nil
	}
	var s string
	switch c.kind {
	case "fixed":
		u, _ := unscaled(v, c.scale)
		s = decimalText(u, c.scale)
	case "real":
		s = strconv.FormatFloat(v.(float64), 'g', -1, 64)
	case "boolean":
		s = "0"
		if v.(bool) {
			s = "1"
		}
	case "date":
		d, _ := dateOf(v)
		s = strconv.FormatInt(int64(d.DaysSince(epochDate)), 10)
	case "time":
		t := v.(time.Time)
		sec := int64(t.Hour()*3600 + t.Minute()*60 + t.Second())
		s = secondsText(sec, int64(t.Nanosecond()), c.scale)
	case "timestamp_ntz":
		t := wallUTC(v.(time.Time))
		s = secondsText(t.Unix(), int64(t.Nanosecond()), c.scale)
	case "timestamp_ltz":
		t := v.(time.Time)
		s = secondsText(t.Unix(), int64(t.Nanosecond()), c.scale)
	case "timestamp_tz":
		t := v.(time.Time)
		_, off := t.Zone()
		s = secondsText(t.Unix(), int64(t.Nanosecond()), c.scale) + " " + strconv.Itoa(off/60+1440)
	case "binary":
		s = strings.ToUpper(hex.EncodeToString(v.([]byte)))
	default:
		s = v.(string)
	}
	return &s
}

// wallUTC reads t's wall clock as UTC: a TIMESTAMP_NTZ has no zone.
func wallUTC(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

func secondsText(sec, nsec int64, scale int) string {
	if scale == 0 {
		return strconv.FormatInt(sec, 10)
	}
	// Whole seconds floor and the fraction is added, so -1.5 s is
	// "-2.500000000", which is how gosnowflake reads it back.
	frac := fmt.Sprintf("%09d", nsec)[:scale]
	return strconv.FormatInt(sec, 10) + "." + frac
}

// scaledTime is t in units of 10^-scale seconds.
func scaledTime(t time.Time, scale int) int64 {
	return t.Unix()*pow10(scale) + int64(t.Nanosecond())/pow10(9-scale)
}

func pow10(n int) int64 { return int64(math.Pow10(n)) }

// arrowStream encodes rows as one Arrow IPC stream with Snowflake's
// physical layouts: the narrowest integer that holds a NUMBER's values
// (decimal128 beyond int64), date32, scaled int64 or epoch/fraction
// structs for timestamps.
func (res *result) arrowStream(rows [][]any) ([]byte, error) {
	mem := memory.NewGoAllocator()
	fields := make([]arrow.Field, len(res.columns))
	arrays := make([]arrow.Array, len(res.columns))
	defer func() {
		for _, a := range arrays {
			if a != nil {
				a.Release()
			}
		}
	}()
	for i, c := range res.columns {
		arr, err := arrowColumn(mem, c, rows, i)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", c.name, err)
		}
		arrays[i] = arr
		md := arrow.NewMetadata(
			[]string{"logicalType", "precision", "scale", "charLength"},
			[]string{strings.ToUpper(c.kind), strconv.Itoa(c.precision), strconv.Itoa(c.scale), "16777216"})
		fields[i] = arrow.Field{Name: c.name, Type: arr.DataType(), Nullable: true, Metadata: md}
	}
	schema := arrow.NewSchema(fields, nil)
	rec := array.NewRecord(schema, arrays, int64(len(rows)))
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema), ipc.WithAllocator(mem))
	if err := w.Write(rec); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func arrowColumn(mem memory.Allocator, c column, rows [][]any, i int) (arrow.Array, error) {
	switch c.kind {
	case "fixed":
		return fixedColumn(mem, c, rows, i)
	case "real":
		b := array.NewFloat64Builder(mem)
		defer b.Release()
		for _, row := range rows {
			if row[i] == nil {
				b.AppendNull()
			} else {
				b.Append(row[i].(float64))
			}
		}
		return b.NewArray(), nil
	case "boolean":
		b := array.NewBooleanBuilder(mem)
		defer b.Release()
		for _, row := range rows {
			if row[i] == nil {
				b.AppendNull()
			} else {
				b.Append(row[i].(bool))
			}
		}
		return b.NewArray(), nil
	case "date":
		b := array.NewDate32Builder(mem)
		defer b.Release()
		for _, row := range rows {
			if row[i] == nil {
				b.AppendNull()
				continue
			}
			d, _ := dateOf(row[i])
			b.Append(arrow.Date32(d.DaysSince(epochDate)))
		}
		return b.NewArray(), nil
	case "time":
		b := array.NewInt64Builder(mem)
		defer b.Release()
		for _, row := range rows {
			if row[i] == nil {
				b.AppendNull()
				continue
			}
			t := row[i].(time.Time)
			ns := int64(t.Hour()*3600+t.Minute()*60+t.Second())*1e9 + int64(t.Nanosecond())
			b.Append(ns / pow10(9-c.scale))
		}
		return b.NewArray(), nil
	case "timestamp_ntz", "timestamp_ltz":
		return timestampColumn(mem, c, rows, i)
	case "timestamp_tz":
		return timestampTZColumn(mem, c, rows, i)
	case "binary":
		b := array.NewBinaryBuilder(mem, arrow.BinaryTypes.Binary)
		defer b.Release()
		for _, row := range rows {
			if row[i] == nil {
				b.AppendNull()
			} else {
				b.Append(row[i].([]byte))
			}
		}
		return b.NewArray(), nil
	default: // text, variant, object, array
		b := array.NewStringBuilder(mem)
		defer b.Release()
		for _, row := range rows {
			if row[i] == nil {
				b.AppendNull()
			} else {
				b.Append(row[i].(string))
			}
		}
		return b.NewArray(), nil
	}
}

func fixedColumn(mem memory.Allocator, c column, rows [][]any, i int) (arrow.Array, error) {
	vals := make([]*big.Int, len(rows))
	lo, hi := int64(0), int64(0)
	wide := false
	for r, row := range rows {
		if row[i] == nil {
			continue
		}
		u, err := unscaled(row[i], c.scale)
		if err != nil {
			return nil, err
		}
		vals[r] = u
		if !u.IsInt64() {
			wide = true
			continue
		}
		lo, hi = min(lo, u.Int64()), max(hi, u.Int64())
	}
	if wide {
		dt := &arrow.Decimal128Type{Precision: int32(c.precision), Scale: int32(c.scale)}
		b := array.NewDecimal128Builder(mem, dt)
		defer b.Release()
		for _, v := range vals {
			if v == nil {
				b.AppendNull()
			} else {
				b.Append(decimal128.FromBigInt(v))
			}
		}
		return b.NewArray(), nil
	}
	switch {
	case lo >= math.MinInt8 && hi <= math.MaxInt8:
		b := array.NewInt8Builder(mem)
		defer b.Release()
		for _, v := range vals {
			if v == nil {
				b.AppendNull()
			} else {
				b.Append(int8(v.Int64()))
			}
		}
		return b.NewArray(), nil
	case lo >= math.MinInt16 && hi <= math.MaxInt16:
		b := array.NewInt16Builder(mem)
		defer b.Release()
		for _, v := range vals {
			if v == nil {
				b.AppendNull()
			} else {
				b.Append(int16(v.Int64()))
			}
		}
		return b.NewArray(), nil
	case lo >= math.MinInt32 && hi <= math.MaxInt32:
		b := array.NewInt32Builder(mem)
		defer b.Release()
		for _, v := range vals {
			if v == nil {
				b.AppendNull()
			} else {
				b.Append(int32(v.Int64()))
			}
		}
		return b.NewArray(), nil
	default:
		b := array.NewInt64Builder(mem)
		defer b.Release()
		for _, v := range vals {
			if v == nil {
				b.AppendNull()
			} else {
				b.Append(v.Int64())
			}
		}
		return b.NewArray(), nil
	}
}

// timestampColumn: scales up to 7 travel as one scaled int64, finer ones
// as {epoch seconds, fraction nanoseconds}, as Snowflake sends them.
func timestampColumn(mem memory.Allocator, c column, rows [][]any, i int) (arrow.Array, error) {
	conv := func(t time.Time) time.Time {
		if c.kind == "timestamp_ntz" {
			return wallUTC(t)
		}
		return t
	}
	if c.scale <= 7 {
		b := array.NewInt64Builder(mem)
		defer b.Release()
		for _, row := range rows {
			if row[i] == nil {
				b.AppendNull()
			} else {
				b.Append(scaledTime(conv(row[i].(time.Time)), c.scale))
			}
		}
		return b.NewArray(), nil
	}
	st := arrow.StructOf(
		arrow.Field{Name: "epoch", Type: arrow.PrimitiveTypes.Int64},
		arrow.Field{Name: "fraction", Type: arrow.PrimitiveTypes.Int32})
	b := array.NewStructBuilder(mem, st)
	defer b.Release()
	epoch := b.FieldBuilder(0).(*array.Int64Builder)
	frac := b.FieldBuilder(1).(*array.Int32Builder)
	for _, row := range rows {
		if row[i] == nil {
			b.AppendNull()
			epoch.Append(0)
			frac.Append(0)
			continue
		}
		t := conv(row[i].(time.Time))
		b.Append(true)
		epoch.Append(t.Unix())
		frac.Append(int32(t.Nanosecond()))
	}
	return b.NewArray(), nil
}

// timestampTZColumn: {scaled epoch, tz} up to scale 3, else {epoch,
// fraction, tz}; tz is the offset in minutes plus 1440.
func timestampTZColumn(mem memory.Allocator, c column, rows [][]any, i int) (arrow.Array, error) {
	fields := []arrow.Field{{Name: "epoch", Type: arrow.PrimitiveTypes.Int64}}
	if c.scale > 3 {
		fields = append(fields, arrow.Field{Name: "fraction", Type: arrow.PrimitiveTypes.Int32})
	}
	fields = append(fields, arrow.Field{Name: "timezone", Type: arrow.PrimitiveTypes.Int32})
	b := array.NewStructBuilder(mem, arrow.StructOf(fields...))
	defer b.Release()
	epoch := b.FieldBuilder(0).(*array.Int64Builder)
	tz := b.FieldBuilder(len(fields) - 1).(*array.Int32Builder)
	for _, row := range rows {
		if row[i] == nil {
			b.AppendNull()
			epoch.Append(0)
			if c.scale > 3 {
				b.FieldBuilder(1).(*array.Int32Builder).Append(0)
			}
			tz.Append(0)
			continue
		}
		t := row[i].(time.Time)
		_, off := t.Zone()
		b.Append(true)
		if c.scale > 3 {
			epoch.Append(t.Unix())
			b.FieldBuilder(1).(*array.Int32Builder).Append(int32(t.Nanosecond()))
		} else {
			epoch.Append(scaledTime(t, c.scale))
		}
		tz.Append(int32(off/60 + 1440))
	}
	return b.NewArray(), nil
}
