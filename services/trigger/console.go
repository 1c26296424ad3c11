package trigger

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/mapping"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
)

// The console is a few server-rendered pages under /console: log in with a
// project key, see a grid of days per ingestion, open a day, start a
// backfill or a reload. No build step: templates and CSS are embedded.
//
//go:embed console
var consoleFiles embed.FS

const (
	sessionCookie     = "sluice_session"
	defaultSessionTTL = 12 * time.Hour
	defaultGridDays   = 30
	maxGridDays       = 92
	maxConsoleRuns    = 50
)

// consoleSecurityHeaders keep the pages from being framed, cached or made
// to run anything but their own stylesheet.
var consoleSecurityHeaders = [][2]string{
	{"Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"},
	{"X-Frame-Options", "DENY"},
	{"Referrer-Policy", "same-origin"},
	{"Cache-Control", "no-store"},
}

// console holds the parsed pages and the session signing key.
type console struct {
	pages  map[string]*template.Template
	static http.Handler
	secret []byte
	ttl    time.Duration
	secure bool
}

func newConsole(cfg Config) (*console, error) {
	c := &console{pages: map[string]*template.Template{}, ttl: cfg.ConsoleSessionTTL, secure: cfg.ConsoleSecureCookies}
	if c.ttl <= 0 {
		c.ttl = defaultSessionTTL
	}
	c.secret = cfg.ConsoleSessionKey
	if len(c.secret) == 0 {
		// Sessions then last as long as the process; replicas behind one
		// address need a shared ConsoleSessionKey.
		c.secret = make([]byte, 32)
		if _, err := rand.Read(c.secret); err != nil {
			return nil, fmt.Errorf("make console session key: %w", err)
		}
	}
	funcs := template.FuncMap{"ts": formatTime, "total": sumCounts}
	for _, page := range []string{"login", "grid", "day", "result", "validate"} {
		t, err := template.New(page).Funcs(funcs).ParseFS(consoleFiles, "console/layout.html", "console/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("parse console page %s: %w", page, err)
		}
		c.pages[page] = t
	}
	static, err := fs.Sub(consoleFiles, "console/static")
	if err != nil {
		return nil, fmt.Errorf("console static files: %w", err)
	}
	c.static = http.StripPrefix("/console/static/", http.FileServerFS(static))
	return c, nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// consoleRoutes adds the console's pages to mux.
func (s *Service) consoleRoutes(handle func(pattern string, h http.HandlerFunc)) {
	handle("GET /console", s.consoleHome)
	handle("GET /console/{$}", s.consoleHome)
	handle("POST /console/login", s.consoleLogin)
	handle("POST /console/logout", s.withSession(true, s.consoleLogout))
	handle("GET /console/ingestions/{name}/days/{date}", s.withSession(false, s.consoleDay))
	handle("POST /console/backfill", s.withSession(true, s.consoleBackfill))
	handle("POST /console/ingestions/{name}/days/{date}/reload", s.withSession(true, s.consoleReload))
	handle("POST /console/ingestions/{name}/days/{date}/validate", s.withSession(true, s.consoleValidate))
	handle("GET /console/static/", s.console.static.ServeHTTP)
}

// session is a logged-in browser: its project and the CSRF token its forms
// carry.
type session struct {
	Project string
	CSRF    string
}

// The cookie is project.id.expiry.mac, each part base64url; the MAC covers
// the first three, so neither the project nor the expiry can be edited.
// The key itself is never stored.
func (c *console) issue(project string, now time.Time) (value string, err error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return "", fmt.Errorf("make session id: %w", err)
	}
	enc := base64.RawURLEncoding
	payload := enc.EncodeToString([]byte(project)) + "." + hex.EncodeToString(id) + "." + strconv.FormatInt(now.Add(c.ttl).Unix(), 10)
	return payload + "." + enc.EncodeToString(c.mac("session", payload)), nil
}

