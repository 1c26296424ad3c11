package bigquery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	"cloud.google.com/go/civil"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/pkg/warehouse"
)

// A day streams from its query's destination table, not from the query's
// result pages, so that it can continue after a crash without running the
// query again: BigQuery keeps a query job's destination table (anonymous,
// in a hidden dataset) for about 24 h. The cursor is
//
//	Token     "storage:" or "rest:" and the table, projects/P/datasets/D/tables/T
//	Position  how many of the table's rows were emitted, in decimal
//
// Storage Read reads the table through a read session with exactly one
// stream, so a row's offset in the stream is its index in the table's
// stored order, the same in every session of the same unchanging table
// (the order the client relies on for ORDER BY results). A session expires
// after 6 h, so a resume, and a stream whose session expires under it,
// open a new single-stream session and read from the offset
// (ReadRowsRequest.Offset); the session itself is never part of the cursor.
// Without Storage Read, tabledata.list reads the same table from the same
// row index. The two paths may order rows differently, so a cursor
// resumes only on the path that made it.
//
// Batches are cut at every multiple of batchRows of that row index, and a
// cursor is only ever handed out at a cut (or at the end), so a stream
// resumed at a cursor emits exactly the batches an uninterrupted one would.
// One stream forgoes the parallel streams the client would use; the
// extractor emits batches in order anyway, and gRPC flow control keeps the
// stream busy while a batch is encoded.

var _ warehouse.Resumable = (*Source)(nil)

// Read paths named in a cursor's Token.
const (
	pathStorage = "storage:"
	pathREST    = "rest:"
)

// Transient Storage Read failures are retried from the current offset this
// many times without a row arriving in between, with backoff.
const readRetries = 5

// maxReadMessage admits ReadRows messages of up to 128 MiB, the Storage
// Read API's limit (gRPC's default is 4 MiB).
const maxReadMessage = 129 << 20

// Stream runs query for day and emits batches of at most batchRows rows.
func (s *Source) Stream(ctx context.Context, query string, day civil.Date, batchRows int, emit func(*warehouse.Batch) error) (int64, error) {
	return s.StreamFrom(ctx, query, day, batchRows, nil, func(b *warehouse.Batch, _ warehouse.Cursor) error { return emit(b) })
}

// StreamFrom is Stream that hands emit the cursor after each batch, and
// resumes at from, when given, without running the query again.
// ErrCursorExpired once the query's destination table is gone (after
// about 24 h) or when from was made by the other read path.
func (s *Source) StreamFrom(ctx context.Context, query string, day civil.Date, batchRows int, from *warehouse.Cursor,
	emit func(*warehouse.Batch, warehouse.Cursor) error) (int64, error) {
	if batchRows <= 0 {
		batchRows = 1
	}
	parent := ctx
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	st := &stream{s: s, parent: parent, ctx: ctx, day: day, batchRows: int64(batchRows), emit: emit, l: newLoader()}
	if from == nil {
		dst, err := s.destination(ctx, query, day)
		if err != nil {
			return 0, s.classify(parent, ctx, fmt.Sprintf("run query for day %s", day), err)
		}
		st.table = dst
	} else if err := st.resume(*from); err != nil {
		return 0, fmt.Errorf("resume day %s: %w", day, err)
	}
	id, err := st.table.Identifier(bigquery.StorageAPIResourceID)
	if err != nil {
		return 0, fmt.Errorf("name the result table of day %s: %w", day, err)
	}
	st.id = id
	st.token = pathREST + id
	if s.read != nil {
		st.token = pathStorage + id
	}
	md, err := st.table.Metadata(ctx)
	if err != nil {
		if from != nil && isNotFound(err) {
			return 0, fmt.Errorf("resume day %s from result table %s: %w: %w", day, id, warehouse.ErrCursorExpired, err)
		}
		return 0, s.classify(parent, ctx, fmt.Sprintf("read the result schema of day %s", day), err)
	}
	st.l.setSchema(md.Schema)
	if from != nil && st.offset > int64(md.NumRows) {
		return 0, fmt.Errorf("resume day %s at row %d of result table %s, which has %d rows: %w", day, st.offset, id, md.NumRows, warehouse.ErrCursorExpired)
	}
	if from != nil && st.offset == int64(md.NumRows) {
		return 0, nil // resumed at the end: the Storage Read API leaves reading there undefined
	}
	if s.read != nil {
		err = st.readStorage()
	} else {
		err = st.readREST()
	}
	if err == nil {
		err = st.flush()
	}
	return st.total, err
}

