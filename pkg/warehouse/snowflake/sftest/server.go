// Package sftest is an in-process server that speaks the part of
// Snowflake's REST protocol that gosnowflake uses to log in, run a query
// and download its results, so the real driver can be tested offline.
//
// What it implements: POST /session/v1/login-request (password and
// SNOWFLAKE_JWT; the JWT's RS256 signature, sub and iss are checked),
// POST /session/token-request (session renewal), POST
// /queries/v1/query-request (gzip bodies, bound parameters), the
// getResultUrl ping-pong (code 333333), chunked results (first rowset
// inline, the rest at absolute chunk URLs, gzip), JSON and Arrow rowsets,
// POST /queries/v1/abort-request and POST /session?delete=true.
//
// It is a protocol fake, not a SQL engine. The queries it understands are
// exactly the ones Sluice's Snowflake source sends:
//
//	SELECT 1
//	SELECT <* | col, col, ...> FROM <table> [WHERE <col> = ?] [ORDER BY <col> [ASC|DESC]] [LIMIT n]
//	SELECT COUNT(*) FROM (<query above>)
//	SELECT COUNT(*), HASH_AGG(*) FROM (<query above>)
//	SELECT * FROM (<query above>) LIMIT n
//	ALTER SESSION ..., USE ...   (accepted, no effect)
//
// Keywords are case-insensitive, a trailing semicolon is ignored, and the
// WHERE comparison is textual against the bound value (DATE columns
// compare as YYYY-MM-DD). Anything else is answered with Snowflake's
// syntax error (001003); an unknown table with 002003. HASH_AGG is an
// order-independent 64-bit hash, not Snowflake's own function.
package sftest

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// Result formats the server can answer with.
const (
	FormatArrow = "arrow"
	FormatJSON  = "json"
)

// Snowflake error codes the server answers with.
const (
	CodeIncorrectPassword = "390100"
	CodeInvalidJWT        = "390144"
	CodeSessionExpired    = "390112"
	CodeSyntaxError       = "001003"
	CodeObjectNotFound    = "002003"
	codeQueryInProgress   = "333333"
)

// Account is the account name the server expects in logins and JWTs.
const Account = "SFTEST"

// Server is a Snowflake protocol fake on a local httptest listener.
type Server struct {
	URL  string // http://127.0.0.1:PORT
	Host string
	Port int

	srv *httptest.Server

	mu       sync.Mutex
	users    map[string]user // by upper-case login name
	tables   map[string]*Table
	sessions map[string]string // session token -> user
	masters  map[string]string // master token -> user
	results  map[string]*result

	chunkRows     int
	format        string
	asyncPolls    int
	expireSession int
	expireChunks  bool
	expireAfter   int           // chunk downloads until every issued URL expires; 0 = never
	cutChunks     int           // chunk downloads still to cut part-way
	hold          chan struct{} // non-nil: chunk downloads wait until it is closed

	stats Stats
	log   []Query
	seq   int
}

type user struct {
	password string
	key      *rsa.PublicKey
}

// Stats counts what the server was asked to do.
type Stats struct {
	Logins         int
	FailedLogins   int
	Renewals       int
	Queries        int // query-requests: queries run (fetching a kept result by id runs none)
	ResultPolls    int // GET /queries/{id}/result: async polls and fetches by query id
	ChunkDownloads int
	ExpiredChunks  int
	CutChunks      int // downloads answered with a body cut part-way
	HeldChunks     int // downloads that waited on HoldChunks
	AbandonedHeld  int // held downloads the client gave up on (its context was cancelled)
	StatusChecks   int // GET /monitoring/queries/{id}
	Closes         int
	Aborts         int
}

// Query is one query-request as the server received it.
type Query struct {
	SQL      string
	Bindings map[string]Binding
}

// Binding is one bound parameter of a query-request.
type Binding struct {
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// NewServer starts a server that tb closes. Results default to Arrow,
// 1000 rows per chunk.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		users:     map[string]user{},
		tables:    map[string]*Table{},
		sessions:  map[string]string{},
		masters:   map[string]string{},
		results:   map[string]*result{},
		chunkRows: 1000,
		format:    FormatArrow,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /session/v1/login-request", s.login)
	mux.HandleFunc("POST /session/token-request", s.renew)
	mux.HandleFunc("POST /session", s.closeSession)
	mux.HandleFunc("POST /queries/v1/query-request", s.query)
	mux.HandleFunc("POST /queries/v1/abort-request", s.abort)
	mux.HandleFunc("GET /queries/{id}/result", s.pollResult)
	mux.HandleFunc("GET /monitoring/queries/{id}", s.queryStatus)
	mux.HandleFunc("GET /chunks/{id}/{idx}", s.chunk)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "sftest: no handler for "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	})
	s.srv = httptest.NewServer(mux)
	tb.Cleanup(s.srv.Close)
	u, err := url.Parse(s.srv.URL)
	if err != nil {
		tb.Fatalf("parse server url: %v", err)
	}
	s.URL = s.srv.URL
	s.Host = u.Hostname()
	s.Port, err = strconv.Atoi(u.Port())
	if err != nil {
		tb.Fatalf("parse server port: %v", err)
	}
	return s
}

