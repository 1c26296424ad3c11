package bigquery

import (
	"encoding/base64"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// loader is a bigquery.ValueLoader that appends each row straight into a
// columnar batch, so no per-row map or struct is built.
type loader struct {
	batch  warehouse.Batch
	schema bigquery.Schema
	scales []int
	buf    []byte // JSON scratch, reused
}

var _ bigquery.ValueLoader = (*loader)(nil)

func newLoader() *loader { return &loader{} }

// Load appends one row.
func (l *loader) Load(v []bigquery.Value, s bigquery.Schema) error {
	if l.schema == nil {
		l.setSchema(s)
	}
	if len(v) != len(l.schema) {
		return fmt.Errorf("row has %d values for %d columns", len(v), len(l.schema))
	}
	for i, val := range v {
		if err := l.append(i, val); err != nil {
			return fmt.Errorf("column %s: %w", l.schema[i].Name, err)
		}
	}
	l.batch.EndRow()
	return nil
}

func (l *loader) setSchema(s bigquery.Schema) {
	l.schema = s
	specs := make([]warehouse.ColumnSpec, len(s))
	l.scales = make([]int, len(s))
	for i, f := range s {
		specs[i] = ColumnSpec(f)
		l.scales[i] = scale(f)
	}
	l.batch.SetColumns(specs)
}

// ColumnSpec is the raw-rows column for a BigQuery result field.
func ColumnSpec(f *bigquery.FieldSchema) warehouse.ColumnSpec {
	typ := typeName(f)
	if f.Repeated {
		return warehouse.ColumnSpec{Name: f.Name, Type: schemas.TypeJSON, DBType: "ARRAY<" + typ + ">"}
	}
	raw := schemas.TypeString
	switch f.Type {
	case bigquery.IntegerFieldType:
		raw = schemas.TypeLong
	case bigquery.FloatFieldType:
		raw = schemas.TypeDouble
	case bigquery.NumericFieldType, bigquery.BigNumericFieldType:
		raw = schemas.TypeDecimal
	case bigquery.BooleanFieldType:
		raw = schemas.TypeBoolean
	case bigquery.BytesFieldType:
		raw = schemas.TypeBytes
	case bigquery.DateFieldType:
		raw = schemas.TypeDate
	case bigquery.TimestampFieldType, bigquery.DateTimeFieldType:
		raw = schemas.TypeTimestamp
	case bigquery.JSONFieldType, bigquery.RecordFieldType:
		raw = schemas.TypeJSON
	}
	return warehouse.ColumnSpec{Name: f.Name, Type: raw, DBType: typ}
}

// typeName is the GoogleSQL name of f's type, with its parameters.
func typeName(f *bigquery.FieldSchema) string {
	switch f.Type {
	case bigquery.IntegerFieldType:
		return "INT64"
	case bigquery.FloatFieldType:
		return "FLOAT64"
	case bigquery.BooleanFieldType:
		return "BOOL"
	case bigquery.RecordFieldType:
		s := "STRUCT<"
		for i, sf := range f.Schema {
			if i > 0 {
				s += ", "
			}
			t := typeName(sf)
			if sf.Repeated {
				t = "ARRAY<" + t + ">"
			}
			s += sf.Name + " " + t
		}
		return s + ">"
	case bigquery.NumericFieldType, bigquery.BigNumericFieldType:
		if f.Precision > 0 {
			return fmt.Sprintf("%s(%d,%d)", f.Type, f.Precision, f.Scale)
		}
	}
	return string(f.Type)
}

// scale is the number of decimal places a NUMERIC or BIGNUMERIC keeps.
func scale(f *bigquery.FieldSchema) int {
	switch {
	case f.Precision > 0:
		return int(f.Scale)
	case f.Type == bigquery.BigNumericFieldType:
		return 38
	}
	return 9
}

func (l *loader) append(i int, v bigquery.Value) error {
	b := &l.batch
	if v == nil {
		b.AppendNull(i)
		return nil
	}
	f := l.schema[i]
	if f.Repeated || f.Type == bigquery.RecordFieldType {
		buf, err := appendJSON(l.buf[:0], f, v, f.Repeated)
		l.buf = buf
		if err != nil {
			return err
		}
		b.AppendJSON(i, string(buf))
		return nil
	}
	switch x := v.(type) {
	case int64:
		b.AppendLong(i, x)
	case float64:
		b.AppendDouble(i, x)
	case bool:
		b.AppendBool(i, x)
	case string:
		b.AppendString(i, x) // STRING, JSON, GEOGRAPHY
	case []byte:
		b.AppendBytes(i, x)
	case *big.Rat:
		b.AppendDecimal(i, x.FloatString(l.scales[i]))
	case civil.Date:
		b.AppendDate(i, warehouse.DaysSinceEpoch(x))
	case time.Time:
		b.AppendTimestamp(i, x.UnixMicro())
	case civil.DateTime:
		b.AppendTimestamp(i, x.In(time.UTC).UnixMicro())
	case civil.Time:
		b.AppendString(i, timeText(x))
	default:
		b.AppendString(i, fmt.Sprint(x)) // INTERVAL, RANGE
	}
	return nil
}

// timeText renders a TIME as BigQuery does: HH:MM:SS[.ffffff].
func timeText(t civil.Time) string {
	s := fmt.Sprintf("%02d:%02d:%02d", t.Hour, t.Minute, t.Second)
	if us := t.Nanosecond / 1000; us != 0 {
		s += fmt.Sprintf(".%06d", us)
	}
	return s
}

// appendJSON renders a nested value as TO_JSON_STRING would: integers and
// decimals as exact numbers, non-finite floats, bytes and times as strings.
func appendJSON(buf []byte, f *bigquery.FieldSchema, v bigquery.Value, repeated bool) ([]byte, error) {
	if v == nil {
		return append(buf, "null"...), nil
	}
	if repeated {
		vals, ok := v.([]bigquery.Value)
		if !ok {
			return buf, fmt.Errorf("REPEATED value is %T", v)
		}
		buf = append(buf, '[')
		for j, e := range vals {
			if j > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendJSON(buf, f, e, false); err != nil {
				return buf, err
			}
		}
		return append(buf, ']'), nil
	}
	switch x := v.(type) {
	case []bigquery.Value: // RECORD, positional
		if len(x) != len(f.Schema) {
			return buf, fmt.Errorf("RECORD has %d values for %d fields", len(x), len(f.Schema))
		}
		buf = append(buf, '{')
		for j, sf := range f.Schema {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, sf.Name)
			buf = append(buf, ':')
			var err error
			if buf, err = appendJSON(buf, sf, x[j], sf.Repeated); err != nil {
				return buf, err
			}
		}
		return append(buf, '}'), nil
	case int64:
		return strconv.AppendInt(buf, x, 10), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return appendJSONString(buf, strconv.FormatFloat(x, 'g', -1, 64)), nil
		}
		return strconv.AppendFloat(buf, x, 'g', -1, 64), nil
	case bool:
		return strconv.AppendBool(buf, x), nil
	case string:
		if f.Type == bigquery.JSONFieldType {
			return append(buf, x...), nil
		}
		return appendJSONString(buf, x), nil
	case []byte:
		return appendJSONString(buf, base64.StdEncoding.EncodeToString(x)), nil
	case *big.Rat:
		return append(buf, x.FloatString(scale(f))...), nil
	case time.Time:
		return appendJSONString(buf, x.UTC().Format("2006-01-02T15:04:05.999999Z")), nil
	case civil.Time:
		return appendJSONString(buf, timeText(x)), nil
	}
	return appendJSONString(buf, fmt.Sprint(v)), nil // DATE, DATETIME, INTERVAL
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			buf = append(buf, '\\', c)
		case c == '\n':
			buf = append(buf, '\\', 'n')
		case c == '\t':
			buf = append(buf, '\\', 't')
		case c == '\r':
			buf = append(buf, '\\', 'r')
		case c < 0x20:
			buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			buf = append(buf, c)
		}
	}
	return append(buf, '"')
}
