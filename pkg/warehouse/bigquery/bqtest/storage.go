package bqtest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// readServer is the Storage Read API: one session per CreateReadSession,
// rows split into contiguous ranges, one per stream, each streamed as Arrow
// record batches of the page size from the request's row offset.
type readServer struct {
	storagepb.UnimplementedBigQueryReadServer
	s *Server
}

func (r *readServer) CreateReadSession(ctx context.Context, req *storagepb.CreateReadSessionRequest) (*storagepb.ReadSession, error) {
	s := r.s
	s.stats.sessions.Add(1)
	tbl := req.GetReadSession().GetTable()
	parts := strings.Split(tbl, "/")
	if len(parts) != 6 || parts[0] != "projects" || parts[2] != "datasets" || parts[4] != "tables" {
		return nil, status.Errorf(codes.InvalidArgument, "bad table %q", tbl)
	}
	t, err := s.lookup(parts[1], "", parts[3]+"."+parts[5])
	if err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	as, err := arrowSchema(t.schema)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ser, err := serializedSchema(as)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	s.mu.Lock()
	n := s.streams
	id := s.stats.sessions.Load()
	s.mu.Unlock()
	if m := int(req.GetMaxStreamCount()); m > 0 && m < n {
		n = m
	}
	name := tbl + "/sessions/" + strconv.FormatInt(id, 10)
	sess := &storagepb.ReadSession{
		Name:              name,
		Table:             tbl,
		DataFormat:        storagepb.DataFormat_ARROW,
		Schema:            &storagepb.ReadSession_ArrowSchema{ArrowSchema: &storagepb.ArrowSchema{SerializedSchema: ser}},
		EstimatedRowCount: int64(len(t.rows)),
	}
	if len(t.rows) > 0 {
		for i := range n {
			sess.Streams = append(sess.Streams, &storagepb.ReadStream{Name: fmt.Sprintf("%s/streams/%d/%d", name, i, n)})
		}
	}
	return sess, nil
}

func (r *readServer) ReadRows(req *storagepb.ReadRowsRequest, stream storagepb.BigQueryRead_ReadRowsServer) error {
	s := r.s
	s.stats.readRows.Add(1)
	// A stream name is <table>/sessions/<n>/streams/<i>/<count>.
	name := req.GetReadStream()
	at := strings.Index(name, "/sessions/")
	var i, n int
	if at < 0 {
		return status.Errorf(codes.InvalidArgument, "bad stream %q", name)
	}
	tail := strings.Split(name[at+1:], "/")
	if len(tail) != 5 {
		return status.Errorf(codes.InvalidArgument, "bad stream %q", name)
	}
	session := tail[1]
	i, _ = strconv.Atoi(tail[3])
	n, _ = strconv.Atoi(tail[4])
	if s.sessionExpired(session) {
		return expiredError(name)
	}
	parts := strings.Split(name[:at], "/")
	t, err := s.lookup(parts[1], "", parts[3]+"."+parts[5])
	if err != nil {
		return status.Error(codes.NotFound, err.Error())
	}
	as, err := arrowSchema(t.schema)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	ser, err := serializedSchema(as)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	s.mu.Lock()
	size := s.pageSize
	rows := t.rows
	hold := s.hold
	s.mu.Unlock()
	per := (len(rows) + n - 1) / n
	lo, hi := min(i*per, len(rows)), min((i+1)*per, len(rows))
	if req.GetOffset() < 0 || lo+int(req.GetOffset()) > hi {
		return status.Errorf(codes.OutOfRange, "offset %d is beyond stream %s of %d rows", req.GetOffset(), name, hi-lo)
	}
	fault := s.readFault()
	start := lo + int(req.GetOffset())
	if fault != nil {
		hi = min(hi, start+fault.AfterRows)
	}
	from := start
	for start < hi {
		end := min(start+size, hi)
		if hold != nil {
			if start-from < hold.rows {
				end = min(end, from+hold.rows)
			} else {
				s.stats.heldReads.Add(1)
				select {
				case <-hold.released:
				case <-stream.Context().Done():
					return stream.Context().Err()
				case <-s.done:
					return status.Error(codes.Unavailable, "server closed")
				}
				hold = nil
			}
		}
		data, err := serializedBatch(as, len(ser), t.schema, rows[start:end])
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		s.stats.recordBatches.Add(1)
		err = stream.Send(&storagepb.ReadRowsResponse{
			RowCount: int64(end - start),
			Rows: &storagepb.ReadRowsResponse_ArrowRecordBatch{ArrowRecordBatch: &storagepb.ArrowRecordBatch{
				SerializedRecordBatch: data,
				RowCount:              int64(end - start),
			}},
		})
		if err != nil {
			return err
		}
		start = end
	}
	switch {
	case fault == nil:
		return nil
	case fault.Expire:
		s.mu.Lock()
		s.expired[session] = true
		s.mu.Unlock()
		return expiredError(name)
	}
	return status.Error(fault.Code, fault.Message)
}

// readFault takes the next ReadRows fault, if one is queued.
func (s *Server) readFault() *ReadFault {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.readFaults) == 0 {
		return nil
	}
	f := *s.readFaults[0]
	if s.readFaults[0].Times > 0 {
		s.readFaults[0].Times--
		if s.readFaults[0].Times == 0 {
			s.readFaults = s.readFaults[1:]
		}
	}
	return &f
}

func (s *Server) sessionExpired(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expired[id]
}

// expiredError is what BigQuery answers for a stream of an expired session.
func expiredError(stream string) error {
	return status.Errorf(codes.FailedPrecondition, "there was an error operating on '%s': session expired at %s",
		stream, time.Now().UTC().Format(time.RFC3339))
}