// AddUser registers a password user.
func (s *Server) AddUser(name, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[strings.ToUpper(name)]
	u.password = password
	s.users[strings.ToUpper(name)] = u
}

// AddKeyPairUser registers a user who logs in with a JWT signed by the
// private half of key.
func (s *Server) AddKeyPairUser(name string, key *rsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[strings.ToUpper(name)]
	u.key = key
	s.users[strings.ToUpper(name)] = u
}

// SetChunkRows sets how many rows go inline and into each chunk.
func (s *Server) SetChunkRows(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chunkRows = max(n, 1)
}

// SetFormat makes later results JSON or Arrow rowsets.
func (s *Server) SetFormat(format string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.format = format
}

// SetAsyncPolls makes later queries answer "in progress" (333333) and
// need n GETs of their getResultUrl before the result comes.
func (s *Server) SetAsyncPolls(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asyncPolls = n
}

// ExpireSessionOnce makes the next authenticated request answer 390112
// (session expired), so the driver renews its session and retries.
func (s *Server) ExpireSessionOnce() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireSession++
}

// ExpireChunks makes chunk downloads answer 403, as an expired presigned
// chunk URL does.
func (s *Server) ExpireChunks(expired bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireChunks = expired
}

// ExpireChunkURLs expires every chunk URL issued so far (their downloads
// answer 403, as an expired presigned URL does); URLs of a later fetch of
// the result by query id are valid.
func (s *Server) ExpireChunkURLs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireURLs()
}

// ExpireChunkURLsAfter expires every chunk URL issued so far once n more
// chunks were downloaded: a long extraction outliving its URLs, mid-day.
func (s *Server) ExpireChunkURLsAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireAfter = n
}

// expireURLs makes every URL issued so far invalid. Callers hold s.mu.
func (s *Server) expireURLs() {
	for _, res := range s.results {
		res.validGen = res.gen + 1
	}
}

// CutChunkDownloads makes the next n chunk downloads send part of their
// body and then drop the connection.
func (s *Server) CutChunkDownloads(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cutChunks = n
}

// HoldChunks makes chunk downloads wait until release is called (or the
// client gives up): a slow extraction the test controls.
func (s *Server) HoldChunks() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hold := make(chan struct{})
	s.hold = hold
	var once sync.Once
	return func() {
		once.Do(func() {
			close(hold)
			s.mu.Lock()
			if s.hold == hold {
				s.hold = nil
			}
			s.mu.Unlock()
		})
	}
}

// ForgetResults drops every kept result, as Snowflake does 24 h after a
// query: fetching one by query id answers 000612.
func (s *Server) ForgetResults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, res := range s.results {
		res.forgotten = true
	}
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Queries returns the query-requests received so far.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.log...)
}

func (s *Server) nextID() string {
	s.seq++
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%04d-%s", s.seq, hex.EncodeToString(b))
}

func readBody(r *http.Request) ([]byte, error) {
	body := io.Reader(r.Body)
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	// gosnowflake gzips query bodies; accept them with or without the header.
	if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(strings.NewReader(string(data)))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		return io.ReadAll(zr)
	}
	return data, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// failure is Snowflake's envelope for an error answered with HTTP 200.
func failure(code, message, sqlState string) map[string]any {
	return map[string]any{
		"success": false,
		"code":    code,
		"message": message,
		"data":    map[string]any{"sqlState": sqlState, "errorCode": code},
	}
}