func (c *console) mac(purpose, msg string) []byte {
	h := hmac.New(sha256.New, c.secret)
	h.Write([]byte(purpose))
	h.Write([]byte{0})
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// open checks a cookie value and returns its session.
func (c *console) open(value string, now time.Time) (session, bool) {
	payload, sig, ok := cutLast(value, ".")
	if !ok {
		return session{}, false
	}
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(mac, c.mac("session", payload)) {
		return session{}, false
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 3 {
		return session{}, false
	}
	project, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return session{}, false
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || now.Unix() >= exp {
		return session{}, false
	}
	return session{Project: string(project), CSRF: hex.EncodeToString(c.mac("csrf", parts[1]))}, true
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

func (c *console) cookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: sessionCookie, Value: value, Path: "/console", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.secure || r.TLS != nil,
	}
}

// sessionFrom returns the request's session when its cookie is valid and
// its project still exists.
func (s *Service) sessionFrom(r *http.Request) (session, bool) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	sess, ok := s.console.open(ck.Value, s.now())
	if !ok || !slices.ContainsFunc(s.file.Projects, func(p config.Project) bool { return p.Name == sess.Project }) {
		return session{}, false
	}
	return sess, true
}

type sessionKey struct{}

// withSession sends a browser without a session to the login page; on
// POST it also checks the form's CSRF token and the Origin.
func (s *Service) withSession(post bool, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		setConsoleHeaders(w)
		sess, ok := s.sessionFrom(r)
		if !ok {
			if !post {
				http.Redirect(w, r, "/console", http.StatusSeeOther)
				return
			}
			s.render(w, r, http.StatusUnauthorized, "login", loginView{Error: "Your session has ended. Log in again."})
			return
		}
		infoFrom(r.Context()).project = sess.Project
		if post {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
			if err := r.ParseForm(); err != nil {
				s.renderResult(w, r, sess, http.StatusBadRequest, resultView{Title: "Bad request", Error: "The form could not be read."})
				return
			}
			if !sameOrigin(r) || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(sess.CSRF)) != 1 {
				s.renderResult(w, r, sess, http.StatusForbidden, resultView{Title: "Forbidden",
					Error: "The form's security token did not match: reload the page and try again."})
				return
			}
		}
		next(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
	}
}

// sameOrigin refuses a cross-site POST when the browser says where it came
// from; browsers that send no Origin are covered by the CSRF token.
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || origin == "null" {
		return origin == ""
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host
}

func setConsoleHeaders(w http.ResponseWriter) {
	for _, h := range consoleSecurityHeaders {
		w.Header().Set(h[0], h[1])
	}
}

func sessionOf(r *http.Request) session {
	sess, _ := r.Context().Value(sessionKey{}).(session)
	return sess
}

// render executes a page into a buffer first, so a template error is a
// clean 500 rather than half a page.
func (s *Service) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	var buf bytes.Buffer
	if err := s.console.pages[page].ExecuteTemplate(&buf, "layout", data); err != nil {
		s.log.Error("render console page", "page", page, "route", infoFrom(r.Context()).route, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	setConsoleHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type loginView struct {
	Session *session
	Error   string
}

func (s *Service) consoleHome(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.sessionFrom(r)
	if !ok {
		s.render(w, r, http.StatusOK, "login", loginView{})
		return
	}
	infoFrom(r.Context()).project = sess.Project
	s.consoleGrid(w, r, sess)
}

func (s *Service) consoleLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		s.render(w, r, http.StatusBadRequest, "login", loginView{Error: "The form could not be read."})
		return
	}
	project, ok := s.keys.Resolve(strings.TrimSpace(r.PostFormValue("key")))
	if !ok {
		s.render(w, r, http.StatusUnauthorized, "login", loginView{Error: "That API key is not valid."})
		return
	}
	value, err := s.console.issue(project, s.now())
	if err != nil {
		s.log.Error("issue console session", "project", project, "err", err)
		s.render(w, r, http.StatusInternalServerError, "login", loginView{Error: "Could not start a session; try again."})
		return
	}
	infoFrom(r.Context()).project = project
	http.SetCookie(w, s.console.cookie(r, value, int(s.console.ttl/time.Second)))
	http.Redirect(w, r, "/console", http.StatusSeeOther)
}

func (s *Service) consoleLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, s.console.cookie(r, "", -1))
	http.Redirect(w, r, "/console", http.StatusSeeOther)
}

// Day classes of the grid, from the day's status.
type dayClass struct{ Class, Label string }

var (
	classLoaded    = dayClass{"loaded", "loaded"}
	classEmpty     = dayClass{"loaded-empty", "loaded, no data"}
	classFailed    = dayClass{"failed", "failed"}
	classRunning   = dayClass{"running", "scheduled or running"}
	classNoData    = dayClass{"no-data", "no data yet"}
	classNotLoaded = dayClass{"not-loaded", "not loaded"}
	classOther     = dayClass{"other", "other"}
	legend         = []dayClass{classLoaded, classEmpty, classFailed, classRunning, classNoData, classNotLoaded}
)