// destination runs query for day as a job and returns its result table.
func (s *Source) destination(ctx context.Context, query string, day civil.Date) (*bigquery.Table, error) {
	job, err := s.query(query, day).Run(ctx)
	if err != nil {
		return nil, err
	}
	status, err := job.Wait(ctx)
	if err != nil {
		return nil, err
	}
	if err := status.Err(); err != nil {
		return nil, err
	}
	if dst := destinationOf(job); dst != nil {
		return dst, nil
	}
	// The answer to jobs.insert may predate the destination table.
	if job, err = s.client.JobFromProject(ctx, job.ProjectID(), job.ID(), job.Location()); err != nil {
		return nil, err
	}
	if dst := destinationOf(job); dst != nil {
		return dst, nil
	}
	// A script's result is that of its last SELECT; children list newest first.
	it := job.Children(ctx)
	for {
		child, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return nil, fmt.Errorf("query job %s has no result table", job.ID())
		}
		if err != nil {
			return nil, fmt.Errorf("list the statements of script job %s: %w", job.ID(), err)
		}
		if dst := destinationOf(child); dst != nil {
			return dst, nil
		}
	}
}

func destinationOf(job *bigquery.Job) *bigquery.Table {
	cfg, err := job.Config()
	if err != nil {
		return nil
	}
	if qc, ok := cfg.(*bigquery.QueryConfig); ok {
		return qc.Dst
	}
	return nil
}

// stream is one StreamFrom call: where it stands in the result table and
// the batch it fills.
type stream struct {
	s           *Source
	parent, ctx context.Context
	day         civil.Date
	table       *bigquery.Table
	id          string // the table's Storage API resource id
	token       string
	batchRows   int64
	emit        func(*warehouse.Batch, warehouse.Cursor) error
	l           *loader
	offset      int64 // rows of the table emitted or in the batch
	total       int64 // rows emitted by this call
}

// resume points st at the cursor's table and row.
func (st *stream) resume(c warehouse.Cursor) error {
	path := pathREST
	if st.s.read != nil {
		path = pathStorage
	}
	id, ok := strings.CutPrefix(c.Token, path)
	if !ok {
		return fmt.Errorf("cursor %q was made by another read path than this source's %s: %w", c.Token, strings.TrimSuffix(path, ":"), warehouse.ErrCursorExpired)
	}
	parts := strings.Split(id, "/")
	if len(parts) != 6 || parts[0] != "projects" || parts[2] != "datasets" || parts[4] != "tables" {
		return fmt.Errorf("cursor token %q does not name a table: %w", c.Token, warehouse.ErrCursorExpired)
	}
	n, err := strconv.ParseInt(c.Position, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("cursor position %q is not a row index: %w", c.Position, warehouse.ErrCursorExpired)
	}
	st.table = st.s.client.DatasetInProject(parts[1], parts[3]).Table(parts[5])
	st.offset = n
	return nil
}

// rowsAdded moves past n rows just added to the batch and emits the batch
// when the row index reaches a cut.
func (st *stream) rowsAdded(n int) error {
	st.offset += int64(n)
	if st.offset%st.batchRows != 0 {
		return nil
	}
	return st.flush()
}

// room is how many rows the batch takes before the next cut.
func (st *stream) room() int { return int(st.batchRows - st.offset%st.batchRows) }

// flush emits the batch, if it has rows, with the cursor after it.
func (st *stream) flush() error {
	b := &st.l.batch
	if b.Rows == 0 {
		return nil
	}
	n := b.Rows
	err := st.emit(b, warehouse.Cursor{Token: st.token, Position: strconv.FormatInt(st.offset, 10)})
	if err != nil {
		return st.s.stopped(st.parent, st.ctx, fmt.Errorf("emit batch: %w", err))
	}
	st.total += int64(n)
	b.Reset()
	if err := st.ctx.Err(); err != nil {
		return st.s.classify(st.parent, st.ctx, "stream rows", err)
	}
	return nil
}

// readREST lists the table from the row index through tabledata.list.
func (st *stream) readREST() error {
	it := st.table.Read(st.ctx)
	it.StartIndex = uint64(st.offset)
	for {
		err := it.Next(st.l)
		if errors.Is(err, iterator.Done) {
			return nil
		}
		if err != nil {
			return st.s.classify(st.parent, st.ctx, fmt.Sprintf("read rows of day %s", st.day), err)
		}
		if err := st.rowsAdded(1); err != nil {
			return err
		}
	}
}

