// Package dispatch is the one door through which a day's run starts and
// ends: it leases the day (so one run per day is in flight, fenced), records
// the run as scheduled, publishes it on ingest-requests, queues it as the
// day's one pending request while the day is busy (a newer request
// supersedes the older), starts pending requests when their day frees,
// claims the day for a request an outside system published, answers who
// holds a day, and releases the day when its run finishes.
//
// Nothing else calls pkg/state's day-lease operations: the planner, the
// trigger and the CLI dispatch; the extractor claims outside requests; the
// planner and the watcher ask whether a day is busy; the loader releases.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// Request asks for one day of one ingestion to be loaded.
type Request struct {
	Project, Ingestion, Date, Reason string
	Trigger                          vocab.Trigger
}

// Day names one day of one ingestion.
type Day = state.DayKey

// ErrNoProducer is returned by Dispatch and StartPending of a Dispatcher
// built without a Kafka client (one that only claims, answers and
// releases).
var ErrNoProducer = errors.New("dispatcher has no kafka client to publish with")

// dispatchLease is how long a day's lease lasts before its request is
// published; then it is extended to LeaseTTL. A dispatcher killed in
// between must not hold the day for the whole LeaseTTL.
const dispatchLease = time.Minute

// maxRetryBackoff caps the wait between attempts to reach Redis for an
// outside request.
const maxRetryBackoff = 30 * time.Second

// Config tunes a Dispatcher. Zero values take the defaults.
type Config struct {
	// LeaseTTL is how long a published run holds its day (default 2h):
	// past it, a dead run stops blocking the day and its fence loses to
	// the next run's.
	LeaseTTL time.Duration
	// RetryBackoff is the first wait when Redis is unreachable while an
	// outside request is claimed (default 1s); it doubles up to 30s.
	RetryBackoff time.Duration
}

// Deps are a Dispatcher's collaborators. Client only produces; only
// Dispatch and StartPending need it, so services that only claim,
// answer or release (extractor, watcher, loader) leave it nil.
type Deps struct {
	Client   *kgo.Client
	Kafka    kafka.Config
	Codecs   *schemas.Codecs
	Settings *config.File
	Store    store.Store
	State    *state.State
	Logger   *slog.Logger
	Clock    func() time.Time
}

// Dispatcher starts, queues, supersedes and releases days' runs. It is
// safe for concurrent use.
type Dispatcher struct {
	cfg  Config
	deps Deps
}

