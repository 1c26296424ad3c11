package extractor

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// CategoryRequestError marks a run whose ingest request itself was wrong
// (a bad date): nothing was asked of the warehouse.
const CategoryRequestError = "REQUEST_ERROR"

// outsideRunID names the run of a request published by an outside system.
// It is derived from the request (or, lacking a request id, from where the
// record sits), so a redelivered request is the same run.
func outsideRunID(rec *kgo.Record, req schemas.IngestRequest) string {
	if req.RequestID != "" {
		return "req-" + req.RequestID
	}
	return fmt.Sprintf("req-%s-%d-%d", rec.Topic, rec.Partition, rec.Offset)
}

// claimOutside gives a request published by an outside system (empty
// run_id) a run and the day's lease, as the planner's dispatcher does for
// its own requests: so one run per day and fencing hold for it too. When
// the day is busy the request is queued as the day's one pending request
// (a newer one replaces it) and the planner starts it when the day frees.
// It reports whether to extract now, and otherwise whether the record may
// be committed.
func (s *Service) claimOutside(ctx context.Context, rec *kgo.Record, req *schemas.IngestRequest, ing *config.Ingestion) (proceed, commit bool) {
	req.RunID = outsideRunID(rec, *req)
	req.Trigger = schemas.TriggerRequest
	if req.RequestedAt == 0 {
		req.RequestedAt = s.deps.Clock().UnixMilli()
	}
	if s.deps.State == nil {
		return true, true
	}
	day := state.DayKey{Project: req.Project, Ingestion: req.Ingestion, Date: req.Date}
	log := s.deps.Logger.With("run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "project", req.Project)
	backoff := s.cfg.RetryBackoff
	for {
		fence, ok, err := s.deps.State.AcquireDay(ctx, day, req.RunID, s.cfg.LeaseTTL)
		if err == nil && ok {
			req.Fence = fence
			s.updateRun(ctx, *req, ing, store.StatusScheduled, "", "", "published onto ingest-requests by an outside system")
			return true, true
		}
		if err == nil {
			err = s.queueOutside(ctx, day, *req, ing)
			if err == nil {
				return false, true
			}
		}
		// Redis is unreachable: keep the request (its offset uncommitted)
		// and try again, until stopped.
		log.Warn("lease the day of an outside request; retrying", "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return false, false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// queueOutside parks req as its busy day's pending request.
func (s *Service) queueOutside(ctx context.Context, day state.DayKey, req schemas.IngestRequest, ing *config.Ingestion) error {
	if old, ok, err := s.deps.State.TakePending(ctx, day); err != nil {
		return err
	} else if ok {
		var prev schemas.IngestRequest
		if s.deps.Codecs.Decode(s.deps.Codecs.IngestRequest, old, &prev) == nil && prev.RunID != req.RunID {
			s.updateRun(ctx, prev, ing, store.StatusSuperseded, "", "", "replaced by newer request "+req.RunID)
		}
	}
	data, err := s.deps.Codecs.Encode(s.deps.Codecs.IngestRequest, &req)
	if err != nil {
		return fmt.Errorf("encode ingest request: %w", err)
	}
	if err := s.deps.State.SetPending(ctx, day, data); err != nil {
		return err
	}
	holder, _, _ := s.deps.State.DayHolder(ctx, day)
	s.updateRun(ctx, req, ing, store.StatusScheduled, "", "", "queued behind run "+holder)
	s.deps.Logger.Info("outside request queued behind the day's running run", "run_id", req.RunID, "ingestion", req.Ingestion,
		"day", req.Date, "project", req.Project, "holder", holder)
	return nil
}

// recordRequestError shows a request that named a known ingestion but
// could not run (a bad date) as a FAILED run, so it is in the status and
// not only on the dead-letter topic. The date is not a day, so the run has
// none: it appears among the runs, not the days.
func (s *Service) recordRequestError(ctx context.Context, rec *kgo.Record, req schemas.IngestRequest, ing *config.Ingestion, detail string) {
	runID := req.RunID
	if runID == "" {
		runID = outsideRunID(rec, req)
	}
	trigger := req.Trigger
	if trigger == "" || req.RunID == "" {
		trigger = schemas.TriggerRequest
	}
	err := s.deps.Store.UpdateRun(ctx, store.RunUpdate{
		RunID: runID, Project: req.Project, Ingestion: req.Ingestion, Type: ing.Type, Trigger: trigger,
		Status: store.StatusFailed, ErrorCategory: CategoryRequestError, ErrorMessage: detail, At: s.deps.Clock(),
	})
	if err != nil {
		s.deps.Logger.Warn("record rejected request", "run_id", runID, "ingestion", req.Ingestion, "project", req.Project, "err", err)
	}
}
