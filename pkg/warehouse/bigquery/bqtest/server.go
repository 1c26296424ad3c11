// Package bqtest is an in-process BigQuery for tests: an HTTP server that
// speaks the REST API cloud.google.com/go/bigquery uses for queries
// (jobs.query with the first page inline, jobs.getQueryResults paging,
// jobs.insert and jobs.get, tables.get, tabledata.list from a row index,
// dry runs, errors in BigQuery's JSON shape) and a gRPC server for the
// Storage Read API (CreateReadSession with an Arrow schema, ReadRows
// streaming Arrow record batches from a row offset).
//
// A query job keeps its result as a destination table in AnonymousDataset
// until ExpireResults drops them, as BigQuery does after about 24 h. Read
// sessions expire when told (ExpireReadSessions, or a ReadFault with
// Expire), as BigQuery's do after 6 h, ReadFault makes a read fail
// part-way and HoldReads makes reads pause part-way.
//
// The gRPC service is reachable two ways: over an in-memory bufconn
// listener (StorageConn, for option.WithGRPCConn) and on the HTTP port
// itself as unencrypted HTTP/2, so a client given only URL reaches both
// APIs. Data lives in tables added with AddTable; queries are answered by
// a tiny matcher documented in query.go — a protocol fake, not SQL.
package bqtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	bq "google.golang.org/api/bigquery/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// AnonymousDataset holds the destination tables of query jobs, as
// BigQuery's anonymous datasets do; the Storage Read API reads them.
const AnonymousDataset = "_bqtest_anonymous"

// Server is a fake BigQuery. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base address; the REST API lives under URL+"/bigquery/v2/".
	URL string

	http *httptest.Server
	grpc *grpc.Server
	done chan struct{} // closed by Close, releases hung requests
	lis  *bufconn.Listener

	mu       sync.Mutex
	tables   map[string]*table // "dataset.table"
	jobs     map[string]*job
	pageSize int
	streams  int
	faults   []*Fault
	nextID   int

	readFaults []*ReadFault
	expired    map[string]bool // read session names that expired
	hold       *readHold
	queries    []string // SQL of the queries run, in order

	stats struct {
		queries, executed, pages, jobInserts, jobGets, tableGets, tableData, sessions, readRows, recordBatches, heldReads atomic.Int64
	}
}

type table struct {
	schema bigquery.Schema
	rows   [][]bigquery.Value
}

func (t *table) column(name string) int {
	for i, f := range t.schema {
		if strings.EqualFold(f.Name, name) {
			return i
		}
	}
	return -1
}

type job struct {
	project, id, location string
	query                 string
	dst                   string // table key in AnonymousDataset
	res                   *result
}

// Fault makes REST requests fail. Times is how many requests it fails
// (0: every request until ClearFaults). With Hang set a request instead
// blocks until the client gives up (its context ends), to test
// cancellation and timeouts.
type Fault struct {
	Code    int    // HTTP status, e.g. 401, 403, 503
	Reason  string // BigQuery's reason, e.g. authError, accessDenied, backendError
	Message string
	Times   int
	Hang    bool
}

// ReadFault makes Storage Read API ReadRows calls fail part-way: a call
// sends AfterRows rows (counted from its offset) and then ends with Code
// and Message. With Expire set, the call's read session expires there
// instead, so it and every later read of that session fail with
// FAILED_PRECONDITION "session expired", as BigQuery's do after 6 h. Times
// is how many calls it fails (0: every call until ClearFaults).
type ReadFault struct {
	AfterRows int
	Code      codes.Code
	Message   string
	Expire    bool
	Times     int
}

// Stats counts the calls the server answered.
type Stats struct {
	Queries       int64 // jobs.query
	Executed      int64 // queries run by jobs.query or jobs.insert, dry runs excluded
	Pages         int64 // jobs.getQueryResults
	JobInserts    int64
	JobGets       int64
	TableGets     int64
	TableData     int64 // tabledata.list
	ReadSessions  int64 // Storage Read API CreateReadSession
	ReadRows      int64 // Storage Read API ReadRows calls
	RecordBatches int64 // Arrow record batches streamed by ReadRows
	HeldReads     int64 // ReadRows calls that paused on HoldReads
}

