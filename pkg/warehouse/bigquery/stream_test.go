package bigquery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery/bqtest"
	"github.com/sluicehq/sluice/pkg/warehouse/warehousetest"
)

const (
	resumeRows      = 1000
	resumeBatchRows = 100
	resumePageSize  = 70 // record batches and REST pages straddle the batch cuts
)

// emitted is what one StreamFrom call handed to emit.
type emitted struct {
	batches [][]int64 // each batch's ids, in order
	cursors []warehouse.Cursor
	n       int64
	err     error
}

var errCrash = errors.New("crash")

// streamFrom runs StreamFrom on a fresh query (from nil) or a cursor and
// records every batch; with crashAfter > 0 the emit after that many
// batches fails, as a process killed before making it durable would.
func streamFrom(tb testing.TB, src *Source, from *warehouse.Cursor, crashAfter int) emitted {
	tb.Helper()
	var e emitted
	e.n, e.err = src.StreamFrom(context.Background(), eventsQuery, testDay, resumeBatchRows, from, func(b *warehouse.Batch, next warehouse.Cursor) error {
		if crashAfter > 0 && len(e.batches) == crashAfter {
			return errCrash
		}
		if len(b.Columns[0].Longs) != b.Rows || b.Columns[1].Strings[0] != "n" {
			return fmt.Errorf("batch of %d rows has %d ids and name %q", b.Rows, len(b.Columns[0].Longs), b.Columns[1].Strings[0])
		}
		e.batches = append(e.batches, slices.Clone(b.Columns[0].Longs))
		e.cursors = append(e.cursors, next)
		return nil
	})
	return e
}

// newResumeServer is a server holding the events table, and a source on it.
func newResumeServer(tb testing.TB, o Options) (*bqtest.Server, *Source) {
	tb.Helper()
	srv := bqtest.NewServer(tb)
	srv.SetPageSize(resumePageSize)
	srv.SetStorageStreams(4) // the source must still ask for one stream
	seed(tb, srv, resumeRows)
	return srv, openTest(tb, testConn(srv), o)
}

// wantAll checks e is the whole day: ids 0..resumeRows-1 in table order,
// cut every resumeBatchRows rows.
func wantAll(tb testing.TB, e emitted) {
	tb.Helper()
	if e.err != nil || e.n != resumeRows {
		tb.Fatalf("StreamFrom = %d, %v; want %d rows", e.n, e.err, resumeRows)
	}
	if len(e.batches) != resumeRows/resumeBatchRows {
		tb.Fatalf("%d batches, want %d", len(e.batches), resumeRows/resumeBatchRows)
	}
	for i, b := range e.batches {
		want := make([]int64, resumeBatchRows)
		for j := range want {
			want[j] = int64(i*resumeBatchRows + j)
		}
		if !slices.Equal(b, want) {
			tb.Fatalf("batch %d holds ids %d..%d (%d rows), want %d..%d", i, b[0], b[len(b)-1], len(b), want[0], want[len(want)-1])
		}
		if got := e.cursors[i].Position; got != strconv.Itoa((i+1)*resumeBatchRows) {
			tb.Fatalf("cursor after batch %d at %s, want %d", i, got, (i+1)*resumeBatchRows)
		}
	}
}

// sameTail checks that resumed, a stream resumed at from after batch k,
// emitted exactly the batches of whole after its first k, with cursors at
// the same rows of from's result.
func sameTail(tb testing.TB, whole, resumed emitted, k int, from warehouse.Cursor) {
	tb.Helper()
	if resumed.err != nil {
		tb.Fatalf("resume after batch %d: %v", k, resumed.err)
	}
	if len(resumed.batches) != len(whole.batches)-k {
		tb.Fatalf("resume after batch %d emitted %d batches, want %d", k, len(resumed.batches), len(whole.batches)-k)
	}
	var rows int64
	for i, b := range resumed.batches {
		if !slices.Equal(b, whole.batches[k+i]) {
			tb.Fatalf("resumed batch %d differs from batch %d of the uninterrupted stream", i, k+i)
		}
		c := resumed.cursors[i]
		if c.Token != from.Token || c.Position != whole.cursors[k+i].Position {
			tb.Fatalf("resumed cursor %d = %+v, want %s at %s", i, c, from.Token, whole.cursors[k+i].Position)
		}
		rows += int64(len(b))
	}
	if resumed.n != rows {
		tb.Fatalf("resume returned %d rows, emitted %d", resumed.n, rows)
	}
}

var readPaths = []struct {
	name string
	opts Options
}{
	{"storage read", Options{}},
	{"REST", Options{DisableStorageRead: true}},
}

// The Resumable contract on both read paths: batches of 100 rows cut
// across record batches and pages of 70.
func TestResume(t *testing.T) {
	t.Parallel()
	for _, path := range readPaths {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := newResumeServer(t, path.opts)
			h := warehousetest.ResumeHarness{
				Open:      func(tb testing.TB) warehouse.Resumable { return openTest(tb, testConn(srv), path.opts) },
				Query:     eventsQuery,
				Day:       testDay,
				BatchRows: resumeBatchRows,
				Executed:  func() int { return int(srv.Stats().Executed) },
				Expire:    srv.ExpireResults,
			}
			if !path.opts.DisableStorageRead {
				h.ExpireLinks = srv.ExpireReadSessions // REST reads the table itself
			}
			warehousetest.RunResume(t, h)
		})
	}
}

