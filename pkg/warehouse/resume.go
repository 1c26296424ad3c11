package warehouse

import (
	"context"
	"errors"

	"cloud.google.com/go/civil"
)

// Cursor is where a resumable stream stands after a batch: Token names the
// warehouse's kept result (a Snowflake query id, a BigQuery read session)
// and Position the first row not yet emitted, both in the source's own
// terms. The extractor stores it with the run, never interprets it.
type Cursor struct {
	Token    string
	Position string
}

// Resumable is a Source whose day can continue after a crash or an expired
// download link from the last durable batch, without running the query
// again: Snowflake keeps a query's result for 24 h and BigQuery's Storage
// Read streams can be read from an offset.
type Resumable interface {
	Source
	// StreamFrom is Stream that also hands emit, with each batch, the
	// cursor the stream continues from after it. A nil from runs the
	// query; otherwise it resumes at from and emits exactly the batches an
	// uninterrupted stream would have emitted after that point (same rows,
	// same batch boundaries). ErrCursorExpired when the warehouse no longer
	// keeps the result: the caller starts over. It returns the rows it
	// emitted in this call.
	StreamFrom(ctx context.Context, query string, day civil.Date, batchRows int, from *Cursor,
		emit func(b *Batch, next Cursor) error) (int64, error)
}

// ErrCursorExpired means a resumable result is gone (past the warehouse's
// retention, or its session closed): the day must be extracted anew.
var ErrCursorExpired = errors.New("resumable result no longer kept by the warehouse")