// NewServer starts a fake BigQuery that stops when tb's test ends. Pages
// hold 1000 rows unless SetPageSize says otherwise.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		tables:   map[string]*table{},
		jobs:     map[string]*job{},
		expired:  map[string]bool{},
		pageSize: 1000,
		done:     make(chan struct{}),
		streams:  1,
		grpc:     grpc.NewServer(),
		lis:      bufconn.Listen(1 << 20),
	}
	storagepb.RegisterBigQueryReadServer(s.grpc, &readServer{s: s})
	go s.grpc.Serve(s.lis)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /bigquery/v2/projects/{project}/queries", s.handleQuery)
	mux.HandleFunc("GET /bigquery/v2/projects/{project}/queries/{job}", s.handleQueryResults)
	mux.HandleFunc("POST /bigquery/v2/projects/{project}/jobs", s.handleJobInsert)
	mux.HandleFunc("GET /bigquery/v2/projects/{project}/jobs/{job}", s.handleJobGet)
	mux.HandleFunc("GET /bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}", s.handleTableGet)
	mux.HandleFunc("GET /bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}/data", s.handleTableData)
	s.http = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			s.grpc.ServeHTTP(w, r)
			return
		}
		if s.fault(w, r) {
			return
		}
		mux.ServeHTTP(w, r)
	}))
	s.http.Config.Protocols = new(http.Protocols)
	s.http.Config.Protocols.SetHTTP1(true)
	s.http.Config.Protocols.SetUnencryptedHTTP2(true)
	s.http.Start()
	s.URL = s.http.URL
	tb.Cleanup(s.Close)
	return s
}

// Close stops both servers.
func (s *Server) Close() {
	close(s.done)
	s.http.CloseClientConnections()
	s.http.Close()
	s.grpc.Stop()
	s.lis.Close()
}

// StorageConn dials the Storage Read API over the in-memory listener, for
// option.WithGRPCConn. The connection closes when tb's test ends.
func (s *Server) StorageConn(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("dial bqtest storage: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// AddTable adds or replaces dataset.table. Rows hold values as the client
// returns them: int64, float64, bool, string (also JSON, GEOGRAPHY), []byte,
// civil.Date, time.Time, civil.DateTime, civil.Time, *big.Rat, nil, and
// []bigquery.Value for REPEATED fields and for RECORD fields (positional).
func (s *Server) AddTable(dataset, name string, schema bigquery.Schema, rows [][]bigquery.Value) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables[dataset+"."+name] = &table{schema: schema, rows: rows}
}

// SetPageSize sets how many rows a REST page and an Arrow record batch hold.
func (s *Server) SetPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}

// SetStorageStreams sets how many streams a read session splits rows into.
func (s *Server) SetStorageStreams(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams = max(n, 1)
}

// InjectFault queues f; REST requests fail with it while it lasts.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// InjectReadFault queues f; ReadRows calls fail with it while it lasts.
func (s *Server) InjectReadFault(f ReadFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readFaults = append(s.readFaults, &f)
}

// ClearFaults removes every queued fault, REST and ReadRows.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
	s.readFaults = nil
}

// ExpireReadSessions expires every read session made so far: reading any
// of their streams fails with FAILED_PRECONDITION, as after BigQuery's 6 h.
func (s *Server) ExpireReadSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := int64(1); i <= s.stats.sessions.Load(); i++ {
		s.expired[strconv.FormatInt(i, 10)] = true
	}
}

// ExpireResults drops every query job's destination table, as BigQuery
// does about 24 h after the query ran. The jobs themselves stay.
func (s *Server) ExpireResults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key := range s.tables {
		if strings.HasPrefix(key, AnonymousDataset+".") {
			delete(s.tables, key)
		}
	}
}

