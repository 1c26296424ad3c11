package bqtest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/big"
	"strconv"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/array"
	"github.com/apache/arrow/go/v15/arrow/decimal128"
	"github.com/apache/arrow/go/v15/arrow/decimal256"
	"github.com/apache/arrow/go/v15/arrow/ipc"
	"github.com/apache/arrow/go/v15/arrow/memory"
	bq "google.golang.org/api/bigquery/v2"
)

func toTableSchema(s bigquery.Schema) *bq.TableSchema {
	return &bq.TableSchema{Fields: toFields(s)}
}

func toFields(s bigquery.Schema) []*bq.TableFieldSchema {
	out := make([]*bq.TableFieldSchema, 0, len(s))
	for _, f := range s {
		mode := "NULLABLE"
		if f.Repeated {
			mode = "REPEATED"
		} else if f.Required {
			mode = "REQUIRED"
		}
		out = append(out, &bq.TableFieldSchema{
			Name:      f.Name,
			Type:      string(f.Type),
			Mode:      mode,
			Fields:    toFields(f.Schema),
			Precision: f.Precision,
			Scale:     f.Scale,
		})
	}
	return out
}

// restRow encodes a row as the REST API does: every scalar a string,
// TIMESTAMP as integer microseconds, RECORD as {"f": [...]}, REPEATED as
// [{"v": ...}, ...].
func restRow(schema bigquery.Schema, row []bigquery.Value) *bq.TableRow {
	cells := make([]*bq.TableCell, len(schema))
	for i, f := range schema {
		cells[i] = &bq.TableCell{V: restValue(f, row[i], f.Repeated)}
	}
	return &bq.TableRow{F: cells}
}

func restValue(f *bigquery.FieldSchema, v bigquery.Value, repeated bool) any {
	if v == nil {
		return nil
	}
	if repeated {
		out := []any{} // an empty array is [], not null
		for _, e := range v.([]bigquery.Value) {
			out = append(out, map[string]any{"v": restValue(f, e, false)})
		}
		return out
	}
	switch f.Type {
	case bigquery.RecordFieldType:
		vals := v.([]bigquery.Value)
		cells := make([]any, len(f.Schema))
		for i, sf := range f.Schema {
			cells[i] = map[string]any{"v": restValue(sf, vals[i], sf.Repeated)}
		}
		return map[string]any{"f": cells}
	case bigquery.TimestampFieldType:
		return strconv.FormatInt(v.(time.Time).UnixMicro(), 10)
	case bigquery.BytesFieldType:
		return base64.StdEncoding.EncodeToString(v.([]byte))
	case bigquery.FloatFieldType:
		return strconv.FormatFloat(v.(float64), 'g', -1, 64)
	case bigquery.NumericFieldType:
		return v.(*big.Rat).FloatString(9)
	case bigquery.BigNumericFieldType:
		return v.(*big.Rat).FloatString(38)
	case bigquery.DateTimeFieldType:
		return v.(civil.DateTime).String()
	}
	return fmt.Sprint(v)
}

// arrowSchema maps a BigQuery schema to Arrow as the Storage Read API does.
func arrowSchema(s bigquery.Schema) (*arrow.Schema, error) {
	fields := make([]arrow.Field, len(s))
	for i, f := range s {
		af, err := arrowField(f)
		if err != nil {
			return nil, err
		}
		fields[i] = af
	}
	return arrow.NewSchema(fields, nil), nil
}

func arrowField(f *bigquery.FieldSchema) (arrow.Field, error) {
	var t arrow.DataType
	switch f.Type {
	case bigquery.IntegerFieldType:
		t = arrow.PrimitiveTypes.Int64
	case bigquery.FloatFieldType:
		t = arrow.PrimitiveTypes.Float64
	case bigquery.BooleanFieldType:
		t = arrow.FixedWidthTypes.Boolean
	case bigquery.StringFieldType, bigquery.JSONFieldType, bigquery.GeographyFieldType:
		t = arrow.BinaryTypes.String
	case bigquery.BytesFieldType:
		t = arrow.BinaryTypes.Binary
	case bigquery.DateFieldType:
		t = arrow.FixedWidthTypes.Date32
	case bigquery.TimestampFieldType:
		t = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	case bigquery.DateTimeFieldType:
		t = &arrow.TimestampType{Unit: arrow.Microsecond}
	case bigquery.TimeFieldType:
		t = arrow.FixedWidthTypes.Time64us
	case bigquery.NumericFieldType:
		t = &arrow.Decimal128Type{Precision: 38, Scale: 9}
	case bigquery.BigNumericFieldType:
		t = &arrow.Decimal256Type{Precision: 76, Scale: 38}
	case bigquery.RecordFieldType:
		sub := make([]arrow.Field, len(f.Schema))
		for i, sf := range f.Schema {
			af, err := arrowField(sf)
			if err != nil {
				return arrow.Field{}, err
			}
			sub[i] = af
		}
		t = arrow.StructOf(sub...)
	default:
		return arrow.Field{}, fmt.Errorf("bqtest: no Arrow mapping for %s", f.Type)
	}
	if f.Repeated {
		t = arrow.ListOf(t)
	}
	return arrow.Field{Name: f.Name, Type: t, Nullable: !f.Required}, nil
}

