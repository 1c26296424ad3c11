package warehousetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// ResumeHarness adapts RunResume to one warehouse.Resumable source on its
// in-process server.
type ResumeHarness struct {
	// Open returns a new source on the server, as a restarted process
	// would open it; it is closed when tb ends.
	Open func(tb testing.TB) warehouse.Resumable
	// Query for Day is an ordered result of at least three batches of
	// BatchRows rows, the same rows in the same order each time it runs.
	Query     string
	Day       civil.Date
	BatchRows int
	// Executed counts the runs of Query the server has seen so far;
	// fetching a kept result is none.
	Executed func() int
	// ExpireLinks expires what the warehouse hands out to read a kept
	// result (Snowflake's chunk URLs, BigQuery's read sessions) but not
	// the result itself; nil when the source has no such thing.
	ExpireLinks func()
	// Expire drops every kept result, as the warehouse does once its
	// retention (about 24 h for both) has passed.
	Expire func()
}

// RunResume checks the warehouse.Resumable contract against h: a stream
// resumed at any batch's cursor, by a new source and after its links
// expired, emits exactly the batches that followed it without running the
// query again; a cursor after the last batch resumes to nothing; a result
// that is gone, and a garbage cursor, are ErrCursorExpired with an error
// that names the bad part, and emit nothing. The cases run in order on one server: the
// last drops every result.
func RunResume(t *testing.T, h ResumeHarness) {
	whole := streamFrom(t, h.Open(t), h, nil, nil)
	if whole.err != nil {
		t.Fatalf("StreamFrom(nil): %v", whole.err)
	}
	if len(whole.batches) < 3 {
		t.Fatalf("the day streams as %d batches of %d rows, the suite needs at least 3", len(whole.batches), h.BatchRows)
	}
	var rows int64
	for i, b := range whole.batches {
		if b.rows == 0 || b.rows > h.BatchRows {
			t.Fatalf("batch %d has %d rows, want 1..%d", i, b.rows, h.BatchRows)
		}
		if b.next == (warehouse.Cursor{}) {
			t.Fatalf("batch %d comes with an empty cursor", i)
		}
		rows += int64(b.rows)
	}
	if whole.n != rows {
		t.Fatalf("StreamFrom returned %d rows but emitted %d", whole.n, rows)
	}
	last := len(whole.batches)
	executed := h.Executed()
	restarted := h.Open(t) // every resume below is another process's

	t.Run("resumes at every batch on the kept result", func(t *testing.T) {
		for k := 1; k < last; k++ {
			from := whole.batches[k-1].next
			sameTail(t, whole, streamFrom(t, restarted, h, &from, nil), k, true)
		}
		noQuery(t, h, executed, "resuming")
	})

	t.Run("a cursor after the last batch resumes to no rows", func(t *testing.T) {
		from := whole.batches[last-1].next
		e := streamFrom(t, restarted, h, &from, nil)
		if e.err != nil || e.n != 0 || len(e.batches) != 0 {
			t.Fatalf("StreamFrom(%+v) = %d rows in %d batches, %v; want none and no error", from, e.n, len(e.batches), e.err)
		}
		noQuery(t, h, executed, "resuming at the end")
	})

	t.Run("a stopped stream resumes from its last cursor", func(t *testing.T) {
		stop := errors.New("the process stopped")
		for _, tt := range []struct {
			name  string
			after int
			crash func(cancel context.CancelFunc) error
			want  error
		}{
			{"emit fails", 1, func(context.CancelFunc) error { return stop }, stop},
			{"context cancelled", last / 2, func(cancel context.CancelFunc) error { cancel(); return nil }, context.Canceled},
		} {
			t.Run(tt.name, func(t *testing.T) {
				before := h.Executed()
				crashed := streamFrom(t, h.Open(t), h, nil, func(k int, cancel context.CancelFunc) error {
					if k == tt.after {
						return tt.crash(cancel)
					}
					return nil
				})
				if !errors.Is(crashed.err, tt.want) {
					t.Fatalf("stopped stream = %v, want %v", crashed.err, tt.want)
				}
				if len(crashed.batches) != tt.after {
					t.Fatalf("stopped stream emitted %d batches, want %d", len(crashed.batches), tt.after)
				}
				for i, b := range crashed.batches {
					if !sameColumns(b.columns, whole.batches[i].columns) {
						t.Fatalf("batch %d of a second run of the query differs from the first run's", i)
					}
				}
				if got := h.Executed(); got != before+1 {
					t.Fatalf("the stopped stream ran the query %d times, want once", got-before)
				}
				from := crashed.batches[tt.after-1].next
				sameTail(t, whole, streamFrom(t, restarted, h, &from, nil), tt.after, false)
				noQuery(t, h, before+1, "resuming a stopped stream")
			})
		}
	})

	t.Run("resumes after its links expire", func(t *testing.T) {
		if h.ExpireLinks == nil {
			t.Skip("the source reads kept results without links that expire")
		}
		before := h.Executed()
		h.ExpireLinks()
		from := whole.batches[0].next
		sameTail(t, whole, streamFrom(t, restarted, h, &from, nil), 1, true)
		// And when they expire while the resumed stream reads.
		sameTail(t, whole, streamFrom(t, restarted, h, &from, func(k int, _ context.CancelFunc) error {
			if k == 1 {
				h.ExpireLinks()
			}
			return nil
		}), 1, true)
		noQuery(t, h, before, "resuming after the links expired")
	})

	t.Run("a garbage cursor is an error naming it", func(t *testing.T) {
		const badToken, badPosition = "no-such-result", "not-a-position"
		good := whole.batches[0].next
		for _, tt := range []struct {
			name   string
			cursor warehouse.Cursor
			names  string // the error quotes this
		}{
			{"token", warehouse.Cursor{Token: badToken, Position: good.Position}, badToken},
			{"position", warehouse.Cursor{Token: good.Token, Position: badPosition}, badPosition},
			{"empty", warehouse.Cursor{}, ""},
		} {
			t.Run(tt.name, func(t *testing.T) {
				before := h.Executed()
				e := streamFrom(t, restarted, h, &tt.cursor, nil)
				if e.err == nil || e.n != 0 || len(e.batches) != 0 {
					t.Fatalf("StreamFrom(%+v) = %d rows in %d batches, %v; want an error and nothing emitted", tt.cursor, e.n, len(e.batches), e.err)
				}
				// One rule for every source: a cursor that cannot be resumed
				// (a checkpoint another version wrote, say) is ErrCursorExpired,
				// so the extractor starts the day over instead of failing it.
				if !errors.Is(e.err, warehouse.ErrCursorExpired) {
					t.Errorf("StreamFrom(%+v) = %v; want ErrCursorExpired", tt.cursor, e.err)
				}
				if !strings.Contains(e.err.Error(), tt.names) {
					t.Errorf("StreamFrom(%+v) = %v; the error does not name %q", tt.cursor, e.err, tt.names)
				}
				noQuery(t, h, before, "a garbage cursor")
			})
		}
	})

	t.Run("a result no longer kept is ErrCursorExpired", func(t *testing.T) {
		h.Expire()
		before := h.Executed()
		from := whole.batches[1].next
		e := streamFrom(t, restarted, h, &from, nil)
		if !errors.Is(e.err, warehouse.ErrCursorExpired) || e.n != 0 || len(e.batches) != 0 {
			t.Fatalf("resume of a dropped result = %d rows in %d batches, %v; want none and ErrCursorExpired", e.n, len(e.batches), e.err)
		}
		noQuery(t, h, before, "resuming a dropped result")
	})
}

