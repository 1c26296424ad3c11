// Package extractor runs an ingestion's query for one day and streams its
// rows, typed and in bounded memory, as Avro batches onto raw-rows, closed
// by an END record with the row count (or a FAILED record with an error
// category a user can act on).
//
// An extractor can serve every connection or be dedicated to some
// connections or warehouse kinds; each selection consumes ingest-requests
// in its own consumer group, so a request for a warehouse no running
// extractor serves waits in Kafka (its day shows IMPORT_SCHEDULED) rather
// than being lost. Requests run concurrently, bounded per connection by the
// connection's max_concurrency, so one warehouse's slow query never holds
// up another's.
package extractor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/civil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// Config tunes one extractor.
type Config struct {
	// Connections and Kinds select what this extractor serves; empty
	// serves everything.
	Connections []string
	Kinds       []string
	BatchRows   int
	// MaxAttempts is how often a transient warehouse error is retried
	// (each attempt a fresh extraction) before the run fails.
	MaxAttempts  int
	RetryBackoff time.Duration
	// DrainTimeout bounds how long running extractions may finish after
	// the extractor is told to stop; unfinished ones are redone elsewhere.
	DrainTimeout time.Duration
}

// GroupName is the consumer group of a selection: extractors with the same
// selection share the work; different selections each see every request.
func (c Config) GroupName() string {
	if len(c.Connections) == 0 && len(c.Kinds) == 0 {
		return "sluice-extractor"
	}
	parts := []string{"sluice-extractor"}
	if len(c.Connections) > 0 {
		s := slices.Clone(c.Connections)
		slices.Sort(s)
		parts = append(parts, "conn="+strings.Join(s, "+"))
	}
	if len(c.Kinds) > 0 {
		s := slices.Clone(c.Kinds)
		slices.Sort(s)
		parts = append(parts, "kind="+strings.Join(s, "+"))
	}
	return strings.Join(parts, ".")
}

func (c *Config) defaults() {
	if c.BatchRows == 0 {
		c.BatchRows = 2000
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
}

// Deps are the extractor's collaborators.
type Deps struct {
	Kafka    kafka.Config
	Codecs   *schemas.Codecs
	Sources  *warehouse.Pool
	Settings *config.File
	Store    store.Store
	Logger   *slog.Logger
	Clock    func() time.Time
	Registry prometheus.Registerer

	// Dispatcher claims the day of a request published by an outside
	// system (empty run_id), so one run per day and fencing hold for it
	// too; without it such requests run unleased. It needs no Kafka client.
	Dispatcher *dispatch.Dispatcher
}

// Service is a running extractor.
type Service struct {
	cfg     Config
	deps    Deps
	client  *kgo.Client
	commits *commitTracker
	metrics metrics

	slotsMu sync.Mutex
	slots   map[string]*warehouse.QuerySlots // per connection, max_concurrency wide
}

type metrics struct {
	rows      *prometheus.CounterVec
	runs      *prometheus.CounterVec
	queryTime *prometheus.HistogramVec
	bytes     *prometheus.CounterVec
	rejected  *prometheus.CounterVec
}

// New builds an extractor and its Kafka client. Offsets of
// ingest-requests are committed by the extractor as requests complete, in
// order per partition.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg.defaults()
	if deps.Codecs == nil || deps.Sources == nil || deps.Settings == nil || deps.Store == nil {
		return nil, errors.New("extractor: codecs, sources, settings and store are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	s := &Service{cfg: cfg, deps: deps, commits: newCommitTracker(), slots: map[string]*warehouse.QuerySlots{}}
	s.metrics = metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_extractor_rows_total", Help: "Rows extracted from warehouses."}, []string{"ingestion"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_extractor_runs_total", Help: "Extractions finished, by outcome."}, []string{"outcome"}),
		queryTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_extractor_query_seconds", Help: "Time to stream one day's query.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16)}, []string{"connection"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_extractor_bytes_total", Help: "Avro bytes of raw-rows batches produced."}, []string{"ingestion"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_extractor_requests_rejected_total",
			Help: "Ingest requests sent to the dead-letter topic, by reason (unknown_ingestion has no day to show in the status)."}, []string{"reason"}),
	}
	if deps.Registry != nil {
		for _, c := range []prometheus.Collector{s.metrics.rows, s.metrics.runs, s.metrics.queryTime, s.metrics.bytes, s.metrics.rejected} {
			if err := deps.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register extractor metrics: %w", err)
			}
		}
	}
	cl, err := kafka.NewClient(deps.Kafka, "extractor", deps.Logger, deps.Registry, append(kafka.GroupLiveness(),
		kgo.ConsumerGroup(cfg.GroupName()),
		kgo.ConsumeTopics(deps.Kafka.Topic(schemas.TopicIngestRequests)),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onRevoked),
		// Encoded batches wait here until the broker acknowledges them; 16 MiB
		// (about 30 batches of 2,000 rows) keeps the broker busy and the
		// extractor's heap small whatever the day's size.
		kgo.MaxBufferedBytes(16<<20),
	)...)
	if err != nil {
		return nil, err
	}
	s.client = cl
	return s, nil
}