// serializedSchema is the IPC schema message the read session carries.
func serializedSchema(s *arrow.Schema) ([]byte, error) {
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(s))
	if err := w.Close(); err != nil {
		return nil, err
	}
	// Close wrote the schema and an 8-byte end-of-stream marker.
	return buf.Bytes()[:buf.Len()-8], nil
}

// serializedBatch is one IPC record batch message for rows.
func serializedBatch(s *arrow.Schema, schemaLen int, bqs bigquery.Schema, rows [][]bigquery.Value) ([]byte, error) {
	b := array.NewRecordBuilder(memory.DefaultAllocator, s)
	defer b.Release()
	for _, row := range rows {
		for i, f := range bqs {
			if err := appendArrow(b.Field(i), f, row[i], f.Repeated); err != nil {
				return nil, fmt.Errorf("column %s: %w", f.Name, err)
			}
		}
	}
	rec := b.NewRecord()
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(s))
	if err := w.Write(rec); err != nil {
		return nil, err
	}
	// The writer put the schema message first; the batch follows it.
	return append([]byte(nil), buf.Bytes()[schemaLen:]...), nil
}

func appendArrow(b array.Builder, f *bigquery.FieldSchema, v bigquery.Value, repeated bool) error {
	if v == nil {
		b.AppendNull()
		return nil
	}
	if repeated {
		lb := b.(*array.ListBuilder)
		lb.Append(true)
		for _, e := range v.([]bigquery.Value) {
			if err := appendArrow(lb.ValueBuilder(), f, e, false); err != nil {
				return err
			}
		}
		return nil
	}
	switch f.Type {
	case bigquery.IntegerFieldType:
		b.(*array.Int64Builder).Append(v.(int64))
	case bigquery.FloatFieldType:
		b.(*array.Float64Builder).Append(v.(float64))
	case bigquery.BooleanFieldType:
		b.(*array.BooleanBuilder).Append(v.(bool))
	case bigquery.StringFieldType, bigquery.JSONFieldType, bigquery.GeographyFieldType:
		b.(*array.StringBuilder).Append(v.(string))
	case bigquery.BytesFieldType:
		b.(*array.BinaryBuilder).Append(v.([]byte))
	case bigquery.DateFieldType:
		d := v.(civil.Date)
		b.(*array.Date32Builder).Append(arrow.Date32FromTime(d.In(time.UTC)))
	case bigquery.TimestampFieldType:
		b.(*array.TimestampBuilder).Append(arrow.Timestamp(v.(time.Time).UnixMicro()))
	case bigquery.DateTimeFieldType:
		b.(*array.TimestampBuilder).Append(arrow.Timestamp(v.(civil.DateTime).In(time.UTC).UnixMicro()))
	case bigquery.TimeFieldType:
		t := v.(civil.Time)
		us := (int64(t.Hour)*3600+int64(t.Minute)*60+int64(t.Second))*1e6 + int64(t.Nanosecond/1000)
		b.(*array.Time64Builder).Append(arrow.Time64(us))
	case bigquery.NumericFieldType:
		n, err := scaled(v.(*big.Rat), 9)
		if err != nil {
			return err
		}
		b.(*array.Decimal128Builder).Append(decimal128.FromBigInt(n))
	case bigquery.BigNumericFieldType:
		n, err := scaled(v.(*big.Rat), 38)
		if err != nil {
			return err
		}
		b.(*array.Decimal256Builder).Append(decimal256.FromBigInt(n))
	case bigquery.RecordFieldType:
		sb := b.(*array.StructBuilder)
		sb.Append(true)
		vals := v.([]bigquery.Value)
		for i, sf := range f.Schema {
			if err := appendArrow(sb.FieldBuilder(i), sf, vals[i], sf.Repeated); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("bqtest: no Arrow mapping for %s", f.Type)
	}
	return nil
}

// scaled returns r * 10^scale, which must be an integer.
func scaled(r *big.Rat, scale int) (*big.Int, error) {
	m := new(big.Rat).Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)))
	if !m.IsInt() {
		return nil, fmt.Errorf("bqtest: %s has more than %d decimal places", r.FloatString(scale+4), scale)
	}
	return m.Num(), nil
}
