package duckdb

import (
	"context"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
)

// The reader Source.Stream used before it streamed through the C API:
// database/sql rows, which duckdb-go materializes whole. Tests keep it as
// an oracle of the values, and benchmarks as the baseline.

// sqlStream streams query through database/sql, batch by batch.
func (s *Source) sqlStream(ctx context.Context, query string, day civil.Date, batchRows int, emit func(*warehouse.Batch) error) (int64, error) {
	cols, err := s.describe(ctx, query, day)
	if err != nil {
		return 0, categorize(err)
	}
	exprs := make([]string, len(cols))
	specs := make([]warehouse.ColumnSpec, len(cols))
	for i, c := range cols {
		exprs[i], specs[i] = c.expr, c.spec
	}
	rows, err := s.db.QueryContext(ctx, "SELECT "+strings.Join(exprs, ", ")+" FROM "+wrap(query), dayArg(day))
	if err != nil {
		return 0, categorize(err)
	}
	defer rows.Close()
	var batch warehouse.Batch
	batch.SetColumns(specs)
	vals := make([]any, len(cols))
	dest := make([]any, len(cols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	var total int64
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return total, categorize(err)
		}
		for i, v := range vals {
			if err := appendValue(&batch, i, cols[i], v); err != nil {
				return total, err
			}
		}
		batch.EndRow()
		if err := batch.EmitIfFull(ctx, batchRows, &total, emit); err != nil {
			return total, err
		}
	}
	if err := rows.Err(); err != nil {
		return total, categorize(err)
	}
	if batch.Rows > 0 {
		total += int64(batch.Rows)
		if err := emit(&batch); err != nil {
			return total, err
		}
	}
	return total, nil
}

func appendValue(b *warehouse.Batch, i int, c column, v any) error {
	if v == nil {
		b.AppendNull(i)
		return nil
	}
	switch c.kind {
	case kindLong:
		switch x := v.(type) {
		case int64:
			b.AppendLong(i, x)
		case int32:
			b.AppendLong(i, int64(x))
		case int16:
			b.AppendLong(i, int64(x))
		case int8:
			b.AppendLong(i, int64(x))
		case uint32:
			b.AppendLong(i, int64(x))
		case uint16:
			b.AppendLong(i, int64(x))
		case uint8:
			b.AppendLong(i, int64(x))
		default:
			return mismatch(c, v)
		}
	case kindDouble:
		switch x := v.(type) {
		case float64:
			b.AppendDouble(i, x)
		case float32:
			b.AppendDouble(i, float64(x))
		default:
			return mismatch(c, v)
		}
	case kindBool:
		x, ok := v.(bool)
		if !ok {
			return mismatch(c, v)
		}
		b.AppendBool(i, x)
	case kindText:
		x, ok := v.(string)
		if !ok {
			return mismatch(c, v)
		}
		b.AppendString(i, x)
	case kindDate:
		x, ok := v.(time.Time)
		if !ok {
			return mismatch(c, v)
		}
		b.AppendDate(i, warehouse.DaysOf(x))
	case kindTimestamp:
		x, ok := v.(time.Time)
		if !ok {
			return mismatch(c, v)
		}
		b.AppendTimestamp(i, warehouse.MicrosOf(x))
	case kindBytes:
		x, ok := v.([]byte)
		if !ok {
			return mismatch(c, v)
		}
		b.AppendBytes(i, x)
	}
	return nil
}

func mismatch(c column, v any) error {
	return &warehouse.Error{Category: vocab.CategoryInternal, Err: fmt.Errorf("column %s (%s): driver returned %T", c.spec.Name, c.spec.DBType, v)}
}