// serves reports whether this extractor handles the connection.
func (s *Service) serves(conn config.Connection) bool {
	if len(s.cfg.Connections) > 0 && !slices.Contains(s.cfg.Connections, conn.Name) {
		return false
	}
	if len(s.cfg.Kinds) > 0 && !slices.Contains(s.cfg.Kinds, conn.Kind) {
		return false
	}
	return true
}

// Run consumes requests until ctx is cancelled, then lets running
// extractions finish (bounded by DrainTimeout) and commits what completed.
func (s *Service) Run(ctx context.Context) error {
	cl := s.client
	// Closing leaves the group at once, so a restarted or scaled-down
	// extractor's partitions move now, not after the session timeout.
	defer cl.Close()
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var running sync.WaitGroup

	commitTick := time.NewTicker(time.Second)
	defer commitTick.Stop()
	polled := make(chan kgo.Fetches)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(polled)
		for {
			f := cl.PollRecords(gctx, 100)
			if f.IsClientClosed() || gctx.Err() != nil {
				return nil
			}
			select {
			case polled <- f:
			case <-gctx.Done():
				return nil
			}
		}
	})
loop:
	for {
		select {
		case f, ok := <-polled:
			if !ok {
				break loop
			}
			f.EachError(func(topic string, partition int32, err error) {
				s.deps.Logger.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
			})
			for _, rec := range f.Records() {
				s.commits.add(rec)
				running.Add(1)
				go func() {
					defer running.Done()
					if s.handle(workCtx, rec) {
						s.commits.done(rec)
					}
				}()
			}
		case <-commitTick.C:
			s.commit(ctx)
		case <-ctx.Done():
			break loop
		}
	}
	_ = g.Wait()

	// Drain: let running extractions finish, bounded.
	finished := make(chan struct{})
	go func() { running.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(s.cfg.DrainTimeout):
		cancelWork()
		<-finished
	}
	s.commit(context.WithoutCancel(ctx))
	return nil
}

func (s *Service) commit(ctx context.Context) {
	offsets := s.commits.committable()
	if len(offsets) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s.client.CommitOffsetsSync(cctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			s.deps.Logger.Warn("commit ingest-request offsets", "err", err)
		}
	})
}

func (s *Service) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	offsets := s.commits.committable()
	if len(offsets) > 0 {
		cl.CommitOffsetsSync(ctx, offsets, nil)
	}
	s.commits.forget(revoked)
}