// A read session expiring while it is read is replaced at the same row.
func TestReadSessionExpiresMidStream(t *testing.T) {
	t.Parallel()
	t.Run("a session expiring mid-stream is replaced at the same row", func(t *testing.T) {
		t.Parallel()
		srv, src := newResumeServer(t, Options{})
		srv.InjectReadFault(bqtest.ReadFault{AfterRows: 350, Expire: true, Times: 1})
		wantAll(t, streamFrom(t, src, nil, 0))
		if st := srv.Stats(); st.Executed != 1 || st.ReadSessions != 2 || st.ReadRows != 2 {
			t.Fatalf("%d queries, %d sessions, %d ReadRows calls; want 1 query, 2 sessions, 2 reads", st.Executed, st.ReadSessions, st.ReadRows)
		}
	})
	t.Run("a session that expires again at once is an error", func(t *testing.T) {
		t.Parallel()
		srv, src := newResumeServer(t, Options{})
		srv.InjectReadFault(bqtest.ReadFault{AfterRows: 350, Expire: true, Times: 1})
		srv.InjectReadFault(bqtest.ReadFault{AfterRows: 0, Expire: true, Times: 1})
		e := streamFrom(t, src, nil, 0)
		if e.err == nil || errors.Is(e.err, warehouse.ErrCursorExpired) || len(e.batches) != 3 {
			t.Fatalf("StreamFrom = %d batches, %v; want 3 batches and an error that is not ErrCursorExpired", len(e.batches), e.err)
		}
	})
}

// A result table dropped while it is read is ErrCursorExpired after the
// batches before it.
func TestResultDroppedMidStream(t *testing.T) {
	t.Parallel()
	srv, src := newResumeServer(t, Options{})
	srv.InjectReadFault(bqtest.ReadFault{AfterRows: 250, Code: codes.NotFound, Message: "Not found: Table", Times: 1})
	e := streamFrom(t, src, nil, 0)
	if !errors.Is(e.err, warehouse.ErrCursorExpired) || len(e.batches) != 2 {
		t.Fatalf("StreamFrom = %d batches, %v; want 2 batches and ErrCursorExpired", len(e.batches), e.err)
	}
}

func TestReadFailsPartWay(t *testing.T) {
	t.Parallel()
	t.Run("transient failures reopen the stream at the same row", func(t *testing.T) {
		t.Parallel()
		srv, src := newResumeServer(t, Options{})
		srv.InjectReadFault(bqtest.ReadFault{AfterRows: 250, Code: codes.Unavailable, Message: "backend went away", Times: 2})
		wantAll(t, streamFrom(t, src, nil, 0))
		if st := srv.Stats(); st.Executed != 1 || st.ReadSessions != 1 || st.ReadRows != 3 {
			t.Fatalf("%d queries, %d sessions, %d ReadRows calls; want 1, 1, 3", st.Executed, st.ReadSessions, st.ReadRows)
		}
	})
	t.Run("a lasting failure stops the stream, which resumes later", func(t *testing.T) {
		t.Parallel()
		srv, src := newResumeServer(t, Options{})
		whole := streamFrom(t, src, nil, 0)
		srv.InjectReadFault(bqtest.ReadFault{AfterRows: 450, Code: codes.PermissionDenied, Message: "no getData", Times: 1})
		failed := streamFrom(t, src, nil, 0)
		if cat, _ := warehouse.Categorize(failed.err); cat != vocab.CategoryPermission || len(failed.batches) != 4 {
			t.Fatalf("StreamFrom = %d batches, %v (%s); want 4 batches and a PERMISSION_ERROR", len(failed.batches), failed.err, cat)
		}
		executed := srv.Stats().Executed
		sameTail(t, whole, streamFrom(t, src, &failed.cursors[3], 0), 4, failed.cursors[3])
		if srv.Stats().Executed != executed {
			t.Fatal("resume ran the query again")
		}
	})
}

func TestResumeCursorChecks(t *testing.T) {
	t.Parallel()
	srv, storage := newResumeServer(t, Options{})
	rest := openTest(t, testConn(srv), Options{DisableStorageRead: true})
	fromStorage := streamFrom(t, storage, nil, 1).cursors[0]
	fromREST := streamFrom(t, rest, nil, 1).cursors[0]
	tests := []struct {
		name   string
		src    *Source
		cursor warehouse.Cursor
	}{
		{"storage cursor on a REST source", rest, fromStorage},
		{"REST cursor on a storage source", storage, fromREST},
		{"token naming no table", storage, warehouse.Cursor{Token: "storage:projects/p/tables/t", Position: "0"}},
		{"negative position", storage, warehouse.Cursor{Token: fromStorage.Token, Position: "-1"}},
		{"position past the table's end", storage, warehouse.Cursor{Token: fromStorage.Token, Position: "1001"}},
	}
	// Every cursor this source cannot resume is ErrCursorExpired: the
	// extractor then starts the day over rather than failing it.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := streamFrom(t, tt.src, &tt.cursor, 0)
			if !errors.Is(e.err, warehouse.ErrCursorExpired) || len(e.batches) != 0 {
				t.Fatalf("StreamFrom(%+v) = %d batches, %v; want none and ErrCursorExpired", tt.cursor, len(e.batches), e.err)
			}
		})
	}
}
