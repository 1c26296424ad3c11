package planner

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
	"github.com/sluicehq/sluice/schemas"
)

// Request asks for one day of one ingestion to be loaded.
type Request struct {
	Project, Ingestion, Date, Trigger, Reason string
}

// Dispatcher turns requests into runs: it takes the day's lease (so one run
// per day is in flight), records the run as scheduled, and publishes it on
// ingest-requests. A request for a day that is already running is queued
// once in Redis (a newer request replaces an older queued one) and
// published when the day's lease is released.
type Dispatcher struct {
	client   *kgo.Client
	kafka    kafka.Config
	codecs   *schemas.Codecs
	settings *config.File
	store    store.Store
	state    *state.State
	leaseTTL time.Duration
	logger   *slog.Logger
	clock    func() time.Time
}

// DispatcherDeps are the Dispatcher's collaborators. Client only produces.
type DispatcherDeps struct {
	Client   *kgo.Client
	Kafka    kafka.Config
	Codecs   *schemas.Codecs
	Settings *config.File
	Store    store.Store
	State    *state.State
	LeaseTTL time.Duration
	Logger   *slog.Logger
	Clock    func() time.Time
}

// NewDispatcher builds a Dispatcher.
func NewDispatcher(d DispatcherDeps) (*Dispatcher, error) {
	if d.Client == nil || d.Codecs == nil || d.Settings == nil || d.Store == nil || d.State == nil {
		return nil, errors.New("dispatcher: client, codecs, settings, store and state are required")
	}
	if d.LeaseTTL == 0 {
		d.LeaseTTL = 2 * time.Hour
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Clock == nil {
		d.Clock = time.Now
	}
	return &Dispatcher{client: d.Client, kafka: d.Kafka, codecs: d.Codecs, settings: d.Settings, store: d.Store,
		state: d.State, leaseTTL: d.LeaseTTL, logger: d.Logger, clock: d.Clock}, nil
}

// Dispatch starts (or queues) a run of r's day and returns its run id.
func (d *Dispatcher) Dispatch(ctx context.Context, r Request) (string, error) {
	ing, ok := d.settings.Ingestion(r.Project, r.Ingestion)
	if !ok {
		return "", fmt.Errorf("dispatch %s/%s: unknown ingestion", r.Project, r.Ingestion)
	}
	now := d.clock()
	req := schemas.IngestRequest{
		RequestID: runid.New(), RunID: runid.New(), Project: r.Project, Ingestion: r.Ingestion,
		Date: r.Date, Trigger: r.Trigger, RequestedAt: now.UnixMilli(), Reason: r.Reason,
	}
	day := state.DayKey{Project: r.Project, Ingestion: r.Ingestion, Date: r.Date}
	// The lease is short until the request is on Kafka: a dispatcher
	// killed in between must not hold the day for the whole LeaseTTL.
	fence, ok, err := d.state.AcquireDay(ctx, day, req.RunID, min(d.leaseTTL, dispatchLease))
	if err != nil {
		return "", fmt.Errorf("lease day %s: %w", day, err)
	}
	if !ok {
		if err := d.queue(ctx, day, ing, req); err != nil {
			return "", err
		}
		return req.RunID, nil
	}
	req.Fence = fence
	if err := d.publish(ctx, ing, req, req.Reason); err != nil {
		_ = d.state.ReleaseDay(context.WithoutCancel(ctx), day, req.RunID)
		return "", err
	}
	d.extendLease(ctx, day, req.RunID)
	return req.RunID, nil
}

// dispatchLease is how long a day's lease lasts before its request is
// published; then it is extended to LeaseTTL.
const dispatchLease = time.Minute

// extendLease gives a published run the day's lease for LeaseTTL. If the
// short lease ran out meanwhile and another run took the day, fences
// decide between the two in the store.
func (d *Dispatcher) extendLease(ctx context.Context, day state.DayKey, runID string) {
	// Only while the run still holds it: a run that already finished (and
	// was released by the loader) must not take the day again.
	if holder, _, err := d.state.DayHolder(ctx, day); err != nil || holder != runID {
		return
	}
	if _, ok, err := d.state.AcquireDay(ctx, day, runID, d.leaseTTL); err != nil || !ok {
		d.logger.Warn("extend the lease of a published run", "run_id", runID, "day", day.String(), "held", ok, "err", err)
	}
}

// publish records the run as scheduled and puts it on ingest-requests.
func (d *Dispatcher) publish(ctx context.Context, ing *config.Ingestion, req schemas.IngestRequest, note string) error {
	if err := d.store.UpdateRun(ctx, store.RunUpdate{
		RunID: req.RunID, Project: req.Project, Ingestion: req.Ingestion, Type: ing.Type, Date: req.Date,
		Trigger: req.Trigger, Fence: req.Fence, Status: store.StatusScheduled, Message: note, At: d.clock(),
	}); err != nil {
		return fmt.Errorf("record run %s: %w", req.RunID, err)
	}
	data, err := d.codecs.Encode(d.codecs.IngestRequest, &req)
	if err != nil {
		return fmt.Errorf("encode ingest request: %w", err)
	}
	rec := &kgo.Record{Topic: d.kafka.Topic(schemas.TopicIngestRequests), Key: kafka.DayKey(req.Project, req.Ingestion, req.Date), Value: data}
	if err := kafka.ProduceSync(ctx, d.client, rec); err != nil {
		return fmt.Errorf("publish run %s: %w", req.RunID, err)
	}
	d.logger.Info("run dispatched", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "trigger", req.Trigger, "fence", req.Fence)
	return nil
}

// queue parks req as the day's one pending request; an older pending
// request of the day is superseded by it.
func (d *Dispatcher) queue(ctx context.Context, day state.DayKey, ing *config.Ingestion, req schemas.IngestRequest) error {
	if old, ok, err := d.state.TakePending(ctx, day); err != nil {
		return fmt.Errorf("take pending of %s: %w", day, err)
	} else if ok {
		var prev schemas.IngestRequest
		if d.codecs.Decode(d.codecs.IngestRequest, old, &prev) == nil {
			_ = d.store.UpdateRun(ctx, store.RunUpdate{
				RunID: prev.RunID, Project: prev.Project, Ingestion: prev.Ingestion, Type: ing.Type, Date: prev.Date,
				Trigger: prev.Trigger, Status: store.StatusSuperseded, Message: "replaced by newer request " + req.RunID, At: d.clock(),
			})
		}
	}
	data, err := d.codecs.Encode(d.codecs.IngestRequest, &req)
	if err != nil {
		return fmt.Errorf("encode ingest request: %w", err)
	}
	if err := d.state.SetPending(ctx, day, data); err != nil {
		return fmt.Errorf("queue run of %s: %w", day, err)
	}
	holder, _, _ := d.state.DayHolder(ctx, day)
	if err := d.store.UpdateRun(ctx, store.RunUpdate{
		RunID: req.RunID, Project: req.Project, Ingestion: req.Ingestion, Type: ing.Type, Date: req.Date,
		Trigger: req.Trigger, Status: store.StatusScheduled, Message: joinNote(req.Reason, "queued behind run "+holder), At: d.clock(),
	}); err != nil {
		return fmt.Errorf("record queued run %s: %w", req.RunID, err)
	}
	d.logger.Info("run queued behind the day's running run", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "holder", holder)
	return nil
}

// ReleasePending publishes the queued request of every day whose lease is
// free. The planner calls it on every tick.
func (d *Dispatcher) ReleasePending(ctx context.Context) error {
	days, err := d.state.PendingDays(ctx)
	if err != nil {
		return fmt.Errorf("list pending days: %w", err)
	}
	for _, day := range days {
		if holder, _, err := d.state.DayHolder(ctx, day); err != nil || holder != "" {
			continue
		}
		payload, ok, err := d.state.TakePending(ctx, day)
		if err != nil || !ok {
			continue
		}
		var req schemas.IngestRequest
		if err := d.codecs.Decode(d.codecs.IngestRequest, payload, &req); err != nil {
			d.logger.Error("drop undecodable pending request", "day", day.String(), "err", err)
			continue
		}
		ing, ok := d.settings.Ingestion(req.Project, req.Ingestion)
		if !ok {
			continue
		}
		fence, ok, err := d.state.AcquireDay(ctx, day, req.RunID, min(d.leaseTTL, dispatchLease))
		if err != nil || !ok {
			// Someone took the day meanwhile: keep the request queued.
			_ = d.state.SetPending(ctx, day, payload)
			continue
		}
		req.Fence = fence
		if err := d.publish(ctx, ing, req, joinNote(req.Reason, "started after the day's previous run")); err != nil {
			_ = d.state.ReleaseDay(context.WithoutCancel(ctx), day, req.RunID)
			_ = d.state.SetPending(context.WithoutCancel(ctx), day, payload)
			return err
		}
		d.extendLease(ctx, day, req.RunID)
	}
	return nil
}

// joinNote puts the run's reason (why it was requested) before a note.
func joinNote(reason, note string) string {
	if reason == "" {
		return note
	}
	return reason + "; " + note
}