// handle processes one request; it reports whether the request's offset
// may be committed (false only when stopped before finishing).
func (s *Service) handle(ctx context.Context, rec *kgo.Record) bool {
	log := s.deps.Logger
	var req schemas.IngestRequest
	if err := s.deps.Codecs.Decode(s.deps.Codecs.IngestRequest, rec.Value, &req); err != nil {
		s.deadLetter(ctx, rec, schemas.IngestRequest{}, "undecodable_request", err.Error())
		return true
	}
	ing, ok := s.deps.Settings.Ingestion(req.Project, req.Ingestion)
	if !ok {
		s.deadLetter(ctx, rec, req, "unknown_ingestion", fmt.Sprintf("project %q has no ingestion %q", req.Project, req.Ingestion))
		return true
	}
	day, err := civil.ParseDate(req.Date)
	if err != nil {
		s.deadLetter(ctx, rec, req, "bad_date", fmt.Sprintf("date %q is not YYYY-MM-DD", req.Date))
		s.recordRequestError(ctx, rec, req, ing, fmt.Sprintf("date %q is not YYYY-MM-DD", req.Date))
		return true
	}
	conn, ok := s.deps.Sources.Connection(ing.Connection)
	if !ok {
		s.deadLetter(ctx, rec, req, "unknown_connection", fmt.Sprintf("ingestion %q names unknown connection %q", ing.Name, ing.Connection))
		return true
	}
	if !s.serves(conn) {
		return true // another extractor group serves this warehouse
	}
	if req.RunID == "" {
		// Published by an outside system: lease the day as the planner would.
		if proceed, commit := s.claimOutside(ctx, rec, &req); !proceed {
			return commit
		}
	}
	log = log.With("run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "project", req.Project)
	if s.finished(ctx, req) {
		// A redelivery (after a crash) or an old request read by a new
		// extractor group: its run is over, so querying the warehouse again
		// would only cost the customer.
		log.Info("skip request of a finished run")
		s.metrics.runs.WithLabelValues("skipped_finished").Inc()
		return true
	}

	for attempt := 1; ; attempt++ {
		extractID := runid.New()
		release, err := s.acquire(ctx, conn)
		if err != nil {
			log.Warn("stopped while waiting for a query slot; the request will be redone", "err", err)
			return false
		}
		s.updateRun(ctx, req, ing, store.StatusStarted, "", "", fmt.Sprintf("attempt %d", attempt))
		start := s.deps.Clock()
		rows, batches, err := s.extract(ctx, req, ing, conn, day, extractID)
		release()
		s.metrics.queryTime.WithLabelValues(conn.Name).Observe(s.deps.Clock().Sub(start).Seconds())
		if err == nil {
			s.metrics.runs.WithLabelValues("ok").Inc()
			s.updateRun(ctx, req, ing, store.StatusDownloaded, "", "", fmt.Sprintf("%d rows in %d batches", rows, batches))
			log.Info("extracted day", "rows", rows, "batches", batches, "extract_id", extractID)
			return true
		}
		if ctx.Err() != nil {
			log.Warn("extraction stopped before it finished; the request will be redone", "err", err)
			return false
		}
		category, transient := warehouse.Categorize(err)
		if transient && attempt < s.cfg.MaxAttempts {
			backoff := s.cfg.RetryBackoff << (attempt - 1)
			log.Warn("extraction failed, retrying", "category", category, "attempt", attempt, "backoff", backoff, "err", err)
			select {
			case <-ctx.Done():
				return false
			case <-time.After(backoff):
			}
			continue
		}
		s.metrics.runs.WithLabelValues("failed").Inc()
		log.Error("extraction failed", "category", category, "attempt", attempt, "err", err)
		if err := s.produceFailed(ctx, req, extractID, batches, category, err.Error()); err != nil {
			log.Error("publish failed run", "err", err)
			return false
		}
		return true
	}
}

// acquire takes one of the connection's max_concurrency query slots, so
// one warehouse runs at most that many of this extractor's queries at
// once whatever its source does; requests beyond wait here (their day
// still IMPORT_SCHEDULED) while other connections' requests go ahead.
func (s *Service) acquire(ctx context.Context, conn config.Connection) (release func(), err error) {
	s.slotsMu.Lock()
	slots, ok := s.slots[conn.Name]
	if !ok {
		slots = warehouse.NewQuerySlots(conn.MaxConcurrency, 0) // the source applies the query timeout
		s.slots[conn.Name] = slots
	}
	s.slotsMu.Unlock()
	_, release, err = slots.Acquire(ctx)
	return release, err
}

// extract streams one day onto raw-rows and closes it with END.
func (s *Service) extract(ctx context.Context, req schemas.IngestRequest, ing *config.Ingestion, conn config.Connection, day civil.Date, extractID string) (rows, batches int64, err error) {
	src, err := s.deps.Sources.Source(ctx, conn.Name)
	if err != nil {
		return 0, 0, err
	}
	topic := s.deps.Kafka.Topic(schemas.TopicRawRows)
	key := kafka.DayKey(req.Project, req.Ingestion, req.Date)
	out := kafka.NewAsyncProducer(s.client)
	raw := schemas.RawBatch{
		RunID: req.RunID, ExtractID: extractID, Project: req.Project, Ingestion: req.Ingestion,
		Date: req.Date, Trigger: req.Trigger, Fence: req.Fence, Kind: schemas.KindRows,
	}
	// The fingerprint is taken before the rows: a change racing the
	// stream then shows as a change later (a spare reload), never as the
	// baseline of rows that were not loaded (a missed one).
	fingerprint, err := src.Fingerprint(ctx, ing.Query, day)
	if err != nil {
		if !errors.Is(err, warehouse.ErrUnsupported) {
			s.deps.Logger.Warn("fingerprint day; the watcher will take the baseline", "run_id", req.RunID, "day", req.Date, "err", err)
		}
		fingerprint = ""
	}
	counter := s.metrics.rows.WithLabelValues(req.Ingestion)
	byteCounter := s.metrics.bytes.WithLabelValues(req.Ingestion)
	total, err := src.Stream(ctx, ing.Query, day, s.cfg.BatchRows, func(b *warehouse.Batch) error {
		if b.Rows == 0 {
			return nil
		}
		raw.Seq = batches
		raw.FirstRow = rows
		raw.RowCount = int64(b.Rows)
		raw.Columns = b.Columns
		data, err := s.deps.Codecs.Encode(s.deps.Codecs.RawBatch, &raw)
		if err != nil {
			return fmt.Errorf("encode batch %d: %w", batches, err)
		}
		if err := out.Produce(ctx, &kgo.Record{Topic: topic, Key: key, Value: data}); err != nil {
			return err
		}
		batches++
		rows += int64(b.Rows)
		counter.Add(float64(b.Rows))
		byteCounter.Add(float64(len(data)))
		return nil
	})
	if err != nil {
		_ = out.Wait(ctx)
		return rows, batches, err
	}
	if total != rows {
		return rows, batches, fmt.Errorf("source reported %d rows but emitted %d", total, rows)
	}
	end := raw
	end.Kind = schemas.KindEnd
	end.Seq = batches
	end.FirstRow = 0
	end.RowCount = rows
	end.Columns = nil
	end.Fingerprint = fingerprint
	data, err := s.deps.Codecs.Encode(s.deps.Codecs.RawBatch, &end)
	if err != nil {
		return rows, batches, fmt.Errorf("encode end: %w", err)
	}
	if err := out.Produce(ctx, &kgo.Record{Topic: topic, Key: key, Value: data}); err != nil {
		return rows, batches, err
	}
	if err := out.Wait(ctx); err != nil {
		return rows, batches, err
	}
	return rows, batches, nil
}

func (s *Service) produceFailed(ctx context.Context, req schemas.IngestRequest, extractID string, batches int64, category, message string) error {
	failed := schemas.RawBatch{
		RunID: req.RunID, ExtractID: extractID, Project: req.Project, Ingestion: req.Ingestion,
		Date: req.Date, Trigger: req.Trigger, Fence: req.Fence, Kind: schemas.KindFailed,
		Seq: batches, ErrorCategory: category, ErrorMessage: message,
	}
	data, err := s.deps.Codecs.Encode(s.deps.Codecs.RawBatch, &failed)
	if err != nil {
		return fmt.Errorf("encode failed marker: %w", err)
	}
	return kafka.ProduceSync(ctx, s.client, &kgo.Record{
		Topic: s.deps.Kafka.Topic(schemas.TopicRawRows), Key: kafka.DayKey(req.Project, req.Ingestion, req.Date), Value: data,
	})
}

func (s *Service) updateRun(ctx context.Context, req schemas.IngestRequest, ing *config.Ingestion, status, category, message, note string) {
	err := s.deps.Store.UpdateRun(ctx, store.RunUpdate{
		RunID: req.RunID, Project: req.Project, Ingestion: req.Ingestion, Type: ing.Type, Date: req.Date,
		Trigger: req.Trigger, Fence: req.Fence, Status: status, ErrorCategory: category, ErrorMessage: message,
		Message: withReason(req.Reason, note), At: s.deps.Clock(),
	})
	if err != nil {
		// Progress notes are best effort; the loader writes the outcome.
		s.deps.Logger.Warn("record run progress", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "project", req.Project,
			"status", status, "err", err)
	}
}

func (s *Service) deadLetter(ctx context.Context, rec *kgo.Record, req schemas.IngestRequest, reason, detail string) {
	s.metrics.rejected.WithLabelValues(reason).Inc()
	s.deps.Logger.Warn("ingest request rejected", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "project", req.Project,
		"reason", reason, "detail", detail, "partition", rec.Partition, "offset", rec.Offset)
	dl := schemas.DeadLetter{
		SourceTopic: rec.Topic, Reason: reason, Detail: detail, RunID: req.RunID, Project: req.Project,
		Ingestion: req.Ingestion, Date: req.Date, Position: -1, Values: map[string]string{}, Raw: rec.Value,
		At: s.deps.Clock().UnixMilli(),
	}
	data, err := s.deps.Codecs.Encode(s.deps.Codecs.DeadLetter, &dl)
	if err == nil {
		err = kafka.ProduceSync(ctx, s.client, &kgo.Record{Topic: s.deps.Kafka.Topic(schemas.TopicDeadLetter), Key: rec.Key, Value: data})
	}
	if err != nil {
		s.deps.Logger.Error("publish dead letter", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "reason", reason, "err", err)
	}
}

// withReason keeps why the run was requested (a reload's count or content
// change, say) in front of the progress note, so the status shows it.
func withReason(reason, note string) string {
	if reason == "" {
		return note
	}
	return reason + "; " + note
}

// finished reports whether req's run already reached a final status. A
// store error counts as not finished: extracting again is safe, only slower.
func (s *Service) finished(ctx context.Context, req schemas.IngestRequest) bool {
	r, err := s.deps.Store.Run(ctx, req.Project, req.RunID)
	return err == nil && store.IsTerminal(r.Status)
}
