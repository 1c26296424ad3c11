// Package loader materializes mapped records into the event store. ROWS
// batches are staged idempotently with their rejected rows (a redelivered
// batch changes nothing); an END record swaps the day to its extraction's
// rows atomically, with the day's status and counts in the same
// transaction; then the day's lease is released so a queued request for
// it may run. Offsets are committed only after all of that is durable.
// Beside the consumer, a relay publishes the rejected rows of each
// decided run to the dead-letter topic from the store's outbox (see
// deadletters.go), once per run whatever its extractions and redeliveries.
package loader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// Config tunes the loader.
type Config struct {
	Group            string // consumer group, default sluice-loader
	MaxPollRecords   int
	MaxRejectedShare float64 // a run rejecting more fails instead of loading
	// DrainTimeout bounds the poll in hand, and then the publication of
	// the dead letters it decided, once told to stop (default 30s).
	DrainTimeout time.Duration
	DeadLetters  DeadLetterConfig
}

// Deps are the loader's collaborators.
type Deps struct {
	Kafka    kafka.Config
	Codecs   *schemas.Codecs
	Store    store.Store
	Logger   *slog.Logger
	Clock    func() time.Time
	Registry prometheus.Registerer
	// OnDayDone, when set, is told about every finished run (tests wait on
	// it; webhooks come from the store's outbox, see pkg/notify).
	OnDayDone func(ctx context.Context, end store.RunEnd, outcome store.Outcome)

	// Dispatcher releases a finished run's day; it needs no Kafka client.
	Dispatcher *dispatch.Dispatcher
}

// Service is a running loader.
type Service struct {
	cfg    Config
	deps   Deps
	client *kgo.Client
	// decoded are reused across polls (Decode keeps their slices), so a
	// steady load allocates no batches; handle runs on one goroutine.
	decoded []*schemas.MappedBatch
	relay   *deadLetterRelay

	// Work counters: what this loader did, so a redelivery counts again.
	rows  *prometheus.CounterVec
	bytes *prometheus.CounterVec
	stage prometheus.Histogram
	// Effect counters: what runs did, counted by the loader whose store
	// transaction decided the run, so each run counts once however often
	// its batches and END arrive (see finish).
	runs          *prometheus.CounterVec
	rowsLoaded    *prometheus.CounterVec
	rowsRejected  *prometheus.CounterVec
	duplicateEnds prometheus.Counter
	duration      *prometheus.HistogramVec
}

// New builds a loader and its Kafka client.
func New(cfg Config, deps Deps) (*Service, error) {
	if cfg.Group == "" {
		cfg.Group = "sluice-loader"
	}
	if cfg.MaxPollRecords == 0 {
		// A poll's records and their decoded batches are all live at
		// once: 16 records of 2,000 rows are ~40 MiB of heap (half the
		// decompressed records, half decoded strings), 32 were ~85 MiB,
		// which GOGC doubles past a 256 MiB RSS; one COPY still writes
		// 32,000 rows.
		cfg.MaxPollRecords = 16
	}
	if cfg.MaxRejectedShare == 0 {
		cfg.MaxRejectedShare = 1
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if deps.Codecs == nil || deps.Store == nil || deps.Dispatcher == nil {
		return nil, errors.New("loader: codecs, store and dispatcher are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	s := &Service{cfg: cfg, deps: deps,
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_loader_rows_total",
			Help: "Records of mapped batches the loader staged: a work counter, at least once (a redelivered batch counts again); rows loaded once are sluice_loader_rows_loaded_total."}, []string{"ingestion"}),
		stage: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_loader_stage_seconds", Help: "Time to stage one poll of batches.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_loader_bytes_total",
			Help: "Avro bytes of mapped batches staged into the store: a work counter, at least once (a redelivered batch counts again)."}, []string{"ingestion"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_loader_runs_total",
			Help: "Runs the loader decided, by outcome (swapped, stale, too_many_rejected, incomplete, failed): an effect counter, once per run; redelivered or repeated ends are sluice_loader_duplicate_ends_total."}, []string{"outcome"}),
		rowsLoaded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_loader_rows_loaded_total",
			Help: "Records made visible, counted when their run's swap made the day show them: an effect counter, once per run however often its batches were delivered or extracted."}, []string{"ingestion"}),
		rowsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_loader_rows_rejected_total",
			Help: "Rejected rows of runs that loaded or failed TOO_MANY_REJECTED_ROWS, by reason, from the run's counts in the store: an effect counter, once per run."}, []string{"ingestion", "reason"}),
		duplicateEnds: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_loader_duplicate_ends_total",
			Help: "END and FAILED markers of runs already decided (a redelivery, or another extraction of a finished run): they changed nothing."}),
		// From the run's creation (its request) to its outcome: 1s to ~9h.
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_loader_run_duration_seconds",
			Help:    "Time from a run's request to its outcome in the store, by outcome.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 16)}, []string{"outcome"}),
	}
	// Bound what a fetch buffers ahead of the polls: mapped batches compress
	// about 5x, so 4 MiB fetched is some 20 MiB of records in memory.
	opts := append(kafka.GroupOpts(s.consumerConfig()), kgo.FetchMaxBytes(4<<20), kgo.FetchMaxPartitionBytes(4<<20))
	cl, err := kafka.NewClient(deps.Kafka, "loader", deps.Logger, deps.Registry, opts...)
	if err != nil {
		return nil, err
	}
	s.client = cl
	s.relay = newDeadLetterRelay(cfg.DeadLetters, deps, cl)
	if deps.Registry != nil {
		for _, c := range []prometheus.Collector{s.rows, s.bytes, s.stage, s.runs, s.rowsLoaded, s.rowsRejected, s.duplicateEnds, s.duration, s.relay.published} {
			if err := deps.Registry.Register(c); err != nil {
				cl.Close()
				return nil, fmt.Errorf("register loader metrics: %w", err)
			}
		}
	}
	return s, nil
}