func classOf(status vocab.Status) dayClass {
	switch status {
	case vocab.StatusSuccessful:
		return classLoaded
	case vocab.StatusLoadedEmpty:
		return classEmpty
	case vocab.StatusFailed:
		return classFailed
	case vocab.StatusScheduled, vocab.StatusStarted, vocab.StatusDownloaded:
		return classRunning
	case vocab.StatusNoDataYet:
		return classNoData
	case "":
		return classNotLoaded
	}
	return dayClass{classOther.Class, string(status)}
}

type gridCell struct {
	Date         string
	Class, Label string
	Rows         int64
}

type gridRow struct {
	Name, Type, Schedule string
	Cells                []gridCell
}

type gridView struct {
	Session          *session
	From, To, Today  string
	PrevEnd, NextEnd string
	NumDays          int
	Dates            []string
	Rows             []gridRow
	Legend           []dayClass
}

// consoleGrid shows the project's ingestions against the days ending at
// ?end= (default yesterday), ?days= of them (default 30).
func (s *Service) consoleGrid(w http.ResponseWriter, r *http.Request, sess session) {
	today := s.today()
	end := today.AddDate(0, 0, -1)
	q := r.URL.Query()
	if v := q.Get("end"); v != "" {
		d, e := parseDate("end", v)
		if e != nil {
			s.renderResult(w, r, sess, http.StatusBadRequest, resultView{Title: "Bad request", Error: e.Reason})
			return
		}
		end = d
	}
	n := s.cfg.ConsoleDays
	if v := q.Get("days"); v != "" {
		d, err := strconv.Atoi(v)
		if err != nil || d < 1 || d > maxGridDays {
			s.renderResult(w, r, sess, http.StatusBadRequest, resultView{Title: "Bad request", Error: fmt.Sprintf("days: want a whole number from 1 to %d", maxGridDays)})
			return
		}
		n = d
	}
	start := end.AddDate(0, 0, -(n - 1))
	v := gridView{Session: &sess, From: start.Format(time.DateOnly), To: end.Format(time.DateOnly), Today: today.Format(time.DateOnly),
		PrevEnd: start.AddDate(0, 0, -1).Format(time.DateOnly), NumDays: n, Legend: legend}
	if end.Before(today) {
		next := end.AddDate(0, 0, n)
		if next.After(today) {
			next = today
		}
		v.NextEnd = next.Format(time.DateOnly)
	}
	for d := start; !d.After(end); d = d.AddDate(0, 0, 1) {
		v.Dates = append(v.Dates, d.Format(time.DateOnly))
	}
	days, err := s.store.Days(r.Context(), store.DayFilter{Project: sess.Project, From: v.From, To: v.To})
	if err != nil {
		s.log.Error("read day status", "route", infoFrom(r.Context()).route, "project", sess.Project, "err", err)
		s.renderResult(w, r, sess, http.StatusInternalServerError, resultView{Title: "Unavailable", Error: "The store did not answer; retry later."})
		return
	}
	byDay := make(map[[2]string]store.Day, len(days))
	for _, d := range days {
		byDay[[2]string{d.Ingestion, d.Date}] = d
	}
	for _, in := range s.file.Ingestions {
		if in.Project != sess.Project {
			continue
		}
		row := gridRow{Name: in.Name, Type: in.Type, Schedule: scheduleLabel(in.Schedule), Cells: make([]gridCell, len(v.Dates))}
		for i, date := range v.Dates {
			d := byDay[[2]string{in.Name, date}]
			c := classOf(d.Status)
			row.Cells[i] = gridCell{Date: date, Class: c.Class, Label: c.Label, Rows: d.RowsLoaded}
		}
		v.Rows = append(v.Rows, row)
	}
	s.render(w, r, http.StatusOK, "grid", v)
}

func scheduleLabel(sc config.Schedule) string {
	if sc.Mode == config.ScheduleAPITriggered {
		return "api triggered"
	}
	if sc.Hour != nil {
		return fmt.Sprintf("daily at %02d:00 %s", *sc.Hour, sc.Timezone)
	}
	return "daily"
}

type reasonCount struct {
	Reason string
	Count  int64
}