type loginRequest struct {
	Data struct {
		AccountName   string `json:"ACCOUNT_NAME"`
		LoginName     string `json:"LOGIN_NAME"`
		Password      string `json:"PASSWORD"`
		Authenticator string `json:"AUTHENTICATOR"`
		Token         string `json:"TOKEN"`
	} `json:"data"`
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	data, err := readBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req loginRequest
	if err := json.Unmarshal(data, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := strings.ToUpper(req.Data.LoginName)
	if name == "" && req.Data.Token != "" {
		// Key-pair logins name the user in the JWT's sub: ACCOUNT.USER.
		claims := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(req.Data.Token, claims); err == nil {
			sub, _ := claims["sub"].(string)
			_, name, _ = strings.Cut(sub, ".")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[name]
	var code, msg string
	switch {
	case strings.EqualFold(req.Data.Authenticator, "SNOWFLAKE_JWT"):
		if !ok || u.key == nil {
			code, msg = CodeInvalidJWT, "JWT token is invalid."
		} else if err := verifyJWT(req.Data.Token, name, u.key); err != nil {
			code, msg = CodeInvalidJWT, "JWT token is invalid. "+err.Error()
		}
	default:
		if !ok || u.password == "" || u.password != req.Data.Password {
			code, msg = CodeIncorrectPassword, "Incorrect username or password was specified."
		}
	}
	if code != "" {
		s.stats.FailedLogins++
		writeJSON(w, failure(code, msg, "08001"))
		return
	}
	s.stats.Logins++
	token, master := "st-"+s.nextID(), "mt-"+s.nextID()
	s.sessions[token] = name
	s.masters[master] = name
	writeJSON(w, map[string]any{
		"success": true,
		"code":    nil,
		"message": nil,
		"data": map[string]any{
			"token":                   token,
			"masterToken":             master,
			"validityInSeconds":       3600,
			"masterValidityInSeconds": 14400,
			"sessionId":               s.seq,
			"serverVersion":           "sftest",
			"parameters":              []map[string]any{{"name": "TIMEZONE", "value": "UTC"}},
			"sessionInfo":             map[string]any{"databaseName": "DB", "schemaName": "PUBLIC", "warehouseName": "WH", "roleName": "ROLE"},
		},
	})
}

// verifyJWT checks what Snowflake checks for key-pair login: an RS256
// signature by the user's key, sub ACCOUNT.USER and iss
// ACCOUNT.USER.SHA256:<fingerprint of the public key>.
func verifyJWT(token, name string, key *rsa.PublicKey) error {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{"RS256"}))
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(der)
	wantSub := Account + "." + name
	wantIss := wantSub + ".SHA256:" + base64.StdEncoding.EncodeToString(sum[:])
	if sub, _ := claims["sub"].(string); sub != wantSub {
		return fmt.Errorf("sub %q, want %q", sub, wantSub)
	}
	if iss, _ := claims["iss"].(string); iss != wantIss {
		return fmt.Errorf("iss %q, want %q", iss, wantIss)
	}
	return nil
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request) {
	master := tokenOf(r)
	data, err := readBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req struct {
		OldSessionToken string `json:"oldSessionToken"`
	}
	_ = json.Unmarshal(data, &req)
	s.mu.Lock()
	defer s.mu.Unlock()
	name, ok := s.masters[master]
	if !ok {
		writeJSON(w, failure("390114", "Authentication token has expired.  The user must authenticate again.", "08001"))
		return
	}
	s.stats.Renewals++
	delete(s.sessions, req.OldSessionToken)
	token := "st-" + s.nextID()
	s.sessions[token] = name
	writeJSON(w, map[string]any{
		"success": true,
		"data": map[string]any{
			"sessionToken": token, "validityInSecondsST": 3600,
			"masterToken": master, "validityInSecondsMT": 14400, "sessionId": s.seq,
		},
	})
}

func tokenOf(r *http.Request) string {
	h := r.Header.Get("Authorization")
	h = strings.TrimPrefix(h, "Snowflake Token=")
	return strings.Trim(h, `"`)
}

// authorize checks the session token; it answers the response itself and
// returns false when the request must stop. Callers hold s.mu.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) bool {
	token := tokenOf(r)
	if _, ok := s.sessions[token]; !ok {
		writeJSON(w, failure(CodeSessionExpired, "Session no longer exists.  New login required to access the service.", "08001"))
		return false
	}
	if s.expireSession > 0 {
		s.expireSession--
		delete(s.sessions, token)
		writeJSON(w, failure(CodeSessionExpired, "Session token expired.", "08001"))
		return false
	}
	return true
}

func (s *Server) closeSession(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Closes++
	delete(s.sessions, tokenOf(r))
	writeJSON(w, map[string]any{"success": true, "code": nil, "message": nil, "data": nil})
}

func (s *Server) abort(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Aborts++
	writeJSON(w, map[string]any{"success": true, "data": nil})
}

type queryRequest struct {
	SQLText  string             `json:"sqlText"`
	Bindings map[string]Binding `json:"bindings"`
}

// result is an answered query kept for its chunk downloads and polls.
type result struct {
	id      string
	columns []column
	rows    [][]any
	format  string
	per     int
	polls   int
	// Each answer with chunk URLs is a generation; URLs of a generation
	// below validGen have expired.
	gen       int
	validGen  int
	forgotten bool
}

// answer encodes the result with a fresh generation of chunk URLs.
// Callers hold s.mu.
func (s *Server) answer(res *result) (map[string]any, error) {
	res.gen++
	return res.encode(s.URL, res.gen)
}

