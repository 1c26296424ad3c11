package trigger

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// Run list bounds.
const (
	defaultRunsLimit = 50
	maxRunsLimit     = 500
)

type listResponse[T any] struct {
	Data []T `json:"data"`
}

// dateRange reads optional start_date and end_date query parameters.
func dateRange(r *http.Request) (from, to string, e *apiError) {
	q := r.URL.Query()
	from, to = q.Get("start_date"), q.Get("end_date")
	var start, end time.Time
	if from != "" {
		if start, e = parseDate("start_date", from); e != nil {
			return "", "", e
		}
	}
	if to != "" {
		if end, e = parseDate("end_date", to); e != nil {
			return "", "", e
		}
	}
	if from != "" && to != "" && end.Before(start) {
		return "", "", badField("end_date", "%s is before start_date %s", to, from)
	}
	return from, to, nil
}

// knownSource answers 404 for a source that is not the project's, so a key
// cannot probe another project's source names (they look the same: absent).
func (s *Service) knownSource(project, name string) *apiError {
	if name == "" || s.ingestion(project, name) != nil {
		return nil
	}
	return &apiError{Status: http.StatusNotFound, Error: "unknown source " + quote(name), Field: "source",
		Reason: "no source " + quote(name) + " in this project"}
}

func (s *Service) status(w http.ResponseWriter, r *http.Request) {
	project := projectFrom(r.Context())
	from, to, e := dateRange(r)
	if e != nil {
		writeError(w, e)
		return
	}
	q := r.URL.Query()
	typ, source := q.Get("type"), q.Get("source")
	if typ != "" {
		if e := parseType(typ); e != nil {
			writeError(w, e)
			return
		}
	}
	if e := s.knownSource(project, source); e != nil {
		writeError(w, e)
		return
	}
	days, err := s.store.Days(r.Context(), store.DayFilter{Project: project, Ingestion: source, Type: typ, From: from, To: to})
	if err != nil {
		s.internalError(w, r, http.StatusInternalServerError, "read day status", err)
		return
	}
	writeJSON(w, http.StatusOK, listResponse[statusDay]{Data: s.withSchedules(project, days)})
}

func (s *Service) runs(w http.ResponseWriter, r *http.Request) {
	project := projectFrom(r.Context())
	q := r.URL.Query()
	f := store.RunFilter{Project: project, Ingestion: q.Get("source"), Date: q.Get("ds"), Limit: defaultRunsLimit}
	if e := s.knownSource(project, f.Ingestion); e != nil {
		writeError(w, e)
		return
	}
	if f.Date != "" {
		if _, e := parseDate("ds", f.Date); e != nil {
			writeError(w, e)
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxRunsLimit {
			writeError(w, badField("limit", "want a whole number from 1 to %d", maxRunsLimit))
			return
		}
		f.Limit = n
	}
	runs, err := s.store.Runs(r.Context(), f)
	if err != nil {
		s.internalError(w, r, http.StatusInternalServerError, "read runs", err)
		return
	}
	if runs == nil {
		runs = []store.Run{}
	}
	writeJSON(w, http.StatusOK, listResponse[store.Run]{Data: runs})
}

func (s *Service) run(w http.ResponseWriter, r *http.Request) {
	project := projectFrom(r.Context())
	id := r.PathValue("id")
	run, err := s.store.Run(r.Context(), project, id)
	if errors.Is(err, store.ErrNotFound) {
		// Another project's run is as absent as one that never existed.
		writeError(w, &apiError{Status: http.StatusNotFound, Error: "unknown run", Field: "id", Reason: "no run " + quote(id) + " in this project"})
		return
	}
	if err != nil {
		s.internalError(w, r, http.StatusInternalServerError, "read run", err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Data store.Run `json:"data"`
	}{run})
}

func (s *Service) usage(w http.ResponseWriter, r *http.Request) {
	project := projectFrom(r.Context())
	from, to, e := dateRange(r)
	if e != nil {
		writeError(w, e)
		return
	}
	rows, err := s.store.Usage(r.Context(), project, from, to)
	if err != nil {
		s.internalError(w, r, http.StatusInternalServerError, "read usage", err)
		return
	}
	if rows == nil {
		rows = []store.UsageRow{}
	}
	writeJSON(w, http.StatusOK, listResponse[store.UsageRow]{Data: rows})
}

func (s *Service) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyProbeProject cannot be a project name (names start with a letter or
// digit), so the store's answer is empty and cheap.
const readyProbeProject = "-readyz"

// readyz answers 200 only when Redis and the store both answer.
func (s *Service) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.state.Ping(ctx); err != nil {
		s.log.Warn("not ready", "dependency", "redis", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "dependency": "redis"})
		return
	}
	if _, err := s.store.Runs(ctx, store.RunFilter{Project: readyProbeProject, Limit: 1}); err != nil {
		s.log.Warn("not ready", "dependency", "store", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "dependency": "store"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