type dayView struct {
	Session                 *session
	Ingestion, Type, Date   string
	GridEnd                 string
	Class, Label            string
	Day                     *store.Day
	Extracted, Loaded       int64
	RejectedTotal           int64
	Rejected                []reasonCount
	WarehouseNow            *int64
	WarehouseAt, LastLoaded string
	Runs                    []store.Run
	CanValidate             bool
}

func (s *Service) consoleDay(w http.ResponseWriter, r *http.Request) {
	sess := sessionOf(r)
	in, date, ok := s.consoleTarget(w, r, sess)
	if !ok {
		return
	}
	days, err := s.store.Days(r.Context(), store.DayFilter{Project: sess.Project, Ingestion: in.Name, From: date, To: date})
	if err == nil {
		var runs []store.Run
		runs, err = s.store.Runs(r.Context(), store.RunFilter{Project: sess.Project, Ingestion: in.Name, Date: date, Limit: maxConsoleRuns})
		v := dayView{Session: &sess, Ingestion: in.Name, Type: in.Type, Date: date, Runs: runs, CanValidate: s.validator != nil}
		v.GridEnd = s.gridEndFor(date)
		if len(days) > 0 {
			d := days[0]
			v.Day = &d
			v.Extracted, v.Loaded, v.RejectedTotal = d.Extracted, d.RowsLoaded, sumCounts(d.Rejected)
			for reason, n := range d.Rejected {
				v.Rejected = append(v.Rejected, reasonCount{reason, n})
			}
			slices.SortFunc(v.Rejected, func(a, b reasonCount) int {
				if a.Count != b.Count {
					return int(b.Count - a.Count)
				}
				return strings.Compare(a.Reason, b.Reason)
			})
			v.WarehouseNow = d.WarehouseCount
			if d.WarehouseAt != nil {
				v.WarehouseAt = formatTime(*d.WarehouseAt)
			}
			if d.LastLoadedAt != nil {
				v.LastLoaded = formatTime(*d.LastLoadedAt)
			}
		}
		var status vocab.Status
		if v.Day != nil {
			status = v.Day.Status
		}
		c := classOf(status)
		v.Class, v.Label = c.Class, c.Label
		if err == nil {
			s.render(w, r, http.StatusOK, "day", v)
			return
		}
	}
	s.log.Error("read day", "route", infoFrom(r.Context()).route, "project", sess.Project, "ingestion", in.Name, "day", date, "err", err)
	s.renderResult(w, r, sess, http.StatusInternalServerError, resultView{Title: "Unavailable", Error: "The store did not answer; retry later."})
}

// gridEndFor is the grid's end that shows date: the default unless date is
// older than the default grid.
func (s *Service) gridEndFor(date string) string {
	def := s.today().AddDate(0, 0, -1)
	d, err := time.Parse(time.DateOnly, date)
	if err != nil || !d.Before(def.AddDate(0, 0, -(s.cfg.ConsoleDays-1))) {
		return def.Format(time.DateOnly)
	}
	return d.Format(time.DateOnly)
}

// consoleTarget resolves {name} and {date}: another project's ingestion is
// as absent as one that does not exist.
func (s *Service) consoleTarget(w http.ResponseWriter, r *http.Request, sess session) (*config.Ingestion, string, bool) {
	in := s.ingestion(sess.Project, r.PathValue("name"))
	if in == nil {
		s.renderResult(w, r, sess, http.StatusNotFound, resultView{Title: "Not found", Error: "No ingestion " + quote(r.PathValue("name")) + " in this project."})
		return nil, "", false
	}
	date := r.PathValue("date")
	d, e := parseDate("ds", date)
	if e == nil && d.After(s.today()) {
		e = badField("ds", "%s is in the future", date)
	}
	if e != nil {
		s.renderResult(w, r, sess, http.StatusBadRequest, resultView{Title: "Bad request", Error: e.Reason})
		return nil, "", false
	}
	return in, date, true
}

type resultView struct {
	Session *session
	Title   string
	Message string
	Error   string
	Runs    []startedRun
}

func (s *Service) renderResult(w http.ResponseWriter, r *http.Request, sess session, status int, v resultView) {
	v.Session = &sess
	s.render(w, r, status, "result", v)
}