func (s *Server) query(w http.ResponseWriter, r *http.Request) {
	data, err := readBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req queryRequest
	if err := json.Unmarshal(data, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.authorize(w, r) {
		return
	}
	s.stats.Queries++
	s.log = append(s.log, Query{SQL: req.SQLText, Bindings: req.Bindings})
	cols, rows, qerr := s.run(req.SQLText, req.Bindings)
	if qerr != nil {
		writeJSON(w, failure(qerr.code, qerr.message, qerr.sqlState))
		return
	}
	res := &result{id: s.nextID(), columns: cols, rows: rows, format: s.format, per: s.chunkRows, polls: s.asyncPolls}
	s.results[res.id] = res
	if res.polls > 0 {
		writeJSON(w, map[string]any{
			"success": true, "code": codeQueryInProgress, "message": "query in progress",
			"data": map[string]any{"queryId": res.id, "getResultUrl": "/queries/" + res.id + "/result"},
		})
		return
	}
	s.writeResult(w, res)
}

func (s *Server) writeResult(w http.ResponseWriter, res *result) {
	resp, err := s.answer(res)
	if err != nil {
		writeJSON(w, failure("000603", "sftest: encode result: "+err.Error(), "XX000"))
		return
	}
	writeJSON(w, resp)
}

// codeResultExpired is what Snowflake answers for a result past its
// retention.
const codeResultExpired = "000612"

// queryStatus answers GET /monitoring/queries/{id}, which gosnowflake asks
// before fetching a result by query id. Query history outlives results,
// so a forgotten result's query still shows SUCCESS.
func (s *Server) queryStatus(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.authorize(w, r) {
		return
	}
	s.stats.StatusChecks++
	res, ok := s.results[r.PathValue("id")]
	if !ok {
		writeJSON(w, map[string]any{"success": true, "data": map[string]any{"queries": []any{}}})
		return
	}
	status := "SUCCESS"
	if res.polls > 0 {
		status = "RUNNING"
	}
	writeJSON(w, map[string]any{"success": true, "data": map[string]any{"queries": []map[string]any{{
		"id": res.id, "status": status, "errorCode": "", "errorMessage": "",
		"stats": map[string]any{"producedRows": len(res.rows)},
	}}}})
}

func (s *Server) pollResult(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.authorize(w, r) {
		return
	}
	s.stats.ResultPolls++
	res, ok := s.results[r.PathValue("id")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if res.forgotten {
		writeJSON(w, failure(codeResultExpired, "Result for query "+res.id+" has expired", "P0000"))
		return
	}
	if res.polls--; res.polls > 0 {
		writeJSON(w, map[string]any{
			"success": true, "code": codeQueryInProgress, "message": "query in progress",
			"data": map[string]any{"queryId": res.id, "getResultUrl": "/queries/" + res.id + "/result"},
		})
		return
	}
	s.writeResult(w, res)
}

func (s *Server) chunk(w http.ResponseWriter, r *http.Request) {
	gen, _ := strconv.Atoi(r.URL.Query().Get("gen"))
	s.mu.Lock()
	res, ok := s.results[r.PathValue("id")]
	expired := s.expireChunks || (ok && (gen < res.validGen || res.forgotten))
	hold := s.hold
	if hold != nil && !expired {
		s.stats.HeldChunks++
	}
	s.mu.Unlock()
	if hold != nil && !expired {
		select {
		case <-hold:
		case <-r.Context().Done():
			s.mu.Lock()
			s.stats.AbandonedHeld++
			s.mu.Unlock()
			return
		}
	}
	s.mu.Lock()
	cut := false
	switch {
	case expired:
		s.stats.ExpiredChunks++
	case s.cutChunks > 0:
		s.cutChunks--
		s.stats.CutChunks++
		cut = true
	default:
		s.stats.ChunkDownloads++
		if s.expireAfter > 0 {
			if s.expireAfter--; s.expireAfter == 0 {
				s.expireURLs()
			}
		}
	}
	s.mu.Unlock()
	if expired {
		// What S3 answers for a presigned URL past its expiry.
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
		return
	}
	idx, err := strconv.Atoi(r.PathValue("idx"))
	if !ok || err != nil || idx < 0 || (idx+1)*res.per >= len(res.rows)+res.per {
		http.NotFound(w, r)
		return
	}
	lo := (idx + 1) * res.per
	hi := min(lo+res.per, len(res.rows))
	body, err := res.chunkBody(res.rows[lo:hi])
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	_, _ = zw.Write(body)
	_ = zw.Close()
	w.Header().Set("Content-Encoding", "gzip")
	w.Header().Set("Content-Length", strconv.Itoa(zbuf.Len()))
	if cut {
		// Half the body, then the handler returns short of Content-Length:
		// the server closes the connection and the client reads an
		// unexpected EOF, as when a download dies part-way.
		_, _ = w.Write(zbuf.Bytes()[:zbuf.Len()/2])
		return
	}
	_, _ = w.Write(zbuf.Bytes())
}