// readError is a Storage Read failure, as opposed to an emit's.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// readStorage reads the table from the row index through single-stream
// read sessions, opening a new one whenever the last has expired.
func (st *stream) readStorage() error {
	var name string
	var schema []byte
	renewed := false // a new session opened since the last row arrived
	retries := 0
	bo := gax.Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2}
	for {
		if name == "" {
			sess, err := st.s.read.CreateReadSession(st.ctx, &storagepb.CreateReadSessionRequest{
				Parent:         "projects/" + st.s.client.Project(),
				ReadSession:    &storagepb.ReadSession{Table: st.id, DataFormat: storagepb.DataFormat_ARROW},
				MaxStreamCount: 1,
			})
			if status.Code(err) == codes.NotFound {
				return fmt.Errorf("open a read session on result table %s of day %s: %w: %w", st.id, st.day, warehouse.ErrCursorExpired, err)
			}
			if err != nil {
				return st.s.classify(st.parent, st.ctx, fmt.Sprintf("open a read session on result table %s of day %s", st.id, st.day), err)
			}
			if len(sess.GetStreams()) == 0 {
				return nil // an empty table has no stream
			}
			name, schema = sess.GetStreams()[0].GetName(), sess.GetArrowSchema().GetSerializedSchema()
		}
		before := st.offset
		err := st.readStream(name, schema)
		if st.offset > before {
			renewed, retries = false, 0
		}
		var re *readError
		if !errors.As(err, &re) {
			return err // nil at the stream's end, or an emit's or a decode's error
		}
		if st.ctx.Err() != nil {
			return st.s.classify(st.parent, st.ctx, fmt.Sprintf("read rows of day %s", st.day), re.err)
		}
		switch code := status.Code(re.err); {
		case code == codes.FailedPrecondition && !renewed:
			// The session expired (6 h); a new one reads the same table.
			name, renewed = "", true
			continue
		case code == codes.NotFound:
			return fmt.Errorf("read result table %s of day %s at row %d: %w: %w", st.id, st.day, st.offset, warehouse.ErrCursorExpired, re.err)
		case transientRead(code) && retries < readRetries:
			retries++
			if err := gax.Sleep(st.ctx, bo.Pause()); err != nil {
				return st.s.classify(st.parent, st.ctx, fmt.Sprintf("read rows of day %s", st.day), err)
			}
			continue
		}
		return st.s.classify(st.parent, st.ctx, fmt.Sprintf("read rows of day %s at row %d", st.day, st.offset), re.err)
	}
}

// transientRead reports whether a ReadRows failure is worth reopening the
// stream at the same offset, as the client itself does.
func transientRead(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.Internal, codes.Aborted, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}

// readStream reads stream from st.offset to its end, appending to and
// emitting batches. Server failures come back as *readError.
func (st *stream) readStream(stream string, schema []byte) error {
	ctx, cancel := context.WithCancel(st.ctx)
	defer cancel() // ends the call if an emit stops the stream
	rows, err := st.s.read.ReadRows(ctx, &storagepb.ReadRowsRequest{ReadStream: stream, Offset: st.offset},
		gax.WithGRPCOptions(grpc.MaxCallRecvMsgSize(maxReadMessage)))
	if err != nil {
		return &readError{err}
	}
	for {
		resp, err := rows.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &readError{err}
		}
		rb := resp.GetArrowRecordBatch()
		if rb == nil || resp.GetRowCount() == 0 {
			continue
		}
		rec, err := decodeRecord(schema, rb.GetSerializedRecordBatch())
		if err != nil {
			return fmt.Errorf("read rows of day %s at row %d: %w", st.day, st.offset, err)
		}
		err = st.appendRecord(rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
}

// appendRecord adds a record's rows to the batch, emitting at every cut.
func (st *stream) appendRecord(rec arrow.RecordBatch) error {
	if int(rec.NumCols()) != len(st.l.schema) {
		return fmt.Errorf("read rows of day %s: record batch has %d columns for %d", st.day, rec.NumCols(), len(st.l.schema))
	}
	n := int(rec.NumRows())
	for off := 0; off < n; {
		k := min(n-off, st.room())
		for i, col := range rec.Columns() {
			if err := st.l.appendArrow(i, col, off, off+k); err != nil {
				return fmt.Errorf("read rows of day %s, column %s: %w", st.day, st.l.schema[i].Name, err)
			}
		}
		off += k
		st.l.batch.Rows += k
		if err := st.rowsAdded(k); err != nil {
			return err
		}
	}
	return nil
}

func isNotFound(err error) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == 404
}