// Stats returns the call counts so far.
func (s *Server) Stats() Stats {
	return Stats{
		Queries:       s.stats.queries.Load(),
		Executed:      s.stats.executed.Load(),
		Pages:         s.stats.pages.Load(),
		JobInserts:    s.stats.jobInserts.Load(),
		JobGets:       s.stats.jobGets.Load(),
		TableGets:     s.stats.tableGets.Load(),
		TableData:     s.stats.tableData.Load(),
		ReadSessions:  s.stats.sessions.Load(),
		ReadRows:      s.stats.readRows.Load(),
		RecordBatches: s.stats.recordBatches.Load(),
		HeldReads:     s.stats.heldReads.Load(),
	}
}

// Queries returns the SQL of every query run so far (what Executed
// counts), in order.
func (s *Server) Queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

// readHold pauses ReadRows calls after rows rows until released closes.
type readHold struct {
	rows     int
	released chan struct{}
}

// HoldReads makes ReadRows calls pause once they have sent afterRows rows
// (counted from the call's offset) until release is called or the client
// gives up: a slow extraction the test controls.
func (s *Server) HoldReads(afterRows int) (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &readHold{rows: afterRows, released: make(chan struct{})}
	s.hold = h
	var once sync.Once
	return func() {
		once.Do(func() {
			close(h.released)
			s.mu.Lock()
			if s.hold == h {
				s.hold = nil
			}
			s.mu.Unlock()
		})
	}
}

func (s *Server) fault(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	if len(s.faults) == 0 {
		s.mu.Unlock()
		return false
	}
	f := *s.faults[0]
	if s.faults[0].Times > 0 {
		s.faults[0].Times--
		if s.faults[0].Times == 0 {
			s.faults = s.faults[1:]
		}
	}
	s.mu.Unlock()
	if f.Hang {
		// The server notices a client hanging up only once the body is read.
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return true
	}
	writeError(w, &queryError{code: f.Code, reason: f.Reason, message: f.Message})
	return true
}

func (s *Server) lookup(project, dataset, ref string) (*table, error) {
	parts := strings.Split(ref, ".")
	if len(parts) == 1 && dataset != "" {
		parts = []string{dataset, ref}
	}
	if len(parts) < 2 || len(parts) > 3 {
		return nil, invalidQuery("Table %q must be qualified with a dataset (e.g. dataset.table)", ref)
	}
	if len(parts) == 3 {
		project = parts[0]
	}
	key := parts[len(parts)-2] + "." + parts[len(parts)-1]
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tables[key]
	if !ok {
		return nil, &queryError{code: 404, reason: "notFound", message: fmt.Sprintf("Not found: Table %s:%s was not found in location US", project, key)}
	}
	return t, nil
}

// execute runs a query and, unless it is a dry run, keeps its result as a
// job with a destination table, as BigQuery does.
func (s *Server) execute(project, location string, dataset *bq.DatasetReference, sql string, qp []*bq.QueryParameter, maxBytes int64, dryRun bool) (*job, error) {
	p := params{}
	for _, q := range qp {
		if q.ParameterValue == nil {
			continue
		}
		p[strings.ToLower(q.Name)] = q.ParameterValue.Value
	}
	defDataset := ""
	if dataset != nil {
		defDataset = dataset.DatasetId
	}
	res, err := s.run(project, defDataset, sql, p)
	if err != nil {
		return nil, err
	}
	if maxBytes > 0 && res.bytes > maxBytes {
		return nil, &queryError{code: 400, reason: "bytesBilledLimitExceeded",
			message: fmt.Sprintf("Query exceeded limit for bytes billed: %d. %d or higher required.", maxBytes, res.bytes)}
	}
	if location == "" {
		location = "US"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	j := &job{project: project, id: fmt.Sprintf("bqtest_job_%d", s.nextID), location: location, query: sql, res: res}
	if !dryRun {
		s.stats.executed.Add(1)
		s.queries = append(s.queries, sql)
		j.dst = "anon_" + j.id
		s.tables[AnonymousDataset+"."+j.dst] = &table{schema: res.schema, rows: res.rows}
		s.jobs[j.id] = j
	}
	return j, nil
}

func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request) {
	s.stats.queries.Add(1)
	var req bq.QueryRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, &queryError{code: 400, reason: "invalid", message: "decode QueryRequest: " + err.Error()})
		return
	}
	project := r.PathValue("project")
	j, err := s.execute(project, req.Location, req.DefaultDataset, req.Query, req.QueryParameters, req.MaximumBytesBilled, req.DryRun)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := &bq.QueryResponse{
		Kind:                "bigquery#queryResponse",
		JobComplete:         true,
		JobReference:        &bq.JobReference{ProjectId: project, JobId: j.id, Location: j.location},
		Schema:              toTableSchema(j.res.schema),
		TotalBytesProcessed: j.res.bytes,
		TotalRows:           uint64(len(j.res.rows)),
	}
	if !req.DryRun {
		resp.Rows, resp.PageToken = s.page(j.res, 0, int(req.MaxResults))
	}
	writeJSON(w, resp)
}

