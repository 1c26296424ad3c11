// Package warehouse defines what Sluice needs from a customer's warehouse:
// stream one day of an ingestion's query as typed columnar batches, count
// the day's rows, fingerprint them, and sample them. One package per
// warehouse (duckdb, postgres, snowflake, bigquery) implements Source.
package warehouse

import (
	"context"
	"errors"
	"fmt"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// Source runs one connection's queries. The query text is the ingestion's
// SQL; the day always reaches it as a bound parameter (the warehouse's own
// placeholder: $1 for PostgreSQL, Redshift and DuckDB, ? for Snowflake,
// @date for BigQuery), never pasted into the SQL.
//
// Implementations are safe for concurrent use.
type Source interface {
	// Stream runs query for day and calls emit with successive batches of
	// at most batchRows rows. The batch and its slices are reused once emit
	// returns, so memory stays bounded whatever the day's size. It returns
	// the number of rows streamed.
	Stream(ctx context.Context, query string, day civil.Date, batchRows int, emit func(*Batch) error) (int64, error)
	// Count returns how many rows query returns for day.
	Count(ctx context.Context, query string, day civil.Date) (int64, error)
	// Fingerprint returns an order-independent digest of the rows query
	// returns for day, computed in the warehouse (an aggregate of row
	// hashes). ErrUnsupported when the warehouse cannot.
	Fingerprint(ctx context.Context, query string, day civil.Date) (string, error)
	// Sample returns at most limit rows of query for day, with their columns.
	Sample(ctx context.Context, query string, day civil.Date, limit int) (*Batch, error)
	// Close releases the connection pool.
	Close() error
}

// Batch is a set of rows in columnar form, ready for raw-rows.
type Batch struct {
	Columns []schemas.Column
	Rows    int
}

// Reset empties the batch, keeping its columns' capacity for reuse.
func (b *Batch) Reset() {
	b.Rows = 0
	for i := range b.Columns {
		c := &b.Columns[i]
		c.Nulls = c.Nulls[:0]
		c.Bools = c.Bools[:0]
		c.Longs = c.Longs[:0]
		c.Doubles = c.Doubles[:0]
		c.Strings = c.Strings[:0]
	}
}

// ErrUnsupported is returned for an operation a warehouse cannot do.
var ErrUnsupported = errors.New("not supported by this warehouse")

// Error is a warehouse failure with a category a user can act on.
type Error struct {
	Category  vocab.Category
	Transient bool // worth retrying with backoff
	Err       error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Category, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Categorize returns err's category, vocab.CategoryInternal when it has none.
func Categorize(err error) (category vocab.Category, transient bool) {
	var we *Error
	if errors.As(err, &we) {
		return we.Category, we.Transient
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return vocab.CategoryTimeout, true
	}
	return vocab.CategoryInternal, false
}
