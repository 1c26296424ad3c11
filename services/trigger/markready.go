package trigger

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// startedRun is one run a call started.
type startedRun struct {
	Source string `json:"source"`
	Date   string `json:"ds"`
	RunID  string `json:"runID"`
}

type markResponse struct {
	Message string `json:"message"`
	Data    struct {
		RunIDs []string     `json:"runIDs"`
		Runs   []startedRun `json:"runs"`
	} `json:"data"`
}

type backfillResponse struct {
	Message string `json:"message"`
	Data    struct {
		RunID  string       `json:"runID"`
		RunIDs []string     `json:"runIDs"`
		Runs   []startedRun `json:"runs"`
	} `json:"data"`
}

func (s *Service) today() time.Time {
	y, m, d := s.now().UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// markDataReady loads the named days of the project's api-triggered
// ingestions of one type. Validation comes before the rate limit, so a bad
// call never uses up the window.
func (s *Service) markDataReady(w http.ResponseWriter, r *http.Request) {
	project := projectFrom(r.Context())
	body, e := s.readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	req, e := decodeMarkDataReady(body, s.today(), s.cfg.MaxDates)
	if e != nil {
		writeError(w, e)
		return
	}
	ingestions, e := s.apiTriggered(project, req.Type, req.Sources)
	if e != nil {
		writeError(w, e)
		return
	}

	ok, wait, err := s.state.AllowTrigger(r.Context(), project, req.Type, s.cfg.RateLimitWindow)
	if err != nil {
		s.internalError(w, r, http.StatusServiceUnavailable, "check the rate limit", err)
		return
	}
	if !ok {
		secs := retrySeconds(wait)
		writeError(w, &apiError{
			Status:     http.StatusTooManyRequests,
			Error:      "rate limited",
			Reason:     fmt.Sprintf("one accepted call per project and type every %s; retry in %d seconds", s.cfg.RateLimitWindow, secs),
			RetryAfter: secs,
		})
		return
	}

	runs, err := s.start(r.Context(), project, ingestions, req.Dates, vocab.TriggerAPI, "mark_data_ready_dwh")
	if err != nil {
		if len(runs) == 0 {
			// Nothing started: give the window back so the caller may retry.
			if rerr := s.state.ResetTrigger(context.WithoutCancel(r.Context()), project, req.Type); rerr != nil {
				s.log.Error("give back the rate limit window", "project", project, "type", req.Type, "err", rerr)
			}
		}
		s.internalError(w, r, http.StatusServiceUnavailable, fmt.Sprintf("start runs (%d of %d started)", len(runs), len(ingestions)*len(req.Dates)), err)
		return
	}
	var resp markResponse
	resp.Message = fmt.Sprintf("%d runs started for %d dates of %s", len(runs), len(req.Dates), req.Type)
	resp.Data.Runs = runs
	resp.Data.RunIDs = runIDs(runs)
	writeJSON(w, http.StatusAccepted, resp)
}

// apiTriggered returns the project's api-triggered ingestions of typ, or
// those named in sources; any name that is not one of them is a 404.
func (s *Service) apiTriggered(project, typ string, sources []string) ([]string, *apiError) {
	if len(sources) == 0 {
		var names []string
		for _, in := range s.file.Ingestions {
			if in.Project == project && in.Type == typ && in.Schedule.Mode == config.ScheduleAPITriggered {
				names = append(names, in.Name)
			}
		}
		if len(names) == 0 {
			return nil, &apiError{Status: http.StatusNotFound, Error: "no api-triggered source", Field: "type",
				Reason: fmt.Sprintf("the project has no api_triggered source of type %s", typ)}
		}
		return names, nil
	}
	for _, name := range sources {
		in := s.ingestion(project, name)
		var reason string
		switch {
		case in == nil:
			reason = fmt.Sprintf("no source %s in this project", quote(name))
		case in.Type != typ:
			reason = fmt.Sprintf("source %s is of type %s, not %s", quote(name), in.Type, typ)
		case in.Schedule.Mode != config.ScheduleAPITriggered:
			reason = fmt.Sprintf("source %s is scheduled %s, not api_triggered", quote(name), in.Schedule.Mode)
		default:
			continue
		}
		return nil, &apiError{Status: http.StatusNotFound, Error: "unknown source " + quote(name), Field: "sources", Reason: reason}
	}
	return sources, nil
}

func (s *Service) ingestion(project, name string) *config.Ingestion {
	for i := range s.file.Ingestions {
		in := &s.file.Ingestions[i]
		if in.Project == project && in.Name == name {
			return in
		}
	}
	return nil
}

// start dispatches one run per (ingestion, date). Once begun, the fan-out
// is not cut short by the client hanging up, only by DispatchTimeout.
func (s *Service) start(ctx context.Context, project string, ingestions, dates []string, trigger vocab.Trigger, reason string) ([]startedRun, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DispatchTimeout)
	defer cancel()
	runs := make([]startedRun, 0, len(ingestions)*len(dates))
	for _, in := range ingestions {
		for _, d := range dates {
			id, err := s.dispatch.Dispatch(ctx, dispatch.Request{
				Project: project, Ingestion: in, Date: d, Trigger: trigger, Reason: reason,
			})
			if err != nil {
				return runs, fmt.Errorf("dispatch %s of %s: %w", d, in, err)
			}
			runs = append(runs, startedRun{Source: in, Date: d, RunID: id})
		}
	}
	return runs, nil
}

func runIDs(runs []startedRun) []string {
	ids := make([]string, len(runs))
	for i, r := range runs {
		ids[i] = r.RunID
	}
	return ids
}

// backfill loads a range of days of one source, or of every source of the
// type, whatever their schedule.
func (s *Service) backfill(w http.ResponseWriter, r *http.Request) {
	project := projectFrom(r.Context())
	body, e := s.readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	req, e := decodeBackfill(body, s.today(), s.cfg.MaxBackfillDays)
	if e != nil {
		writeError(w, e)
		return
	}
	var ingestions []string
	if req.Source != "" {
		in := s.ingestion(project, req.Source)
		if in == nil || in.Type != req.Type {
			writeError(w, &apiError{Status: http.StatusNotFound, Error: "unknown source " + quote(req.Source), Field: "source",
				Reason: fmt.Sprintf("no source %s of type %s in this project", quote(req.Source), req.Type)})
			return
		}
		ingestions = []string{in.Name}
	} else {
		for _, in := range s.file.Ingestions {
			if in.Project == project && in.Type == req.Type {
				ingestions = append(ingestions, in.Name)
			}
		}
		if len(ingestions) == 0 {
			writeError(w, &apiError{Status: http.StatusNotFound, Error: "no source", Field: "type",
				Reason: fmt.Sprintf("the project has no source of type %s", req.Type)})
			return
		}
	}
	runs, err := s.start(r.Context(), project, ingestions, req.Dates, vocab.TriggerBackfill, "backfill")
	if err != nil {
		s.internalError(w, r, http.StatusServiceUnavailable, fmt.Sprintf("start backfill runs (%d of %d started)", len(runs), len(ingestions)*len(req.Dates)), err)
		return
	}
	var resp backfillResponse
	resp.Message = fmt.Sprintf("backfill of %d days (%s to %s) started: %d runs", len(req.Dates), req.Dates[0], req.Dates[len(req.Dates)-1], len(runs))
	resp.Data.RunIDs = runIDs(runs)
	resp.Data.Runs = runs
	resp.Data.RunID = runs[0].RunID
	writeJSON(w, http.StatusAccepted, resp)
}