func (s *Service) consumerConfig() kafka.ConsumerConfig {
	return kafka.ConsumerConfig{
		Group:          s.cfg.Group,
		Topics:         []string{s.deps.Kafka.Topic(schemas.TopicMappedEvents)},
		MaxPollRecords: s.cfg.MaxPollRecords,
		DrainTimeout:   s.cfg.DrainTimeout,
	}
}

// Run loads, and publishes decided runs' dead letters, until ctx is
// cancelled; then the consumer drains and commits, the relay publishes
// what the last poll decided, and the client closes.
func (s *Service) Run(ctx context.Context) error {
	defer s.client.Close()
	consumed := make(chan struct{})
	var g errgroup.Group
	g.Go(func() error {
		defer close(consumed)
		return kafka.Consume(ctx, s.client, s.consumerConfig(), s.deps.Logger, s.handle)
	})
	g.Go(func() error { return s.relay.run(ctx, consumed, s.cfg.DrainTimeout) })
	return g.Wait()
}

// handle stages a poll's ROWS batches in one transaction, then finishes
// the runs whose END or FAILED marker arrived. Any error leaves the poll
// uncommitted; everything here is idempotent, so the retry is safe.
func (s *Service) handle(ctx context.Context, records []*kgo.Record) error {
	c := s.deps.Codecs
	var rows []*schemas.MappedBatch
	var rowBytes []int
	var markers []*schemas.MappedBatch
	var dead []*kgo.Record
	for i, rec := range records {
		if i == len(s.decoded) {
			s.decoded = append(s.decoded, new(schemas.MappedBatch))
		}
		b := s.decoded[i]
		if err := c.Decode(c.MappedBatch, rec.Value, b); err != nil {
			s.deps.Logger.Warn("undecodable mapped batch sent to dead letters", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
			dl, err := kafka.MessageDeadLetter(s.deps.Kafka, s.deps.Codecs, rec, schemas.DeadLetter{}, vocab.ReasonUndecodableMessage, err.Error(), s.deps.Clock())
			if err != nil {
				return err
			}
			dead = append(dead, dl)
			continue
		}
		if b.Kind == schemas.KindRows {
			rows = append(rows, b)
			rowBytes = append(rowBytes, len(rec.Value))
		} else {
			markers = append(markers, b)
		}
	}
	if err := kafka.ProduceSync(ctx, s.client, dead...); err != nil {
		return err
	}
	if len(rows) > 0 {
		start := s.deps.Clock()
		if err := s.deps.Store.StageBatches(ctx, rows); err != nil {
			return fmt.Errorf("stage %d batches: %w", len(rows), err)
		}
		s.stage.Observe(s.deps.Clock().Sub(start).Seconds())
		for i, b := range rows {
			s.rows.WithLabelValues(b.Ingestion).Add(float64(len(b.Events) + len(b.Metrics)))
			s.bytes.WithLabelValues(b.Ingestion).Add(float64(rowBytes[i]))
		}
	}
	for _, m := range markers {
		if err := s.finish(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// finish completes or fails one run and releases its day.
//
// The run's effect counters move only when this call's store transaction
// decided the run (the swap, or the update to FAILED, changed it): a
// redelivered END or FAILED marker, or the END of another extraction of a
// run that already ended, changes nothing in the store and counts as a
// duplicate end. A loader that dies between the commit and the count loses
// that one count; it never counts a run twice.
func (s *Service) finish(ctx context.Context, m *schemas.MappedBatch) error {
	log := s.deps.Logger.With("run_id", m.RunID, "ingestion", m.Ingestion, "day", m.Date, "project", m.Project)
	day := dispatch.Day{Project: m.Project, Ingestion: m.Ingestion, Date: m.Date}
	end := store.RunEnd{
		RunID: m.RunID, ExtractID: m.ExtractID, Project: m.Project, Ingestion: m.Ingestion, Type: m.Type,
		Date: m.Date, Trigger: vocab.Trigger(m.Trigger), Fence: m.Fence, Batches: m.Seq, Rows: m.RowCount,
		MaxRejectedShare: s.cfg.MaxRejectedShare, At: s.deps.Clock(), Fingerprint: m.Fingerprint,
	}
	outcome := store.Incomplete
	decided := false
	switch m.Kind {
	case schemas.KindEnd:
		var err error
		outcome, err = s.deps.Store.CompleteRun(ctx, end)
		mismatch := errors.Is(err, store.ErrCountMismatch)
		if err != nil && !mismatch {
			return fmt.Errorf("complete run %s of %s/%s: %w", m.RunID, m.Ingestion, m.Date, err)
		}
		decided = outcome == store.Swapped || outcome == store.Stale || outcome == store.TooManyRejected
		if outcome == store.Incomplete {
			// Batches precede their END on the partition, so a gap (or
			// counts that do not add up) will not heal by waiting: fail the
			// run loudly instead of holding the partition.
			msg := fmt.Sprintf("extraction %s ended with %d batches but not all reached the store", m.ExtractID, m.Seq)
			if mismatch {
				msg = err.Error()
			}
			decided, err = s.deps.Store.UpdateRunChanged(ctx, store.RunUpdate{
				RunID: m.RunID, Project: m.Project, Ingestion: m.Ingestion, Type: m.Type, Date: m.Date,
				Trigger: vocab.Trigger(m.Trigger), Fence: m.Fence, Status: vocab.StatusFailed, ErrorCategory: vocab.CategoryInternalWrite,
				ErrorMessage: msg, At: s.deps.Clock(),
			})
			if err != nil {
				return fmt.Errorf("record incomplete run %s: %w", m.RunID, err)
			}
		}
	case schemas.KindFailed:
		var err error
		decided, err = s.deps.Store.UpdateRunChanged(ctx, store.RunUpdate{
			RunID: m.RunID, Project: m.Project, Ingestion: m.Ingestion, Type: m.Type, Date: m.Date,
			Trigger: vocab.Trigger(m.Trigger), Fence: m.Fence, Status: vocab.StatusFailed, ErrorCategory: vocab.Category(m.ErrorCategory),
			ErrorMessage: m.ErrorMessage, At: s.deps.Clock(),
		})
		if err != nil {
			return fmt.Errorf("record failed run %s: %w", m.RunID, err)
		}
	default:
		return nil
	}
	name := outcomeName(m.Kind, outcome)
	attrs := []any{"outcome", name, "rows", m.RowCount}
	if decided {
		s.runs.WithLabelValues(name).Inc()
		if took, ok := s.countEffects(ctx, m, outcome, log); ok {
			s.duration.WithLabelValues(name).Observe(took.Seconds())
			attrs = append(attrs, "duration_ms", took.Milliseconds())
		}
		log.Info("run finished", attrs...)
	} else {
		s.duplicateEnds.Inc()
		log.Info("end of a run already decided; nothing changed", attrs...)
	}
	if outcome == store.Swapped || outcome == store.TooManyRejected {
		// This END decided the run: its rejected rows are due.
		s.relay.queue(m.Project, m.RunID)
	}
	if err := s.deps.Dispatcher.Release(ctx, day, m.RunID); err != nil {
		return fmt.Errorf("release day %s: %w", day, err)
	}
	if s.deps.OnDayDone != nil {
		s.deps.OnDayDone(ctx, end, outcome)
	}
	return nil
}

// countEffects counts the rows of a run this loader just decided, from the
// run as the store now holds it (a decided run changes no more): its loaded
// rows when the swap made them visible, its rejected rows by reason when it
// loaded or failed on them. It also returns how long the run took from its
// creation (its request) for the outcomes that end it with counts or a
// failure; a stale run says nothing new. A store that cannot answer costs
// these counts and the sample, and is logged.
func (s *Service) countEffects(ctx context.Context, m *schemas.MappedBatch, o store.Outcome, log *slog.Logger) (time.Duration, bool) {
	if m.Kind != schemas.KindFailed && o != store.Swapped && o != store.TooManyRejected {
		return 0, false
	}
	run, err := s.deps.Store.Run(ctx, m.Project, m.RunID)
	if err != nil {
		log.Warn("read the decided run; its rows are not counted", "err", err)
		return 0, false
	}
	if m.Kind == schemas.KindEnd {
		if o == store.Swapped {
			s.rowsLoaded.WithLabelValues(m.Ingestion).Add(float64(run.Mapped))
		}
		for reason, n := range run.Rejected {
			s.rowsRejected.WithLabelValues(m.Ingestion, reason).Add(float64(n))
		}
	}
	if run.CreatedAt.IsZero() {
		return 0, false
	}
	return max(s.deps.Clock().Sub(run.CreatedAt), 0), true
}

func outcomeName(kind string, o store.Outcome) string {
	if kind == schemas.KindFailed {
		return "failed"
	}
	switch o {
	case store.Swapped:
		return "swapped"
	case store.AlreadyDone:
		return "already_done"
	case store.Stale:
		return "stale"
	case store.TooManyRejected:
		return "too_many_rejected"
	default:
		return "incomplete"
	}
}
