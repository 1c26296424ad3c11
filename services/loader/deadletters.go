package loader

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// DeadLetterConfig tunes the relay that publishes decided runs' rejected
// rows. Zero values take the defaults.
type DeadLetterConfig struct {
	Page int // rejected rows read and produced at a time; default 1000
	// Interval is how often runs left due (a failed publication, a loader
	// that stopped before publishing) are looked for; default 30s.
	Interval time.Duration
	// Grace leaves a run decided less than Grace ago to the loader that
	// decided it, which publishes it at once; the interval's sweep takes
	// it after. Default 1 min.
	Grace time.Duration
}

func (c *DeadLetterConfig) defaults() {
	if c.Page <= 0 {
		c.Page = 1000
	}
	if c.Interval <= 0 {
		c.Interval = 30 * time.Second
	}
	if c.Grace <= 0 {
		c.Grace = time.Minute
	}
}

// sweepRuns is how many due runs one look at the outbox takes.
const sweepRuns = 100

// deadLetterRelay publishes the dead letters of decided runs from the
// store's outbox (see store.Store.DueDeadLetters): the rejected rows of
// the extraction that decided the run, each under the key
// schemas.DeadLetterKey, acknowledged by the topic before the run is
// marked published. A relay that stops in between leaves the run due, and
// the next publication produces the same records under the same keys: a
// consumer that keeps one record per key sees each rejected row once.
type deadLetterRelay struct {
	cfg    DeadLetterConfig
	store  store.Store
	client *kgo.Client
	codecs *schemas.Codecs
	topic  string // dead-letters
	source string // raw-rows: where the rows were read from
	log    *slog.Logger
	clock  func() time.Time
	// decided holds runs this loader decided, for publication at once; a
	// run that does not fit waits for the sweep.
	decided   chan runKey
	published prometheus.Counter
}

type runKey struct{ project, runID string }

func newDeadLetterRelay(cfg DeadLetterConfig, deps Deps, client *kgo.Client) *deadLetterRelay {
	cfg.defaults()
	return &deadLetterRelay{cfg: cfg, store: deps.Store, client: client, codecs: deps.Codecs,
		topic: deps.Kafka.Topic(schemas.TopicDeadLetter), source: deps.Kafka.Topic(schemas.TopicRawRows),
		log: deps.Logger, clock: deps.Clock, decided: make(chan runKey, 1024),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_loader_dead_letters_total",
			Help: "Rejected rows published to the dead-letter topic (a publication repeated after a crash counts again)."}),
	}
}

// queue asks for the dead letters of a run this loader just decided.
func (d *deadLetterRelay) queue(project, runID string) {
	select {
	case d.decided <- runKey{project, runID}:
	default:
		d.log.Debug("dead-letter queue full; the sweep publishes the run", "project", project, "run_id", runID)
	}
}

// run publishes every due run once (the start-up sweep: what a stopped
// loader left), then the runs queued as they are decided, and looks for
// runs left due every Interval. Once ctx is cancelled it waits for
// consumed (the loader's last poll is done) and publishes what that
// queued, all within drain of the cancellation, so the loader's stop
// stays bounded by its DrainTimeout; what is left stays due for the next
// start's sweep. It returns nil, also when consumed closes first (the
// consumer failed: the loader returns that error).
func (d *deadLetterRelay) run(ctx context.Context, consumed <-chan struct{}, drain time.Duration) error {
	d.sweep(ctx, time.Time{})
	tick := time.NewTicker(d.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			deadline := time.Now().Add(drain)
			<-consumed
			d.drain(ctx, deadline)
			return nil
		case <-consumed:
			d.drain(ctx, time.Now().Add(drain))
			return nil
		case r := <-d.decided:
			if err := d.publish(ctx, r); err != nil && ctx.Err() == nil {
				d.log.Warn("dead letters not published; the run stays due", "project", r.project, "run_id", r.runID, "err", err)
			}
		case <-tick.C:
			d.sweep(ctx, d.clock().Add(-d.cfg.Grace))
		}
	}
}

func (d *deadLetterRelay) drain(ctx context.Context, deadline time.Time) {
	dctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	for {
		select {
		case r := <-d.decided:
			if err := d.publish(dctx, r); err != nil {
				d.log.Warn("dead letters not published before stopping; the run stays due", "project", r.project, "run_id", r.runID, "err", err)
				return
			}
		default:
			return
		}
	}
}

// sweep publishes the runs due and decided before before (zero: all). A
// run that fails is left for the next sweep; the others go on.
func (d *deadLetterRelay) sweep(ctx context.Context, before time.Time) {
	for ctx.Err() == nil {
		runs, err := d.store.DueDeadLetters(ctx, store.DeadLetterFilter{DecidedBefore: before, Limit: sweepRuns})
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("due dead letters not listed", "err", err)
			}
			return
		}
		done := 0
		for _, r := range runs {
			if err := d.publish(ctx, runKey{r.Project, r.RunID}); err != nil {
				if ctx.Err() != nil {
					return
				}
				d.log.Warn("dead letters not published; the run stays due", "project", r.Project, "run_id", r.RunID, "err", err)
				continue
			}
			done++
		}
		if len(runs) < sweepRuns || done == 0 {
			return
		}
	}
}

// publish produces the run's dead letters, page by page, and marks them
// published once the topic has acknowledged every one. A run with
// nothing due publishes nothing.
func (d *deadLetterRelay) publish(ctx context.Context, k runKey) error {
	run, err := d.store.Run(ctx, k.project, k.runID)
	if err != nil {
		return fmt.Errorf("read run %s: %w", k.runID, err)
	}
	after, n := int64(-1), 0
	for {
		rows, err := d.store.RunRejects(ctx, k.project, k.runID, after, d.cfg.Page)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			break
		}
		recs := make([]*kgo.Record, len(rows))
		for i := range rows {
			if recs[i], err = d.record(run, &rows[i]); err != nil {
				return err
			}
		}
		if err := kafka.ProduceSync(ctx, d.client, recs...); err != nil {
			return fmt.Errorf("publish dead letters of run %s: %w", k.runID, err)
		}
		d.published.Add(float64(len(recs)))
		n += len(rows)
		after = rows[len(rows)-1].Position
		if len(rows) < d.cfg.Page {
			break
		}
	}
	if err := d.store.MarkDeadLettersPublished(ctx, k.project, k.runID, d.clock()); err != nil {
		return err
	}
	if n > 0 {
		d.log.Info("dead letters published", "project", k.project, "run_id", k.runID, "ingestion", run.Ingestion,
			"day", run.Date, "rows", n)
	}
	return nil
}

// record is one rejected row's dead letter. Every field comes from the
// store, its time too (the run's decision), so a publication repeated
// after a crash produces the same bytes under the same key.
func (d *deadLetterRelay) record(run store.Run, r *schemas.RejectedRow) (*kgo.Record, error) {
	dl := schemas.DeadLetter{SourceTopic: d.source, Reason: r.Reason, Detail: r.Detail,
		RunID: run.RunID, ExtractID: run.ExtractID, Project: run.Project, Ingestion: run.Ingestion, Date: run.Date,
		Position: r.Position, Values: r.Values, Raw: []byte{}, At: run.UpdatedAt.UnixMilli()}
	data, err := d.codecs.Encode(d.codecs.DeadLetter, &dl)
	if err != nil {
		return nil, fmt.Errorf("encode dead letter %d of run %s: %w", r.Position, run.RunID, err)
	}
	key := schemas.DeadLetterKey(run.Project, run.RunID, r.Position)
	return &kgo.Record{Topic: d.topic, Key: []byte(key), Value: data}, nil
}