// consoleBackfill runs the form through the API's own decoding and
// dispatch, so the console and POST /v1/ingestions/backfill cannot differ.
func (s *Service) consoleBackfill(w http.ResponseWriter, r *http.Request) {
	sess := sessionOf(r)
	name := r.PostFormValue("source")
	in := s.ingestion(sess.Project, name)
	if in == nil {
		s.renderResult(w, r, sess, http.StatusNotFound, resultView{Title: "Backfill not started", Error: "No ingestion " + quote(name) + " in this project."})
		return
	}
	body, err := json.Marshal(map[string]string{
		"datestamp_start": r.PostFormValue("start"), "datestamp_end": r.PostFormValue("end"),
		"type": in.Type, "source": in.Name,
	})
	if err != nil {
		s.renderResult(w, r, sess, http.StatusBadRequest, resultView{Title: "Backfill not started", Error: "The form could not be read."})
		return
	}
	req, e := decodeBackfill(body, s.today(), s.cfg.MaxBackfillDays)
	if e != nil {
		s.renderResult(w, r, sess, e.Status, resultView{Title: "Backfill not started", Error: strings.TrimPrefix(e.Field+": ", ": ") + e.Reason})
		return
	}
	s.startFromConsole(w, r, sess, in.Name, req.Dates, vocab.TriggerBackfill, "backfill",
		fmt.Sprintf("Backfill of %s from %s to %s started: %d runs.", in.Name, req.Dates[0], req.Dates[len(req.Dates)-1], len(req.Dates)))
}

func (s *Service) consoleReload(w http.ResponseWriter, r *http.Request) {
	sess := sessionOf(r)
	in, date, ok := s.consoleTarget(w, r, sess)
	if !ok {
		return
	}
	s.startFromConsole(w, r, sess, in.Name, []string{date}, vocab.TriggerReload, "console reload",
		fmt.Sprintf("Reload of %s on %s started.", in.Name, date))
}

func (s *Service) startFromConsole(w http.ResponseWriter, r *http.Request, sess session, ingestion string, dates []string, trigger vocab.Trigger, reason, message string) {
	runs, err := s.start(r.Context(), sess.Project, []string{ingestion}, dates, trigger, reason)
	if err != nil {
		s.log.Error("start runs from the console", "project", sess.Project, "ingestion", ingestion, "trigger", trigger, "err", err)
		s.renderResult(w, r, sess, http.StatusServiceUnavailable, resultView{Title: "Runs not started", Runs: runs,
			Message: fmt.Sprintf("%d of %d runs started.", len(runs), len(dates)),
			Error:   "Starting the runs did not succeed; retry later."})
		return
	}
	s.log.Info("runs started from the console", "project", sess.Project, "ingestion", ingestion, "trigger", trigger, "runs", len(runs))
	s.renderResult(w, r, sess, http.StatusOK, resultView{Title: "Runs started", Message: message, Runs: runs})
}

type validateView struct {
	Session         *session
	Ingestion, Date string
	Report          *mapping.Report
	Error           string
}

// consoleValidate samples the day through the same Validator as
// POST /v1/ingestions/{name}/validate and shows the report.
func (s *Service) consoleValidate(w http.ResponseWriter, r *http.Request) {
	sess := sessionOf(r)
	in, date, ok := s.consoleTarget(w, r, sess)
	if !ok {
		return
	}
	v := validateView{Session: &sess, Ingestion: in.Name, Date: date}
	if s.validator == nil {
		v.Error = "Sample validation is not configured on this server; use sluice validate."
		s.render(w, r, http.StatusNotImplemented, "validate", v)
		return
	}
	day, err := civil.ParseDate(date)
	if err != nil {
		v.Error = "day: want YYYY-MM-DD"
		s.render(w, r, http.StatusBadRequest, "validate", v)
		return
	}
	rep, err := s.validator.Validate(r.Context(), sess.Project, in.Name, day, 0)
	if err != nil {
		cat, _ := warehouse.Categorize(err)
		s.log.Warn("console validation did not reach a report", "project", sess.Project, "ingestion", in.Name, "day", date, "category", cat, "err", err)
		v.Error = "The warehouse could not sample the query (" + string(cat) + "): " + err.Error()
		s.render(w, r, http.StatusBadGateway, "validate", v)
		return
	}
	v.Report = &rep
	status := http.StatusOK
	if !rep.OK {
		status = http.StatusUnprocessableEntity
	}
	s.render(w, r, status, "validate", v)
}