// resumeBatch is one batch as StreamFrom emitted it, copied, and the
// cursor after it.
type resumeBatch struct {
	rows    int
	columns []schemas.Column
	next    warehouse.Cursor
}

// resumeRun is what one StreamFrom call emitted and returned.
type resumeRun struct {
	batches []resumeBatch
	n       int64
	err     error
}

// streamFrom runs h's query from a cursor (nil: the query) on src. after,
// when set, is called after each batch k (from 1) is recorded; its error
// stops the stream, and it may cancel the stream's context instead.
func streamFrom(tb testing.TB, src warehouse.Resumable, h ResumeHarness, from *warehouse.Cursor,
	after func(k int, cancel context.CancelFunc) error) resumeRun {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var r resumeRun
	r.n, r.err = src.StreamFrom(ctx, h.Query, h.Day, h.BatchRows, from, func(b *warehouse.Batch, next warehouse.Cursor) error {
		cols := make([]schemas.Column, len(b.Columns))
		for i, c := range b.Columns {
			if len(c.Nulls) != b.Rows {
				return fmt.Errorf("column %s has %d nulls for %d rows", c.Name, len(c.Nulls), b.Rows)
			}
			cols[i] = schemas.Column{Name: c.Name, Type: c.Type, DBType: c.DBType, Nulls: slices.Clone(c.Nulls),
				Bools: slices.Clone(c.Bools), Longs: slices.Clone(c.Longs), Doubles: slices.Clone(c.Doubles), Strings: slices.Clone(c.Strings)}
		}
		r.batches = append(r.batches, resumeBatch{rows: b.Rows, columns: cols, next: next})
		if after != nil {
			return after(len(r.batches), cancel)
		}
		return nil
	})
	return r
}