// page returns rows [start, start+n) in REST form and the next page's token.
func (s *Server) page(res *result, start, n int) ([]*bq.TableRow, string) {
	s.mu.Lock()
	size := s.pageSize
	s.mu.Unlock()
	if n <= 0 || n > size {
		n = size
	}
	end := min(start+n, len(res.rows))
	if start > end {
		start = end
	}
	rows := make([]*bq.TableRow, 0, end-start)
	for _, row := range res.rows[start:end] {
		rows = append(rows, restRow(res.schema, row))
	}
	token := ""
	if end < len(res.rows) {
		token = "row:" + strconv.Itoa(end)
	}
	return rows, token
}

// pageStart is where a page request starts: its pageToken, else startIndex.
func pageStart(r *http.Request) (int, error) {
	q := r.URL.Query()
	start, _ := strconv.Atoi(q.Get("startIndex"))
	if tok := q.Get("pageToken"); tok != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tok, "row:"))
		if err != nil {
			return 0, &queryError{code: 400, reason: "invalid", message: "Invalid page token " + tok}
		}
		start = n
	}
	return start, nil
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) *job {
	s.mu.Lock()
	j, ok := s.jobs[r.PathValue("job")]
	s.mu.Unlock()
	if !ok {
		writeError(w, &queryError{code: 404, reason: "notFound", message: "Not found: Job " + r.PathValue("project") + ":" + r.PathValue("job")})
		return nil
	}
	return j
}

func (s *Server) handleQueryResults(w http.ResponseWriter, r *http.Request) {
	s.stats.pages.Add(1)
	j := s.job(w, r)
	if j == nil {
		return
	}
	start, err := pageStart(r)
	if err != nil {
		writeError(w, err)
		return
	}
	maxResults, _ := strconv.Atoi(r.URL.Query().Get("maxResults"))
	rows, token := s.page(j.res, start, maxResults)
	writeJSON(w, &bq.GetQueryResultsResponse{
		Kind:         "bigquery#getQueryResultsResponse",
		JobComplete:  true,
		JobReference: &bq.JobReference{ProjectId: j.project, JobId: j.id, Location: j.location},
		Schema:       toTableSchema(j.res.schema),
		Rows:         rows,
		PageToken:    token,
		TotalRows:    uint64(len(j.res.rows)),
	})
}

func (s *Server) handleJobInsert(w http.ResponseWriter, r *http.Request) {
	s.stats.jobInserts.Add(1)
	var req bq.Job
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, &queryError{code: 400, reason: "invalid", message: "decode Job: " + err.Error()})
		return
	}
	if req.Configuration == nil || req.Configuration.Query == nil {
		writeError(w, &queryError{code: 400, reason: "invalid", message: "bqtest serves query jobs only"})
		return
	}
	qc := req.Configuration.Query
	location := ""
	if req.JobReference != nil {
		location = req.JobReference.Location
	}
	project := r.PathValue("project")
	j, err := s.execute(project, location, qc.DefaultDataset, qc.Query, qc.QueryParameters, qc.MaximumBytesBilled, req.Configuration.DryRun)
	if err != nil {
		writeError(w, err)
		return
	}
	if req.JobReference != nil && req.JobReference.JobId != "" && !req.Configuration.DryRun {
		// Keep the client's id: it polls the job by it.
		s.mu.Lock()
		delete(s.jobs, j.id)
		j.id = req.JobReference.JobId
		s.jobs[j.id] = j
		s.mu.Unlock()
	}
	out := s.jobResource(j)
	out.Configuration.DryRun = req.Configuration.DryRun
	writeJSON(w, out)
}

