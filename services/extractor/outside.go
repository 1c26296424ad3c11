package extractor

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

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
// run_id) a run, and the day's lease through the dispatcher, as the planner
// does for its own requests: so one run per day and fencing hold for it
// too. When the day is busy the dispatcher queues the request as the day's
// one pending request (a newer one replaces it) and the planner starts it
// when the day frees. It reports whether to extract now, and otherwise
// whether the record may be committed.
func (s *Service) claimOutside(ctx context.Context, rec *kgo.Record, req *schemas.IngestRequest) (proceed, commit bool) {
	req.RunID = outsideRunID(rec, *req)
	req.Trigger = string(vocab.TriggerRequest)
	if req.RequestedAt == 0 {
		req.RequestedAt = s.deps.Clock().UnixMilli()
	}
	if s.deps.Dispatcher == nil {
		return true, true
	}
	leased, err := s.deps.Dispatcher.ClaimOutside(ctx, req)
	if err != nil {
		// Stopped while Redis was unreachable: keep the record uncommitted.
		return false, false
	}
	return leased, true
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
	trigger := vocab.Trigger(req.Trigger)
	if trigger == "" || req.RunID == "" {
		trigger = vocab.TriggerRequest
	}
	err := s.deps.Store.UpdateRun(ctx, store.RunUpdate{
		RunID: runID, Project: req.Project, Ingestion: req.Ingestion, Type: ing.Type, Trigger: trigger,
		Status: vocab.StatusFailed, ErrorCategory: vocab.CategoryRequest, ErrorMessage: detail, At: s.deps.Clock(),
	})
	if err != nil {
		s.deps.Logger.Warn("record rejected request", "run_id", runID, "ingestion", req.Ingestion, "project", req.Project, "err", err)
	}
}