// New builds a Dispatcher.
func New(cfg Config, deps Deps) (*Dispatcher, error) {
	if deps.Codecs == nil || deps.Settings == nil || deps.Store == nil || deps.State == nil {
		return nil, errors.New("new dispatcher: codecs, settings, store and state are required")
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 2 * time.Hour
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = time.Second
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	return &Dispatcher{cfg: cfg, deps: deps}, nil
}

// Dispatch starts a run of r's day, or queues it as the day's pending
// request when another run holds the day, and returns its run id. A
// queued request supersedes the one queued before it. When publishing
// fails the day is released and the error returned: nothing was started.
func (d *Dispatcher) Dispatch(ctx context.Context, r Request) (string, error) {
	if d.deps.Client == nil {
		return "", fmt.Errorf("dispatch %s/%s/%s: %w", r.Project, r.Ingestion, r.Date, ErrNoProducer)
	}
	ing, ok := d.deps.Settings.Ingestion(r.Project, r.Ingestion)
	if !ok {
		return "", fmt.Errorf("dispatch %s/%s: unknown ingestion", r.Project, r.Ingestion)
	}
	req := schemas.IngestRequest{
		RequestID: runid.New(), RunID: runid.New(), Project: r.Project, Ingestion: r.Ingestion,
		Date: r.Date, Trigger: string(r.Trigger), RequestedAt: d.deps.Clock().UnixMilli(), Reason: r.Reason,
	}
	day := Day{Project: r.Project, Ingestion: r.Ingestion, Date: r.Date}
	payload, err := d.encode(&req)
	if err != nil {
		return "", err
	}
	claim, err := d.deps.State.LeaseOrQueue(ctx, day, req.RunID, payload, d.shortLease())
	if err != nil {
		return "", fmt.Errorf("lease or queue day %s: %w", day, err)
	}
	if !claim.Leased {
		if err := d.queued(ctx, ing, req, claim); err != nil {
			return "", err
		}
		return req.RunID, nil
	}
	d.superseded(ctx, ing, req, claim)
	req.Fence = claim.Fence
	if err := d.publish(ctx, ing, req, req.Reason); err != nil {
		d.release(ctx, day, req.RunID)
		return "", err
	}
	d.extendLease(ctx, day, req.RunID)
	return req.RunID, nil
}

// StartPending starts the pending request of every day whose lease is
// free; the planner calls it on every tick. A request that cannot be
// published goes back to its day (unless a newer one was queued
// meanwhile, which then supersedes it) and the error is returned.
func (d *Dispatcher) StartPending(ctx context.Context) error {
	if d.deps.Client == nil {
		return fmt.Errorf("start pending requests: %w", ErrNoProducer)
	}
	days, err := d.deps.State.PendingDays(ctx)
	if err != nil {
		return fmt.Errorf("list pending days: %w", err)
	}
	var errs []error
	for _, day := range days {
		p, err := d.deps.State.PromotePending(ctx, day, d.shortLease())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !p.Started {
			continue
		}
		var req schemas.IngestRequest
		if err := d.deps.Codecs.Decode(d.deps.Codecs.IngestRequest, p.Payload, &req); err != nil {
			d.deps.Logger.Error("drop undecodable pending request", "run_id", p.RunID, "day", day.String(), "err", err)
			d.release(ctx, day, p.RunID)
			continue
		}
		ing, ok := d.deps.Settings.Ingestion(req.Project, req.Ingestion)
		if !ok {
			d.deps.Logger.Warn("drop pending request of an ingestion no longer configured", "run_id", p.RunID, "day", day.String())
			d.release(ctx, day, p.RunID)
			continue
		}
		req.Fence = p.Fence
		if err := d.publish(ctx, ing, req, joinNote(req.Reason, "started after the day's previous run")); err != nil {
			d.release(ctx, day, p.RunID)
			d.restore(ctx, day, ing, req, p.Payload)
			return errors.Join(append(errs, err)...)
		}
		d.extendLease(ctx, day, req.RunID)
	}
	return errors.Join(errs...)
}

// ClaimOutside gives a request an outside system published onto
// ingest-requests (its run id already set by the caller) the day's lease
// for LeaseTTL, so one run per day and fencing hold for it too, and
// records it as scheduled. When the day is busy the request is queued as
// the day's pending request instead (StartPending starts it) and leased
// is false. While Redis is unreachable it retries with backoff; it returns
// ctx's error once stopped, the request then neither leased nor queued.
func (d *Dispatcher) ClaimOutside(ctx context.Context, req *schemas.IngestRequest) (leased bool, _ error) {
	ing, ok := d.deps.Settings.Ingestion(req.Project, req.Ingestion)
	if !ok {
		return false, fmt.Errorf("claim outside request %s: unknown ingestion %s/%s", req.RunID, req.Project, req.Ingestion)
	}
	day := Day{Project: req.Project, Ingestion: req.Ingestion, Date: req.Date}
	req.Fence = 0
	payload, err := d.encode(req)
	if err != nil {
		return false, err
	}
	backoff := d.cfg.RetryBackoff
	for {
		claim, err := d.deps.State.LeaseOrQueue(ctx, day, req.RunID, payload, d.cfg.LeaseTTL)
		if err == nil {
			if claim.Leased {
				d.superseded(ctx, ing, *req, claim)
				req.Fence = claim.Fence
				d.record(ctx, ing, *req, vocab.StatusScheduled, joinNote(req.Reason, "published onto ingest-requests by an outside system"))
				return true, nil
			}
			if err := d.queued(ctx, ing, *req, claim); err != nil {
				d.deps.Logger.Warn("record queued outside request", "run_id", req.RunID, "day", day.String(), "err", err)
			}
			return false, nil
		}
		// Redis is unreachable: the caller keeps the request (its offset
		// uncommitted) while this tries again, until stopped.
		d.deps.Logger.Warn("lease the day of an outside request; retrying", "run_id", req.RunID, "ingestion", req.Ingestion,
			"day", req.Date, "project", req.Project, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("claim outside request %s: %w", req.RunID, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxRetryBackoff)
	}
}

// Holder returns the run holding the day and its fence, or "" when the day
// is free.
func (d *Dispatcher) Holder(ctx context.Context, day Day) (runID string, fence int64, _ error) {
	return d.deps.State.DayHolder(ctx, day)
}

// Busy reports whether a run of the day is in flight (or a dispatch that
// died before publishing still holds its short lease).
func (d *Dispatcher) Busy(ctx context.Context, day Day) (bool, error) {
	holder, _, err := d.deps.State.DayHolder(ctx, day)
	return holder != "", err
}

// Pending returns the run id of the day's pending request, if any.
func (d *Dispatcher) Pending(ctx context.Context, day Day) (runID string, ok bool, _ error) {
	return d.deps.State.PendingRun(ctx, day)
}

// Release frees the day when runID holds it: its run finished. A day
// another run holds (after runID's lease expired) is left alone. The day's
// pending request starts on the planner's next tick.
func (d *Dispatcher) Release(ctx context.Context, day Day, runID string) error {
	return d.deps.State.ReleaseDay(ctx, day, runID)
}

func (d *Dispatcher) shortLease() time.Duration { return min(d.cfg.LeaseTTL, dispatchLease) }

// release gives up a lease taken for a run that did not start; also when
// ctx was cancelled, or the day stays blocked for the short lease.
func (d *Dispatcher) release(ctx context.Context, day Day, runID string) {
	if err := d.deps.State.ReleaseDay(context.WithoutCancel(ctx), day, runID); err != nil {
		d.deps.Logger.Warn("release the day of a run that did not start", "run_id", runID, "day", day.String(), "err", err)
	}
}

// restore puts a promoted request that could not be published back as its
// day's pending request; a newer one queued meanwhile wins over it.
func (d *Dispatcher) restore(ctx context.Context, day Day, ing *config.Ingestion, req schemas.IngestRequest, payload []byte) {
	ctx = context.WithoutCancel(ctx)
	ok, err := d.deps.State.RestorePending(ctx, day, req.RunID, payload)
	if err != nil {
		d.deps.Logger.Error("put back a pending request that could not be published; it is lost", "run_id", req.RunID, "day", day.String(), "err", err)
		return
	}
	if !ok {
		d.supersede(ctx, ing, req, "a newer request was queued while it could not be published")
	}
}

// extendLease gives a published run the day's lease for LeaseTTL, if it
// still holds it: a run that already finished (and was released) must not
// take the day again, and if the short lease ran out and another run took
// the day, fences decide between the two in the store.
func (d *Dispatcher) extendLease(ctx context.Context, day Day, runID string) {
	ok, err := d.deps.State.RenewDay(ctx, day, runID, d.cfg.LeaseTTL)
	if err != nil {
		d.deps.Logger.Warn("extend the lease of a published run", "run_id", runID, "day", day.String(), "err", err)
	} else if !ok {
		d.deps.Logger.Debug("lease of a published run not extended: the run no longer holds the day", "run_id", runID, "day", day.String())
	}
}

// publish records the run as scheduled and puts it on ingest-requests.
func (d *Dispatcher) publish(ctx context.Context, ing *config.Ingestion, req schemas.IngestRequest, note string) error {
	if err := d.deps.Store.UpdateRun(ctx, d.update(ing, req, vocab.StatusScheduled, note)); err != nil {
		return fmt.Errorf("record run %s: %w", req.RunID, err)
	}
	data, err := d.encode(&req)
	if err != nil {
		return err
	}
	rec := &kgo.Record{Topic: d.deps.Kafka.Topic(schemas.TopicIngestRequests), Key: kafka.DayKey(req.Project, req.Ingestion, req.Date), Value: data}
	if err := kafka.ProduceSync(ctx, d.deps.Client, rec); err != nil {
		return fmt.Errorf("publish run %s: %w", req.RunID, err)
	}
	d.deps.Logger.Info("run dispatched", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "project", req.Project,
		"trigger", req.Trigger, "fence", req.Fence)
	return nil
}

// superseded records the pending request req replaced, if any: it will
// never start.
func (d *Dispatcher) superseded(ctx context.Context, ing *config.Ingestion, req schemas.IngestRequest, claim state.DayClaim) {
	if claim.ReplacedRun == "" {
		return
	}
	var prev schemas.IngestRequest
	if err := d.deps.Codecs.Decode(d.deps.Codecs.IngestRequest, claim.Replaced, &prev); err != nil {
		// The run id is kept beside the payload: still say it lost.
		prev = schemas.IngestRequest{RunID: claim.ReplacedRun, Project: req.Project, Ingestion: req.Ingestion, Date: req.Date}
	}
	d.supersede(ctx, ing, prev, "replaced by newer request "+req.RunID)
}

// queued records req, now its busy day's pending request, as scheduled,
// and the pending request it replaced as superseded.
func (d *Dispatcher) queued(ctx context.Context, ing *config.Ingestion, req schemas.IngestRequest, claim state.DayClaim) error {
	d.superseded(ctx, ing, req, claim)
	if err := d.deps.Store.UpdateRun(ctx, d.update(ing, req, vocab.StatusScheduled, joinNote(req.Reason, "queued behind run "+claim.Holder))); err != nil {
		return fmt.Errorf("record queued run %s: %w", req.RunID, err)
	}
	d.deps.Logger.Info("run queued behind the day's running run", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date,
		"project", req.Project, "holder", claim.Holder)
	return nil
}

// supersede records a pending request that will never start.
func (d *Dispatcher) supersede(ctx context.Context, ing *config.Ingestion, req schemas.IngestRequest, note string) {
	req.Fence = 0
	d.record(ctx, ing, req, vocab.StatusSuperseded, note)
}

// record writes a status the run's outcome does not depend on: a failure
// is logged, the run's later steps write again.
func (d *Dispatcher) record(ctx context.Context, ing *config.Ingestion, req schemas.IngestRequest, status vocab.Status, note string) {
	if err := d.deps.Store.UpdateRun(ctx, d.update(ing, req, status, note)); err != nil {
		d.deps.Logger.Warn("record run", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "project", req.Project,
			"status", status, "err", err)
	}
}

func (d *Dispatcher) update(ing *config.Ingestion, req schemas.IngestRequest, status vocab.Status, note string) store.RunUpdate {
	return store.RunUpdate{
		RunID: req.RunID, Project: req.Project, Ingestion: req.Ingestion, Type: ing.Type, Date: req.Date,
		Trigger: vocab.Trigger(req.Trigger), Fence: req.Fence, Status: status, Message: note, At: d.deps.Clock(),
	}
}

func (d *Dispatcher) encode(req *schemas.IngestRequest) ([]byte, error) {
	data, err := d.deps.Codecs.Encode(d.deps.Codecs.IngestRequest, req)
	if err != nil {
		return nil, fmt.Errorf("encode ingest request %s: %w", req.RunID, err)
	}
	return data, nil
}

// joinNote puts the run's reason (why it was requested) before a note.
func joinNote(reason, note string) string {
	if reason == "" {
		return note
	}
	return reason + "; " + note
}
