package snowflake

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"cloud.google.com/go/civil"
	sf "github.com/snowflakedb/gosnowflake"

	"github.com/sluicehq/sluice/pkg/warehouse"
)

var _ warehouse.Resumable = (*Source)(nil)

// StreamFrom is Stream that hands emit the cursor after each batch, and
// with a non-nil from fetches the query's kept result by id instead of
// running the query, continuing at from.
func (s *Source) StreamFrom(ctx context.Context, query string, day civil.Date, batchRows int, from *warehouse.Cursor,
	emit func(*warehouse.Batch, warehouse.Cursor) error) (int64, error) {
	if from != nil && from.Token == "" {
		return 0, fmt.Errorf("stream day %s from a cursor without a query id: %w", day, warehouse.ErrCursorExpired)
	}
	n, err := s.stream(ctx, trimQuery(query), day, max(batchRows, 1), from, emit, false)
	if err != nil {
		return n, fmt.Errorf("stream day %s: %w", day, err)
	}
	return n, nil
}

// Snowflake answers for a result it no longer keeps.
const (
	errResultExpired      = 612 // "Result for query ... has expired"
	errStatementNotFound  = 709
	errNoQueryStatus      = sf.ErrQueryStatus        // the query is unknown to its history
	errQueryReportedError = sf.ErrQueryReportedError // it failed or was aborted
)

// fetchResult fetches query id's kept result again (fresh chunk URLs),
// without running the query. A result that is gone is ErrCursorExpired.
func fetchResult(ctx context.Context, qc driver.QueryerContext, id string) (driver.Rows, error) {
	rows, err := qc.QueryContext(sf.WithFetchResultByID(ctx, id), "", nil)
	if err == nil {
		return rows, nil
	}
	var se *sf.SnowflakeError
	if errors.As(err, &se) {
		switch se.Number {
		case errResultExpired, errStatementNotFound, errNoQueryStatus, errQueryReportedError, sf.ErrQueryIDFormat:
			return nil, fmt.Errorf("fetch result of query %s: %w (%w)", id, warehouse.ErrCursorExpired, err)
		}
	}
	return nil, fmt.Errorf("fetch result of query %s: %w", id, classify(err))
}

// seek places the reader at a cursor position: "arrow:<chunk>:<row>" or
// "rows:<n>".
func (r *reader) seek(position string) error {
	bad := fmt.Errorf("cursor position %q: %w", position, warehouse.ErrCursorExpired)
	kind, rest, _ := strings.Cut(position, ":")
	switch kind {
	case "arrow":
		c, w, ok := strings.Cut(rest, ":")
		chunk, err1 := strconv.Atoi(c)
		row, err2 := strconv.Atoi(w)
		if !ok || err1 != nil || err2 != nil || chunk < 0 || row < 0 {
			return bad
		}
		r.chunk, r.row = chunk, row
	case "rows":
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil || n < 0 {
			return bad
		}
		r.jsonRows = n
	default:
		return bad
	}
	return nil
}