// sameTail checks that resumed, a stream resumed at the cursor after
// batch k, emitted exactly the batches of whole after its first k and
// returned their rows; with sameCursors (resumed on whole's own result)
// the cursors after them too.
func sameTail(tb testing.TB, whole, resumed resumeRun, k int, sameCursors bool) {
	tb.Helper()
	if resumed.err != nil {
		tb.Fatalf("resume after batch %d: %v", k, resumed.err)
	}
	if len(resumed.batches) != len(whole.batches)-k {
		tb.Fatalf("resume after batch %d emitted %d batches, want %d", k, len(resumed.batches), len(whole.batches)-k)
	}
	var rows int64
	for i, b := range resumed.batches {
		want := whole.batches[k+i]
		if b.rows != want.rows || !sameColumns(b.columns, want.columns) {
			tb.Fatalf("resume after batch %d: its batch %d (%d rows) differs from batch %d of the uninterrupted stream (%d rows)",
				k, i, b.rows, k+i, want.rows)
		}
		if sameCursors && b.next != want.next {
			tb.Fatalf("resume after batch %d: cursor %+v after its batch %d, want %+v", k, b.next, i, want.next)
		}
		rows += int64(b.rows)
	}
	if resumed.n != rows {
		tb.Fatalf("resume after batch %d returned %d rows but emitted %d", k, resumed.n, rows)
	}
}

// sameColumns compares names, types and values; nil and empty slices are
// equal. The suite's days hold no NaN.
func sameColumns(a, b []schemas.Column) bool {
	return slices.EqualFunc(a, b, func(x, y schemas.Column) bool {
		return x.Name == y.Name && x.Type == y.Type && x.DBType == y.DBType && slices.Equal(x.Nulls, y.Nulls) &&
			slices.Equal(x.Bools, y.Bools) && slices.Equal(x.Longs, y.Longs) && slices.Equal(x.Doubles, y.Doubles) &&
			slices.Equal(x.Strings, y.Strings)
	})
}

// noQuery fails when the server ran the query since it had run it want
// times.
func noQuery(tb testing.TB, h ResumeHarness, want int, doing string) {
	tb.Helper()
	if got := h.Executed(); got != want {
		tb.Fatalf("%s ran the query %d more times, want none", doing, got-want)
	}
}