func (s *Server) jobResource(j *job) *bq.Job {
	qc := &bq.JobConfigurationQuery{Query: j.query}
	if j.dst != "" {
		qc.DestinationTable = &bq.TableReference{ProjectId: j.project, DatasetId: AnonymousDataset, TableId: j.dst}
	}
	return &bq.Job{
		Kind:          "bigquery#job",
		Id:            j.project + ":" + j.location + "." + j.id,
		JobReference:  &bq.JobReference{ProjectId: j.project, JobId: j.id, Location: j.location},
		Configuration: &bq.JobConfiguration{JobType: "QUERY", Query: qc},
		Status:        &bq.JobStatus{State: "DONE"},
		Statistics: &bq.JobStatistics{
			TotalBytesProcessed: j.res.bytes,
			Query: &bq.JobStatistics2{
				TotalBytesProcessed: j.res.bytes,
				TotalBytesBilled:    j.res.bytes,
				StatementType:       "SELECT",
				Schema:              toTableSchema(j.res.schema),
			},
		},
	}
}

func (s *Server) handleJobGet(w http.ResponseWriter, r *http.Request) {
	s.stats.jobGets.Add(1)
	if j := s.job(w, r); j != nil {
		writeJSON(w, s.jobResource(j))
	}
}

func (s *Server) handleTableGet(w http.ResponseWriter, r *http.Request) {
	s.stats.tableGets.Add(1)
	dataset, name := r.PathValue("dataset"), r.PathValue("table")
	t, err := s.lookup(r.PathValue("project"), "", dataset+"."+name)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, &bq.Table{
		Kind:           "bigquery#table",
		Id:             r.PathValue("project") + ":" + dataset + "." + name,
		TableReference: &bq.TableReference{ProjectId: r.PathValue("project"), DatasetId: dataset, TableId: name},
		Schema:         toTableSchema(t.schema),
		NumRows:        uint64(len(t.rows)),
		Type:           "TABLE",
		Location:       "US",
	})
}

// handleTableData is tabledata.list: a table's rows in stored order from
// a row index (startIndex) or a page token.
func (s *Server) handleTableData(w http.ResponseWriter, r *http.Request) {
	s.stats.tableData.Add(1)
	t, err := s.lookup(r.PathValue("project"), "", r.PathValue("dataset")+"."+r.PathValue("table"))
	if err != nil {
		writeError(w, err)
		return
	}
	start, err := pageStart(r)
	if err != nil {
		writeError(w, err)
		return
	}
	s.mu.Lock()
	res := &result{schema: t.schema, rows: t.rows}
	s.mu.Unlock()
	maxResults, _ := strconv.Atoi(r.URL.Query().Get("maxResults"))
	rows, token := s.page(res, start, maxResults)
	writeJSON(w, &bq.TableDataList{
		Kind:      "bigquery#tableDataList",
		Rows:      rows,
		PageToken: token,
		TotalRows: int64(len(t.rows)),
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	json.NewEncoder(w).Encode(v)
}

// writeError answers in BigQuery's error shape, which googleapi.Error parses.
func writeError(w http.ResponseWriter, err error) {
	qe, ok := err.(*queryError)
	if !ok {
		qe = &queryError{code: 500, reason: "internalError", message: err.Error()}
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(qe.code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code":    qe.code,
		"message": qe.message,
		"errors":  []map[string]string{{"message": qe.message, "domain": "global", "reason": qe.reason}},
		"status":  statusName(qe.code),
	}})
}

func statusName(code int) string {
	switch code {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 503:
		return "UNAVAILABLE"
	}
	return "INTERNAL"
}
