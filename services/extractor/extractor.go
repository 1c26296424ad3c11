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
//
// A day is streamed once per run. Its run is recorded DOWNLOAD_COMPLETED
// before the request's offset is committed, and a request whose run is
// there (or later) is skipped. A partition revoked from this extractor
// stops its extractions before its offsets move. A resumable source's
// progress is checkpointed with the run after each acknowledged batch, so
// a crashed or moved extraction continues where it stood, under the same
// extract id, instead of running the query again.
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
	"github.com/sluicehq/sluice/pkg/vocab"
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
	// before the run fails. Each attempt is a fresh extraction, except on a
	// resumable source (Snowflake) once a batch was acknowledged: then it
	// continues from the last acknowledged batch, on the same query.
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
	cfg      Config
	deps     Deps
	client   *kgo.Client
	commits  *commitTracker
	inflight *inflight
	metrics  metrics

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
	s := &Service{cfg: cfg, deps: deps, commits: newCommitTracker(), inflight: newInflight(), slots: map[string]*warehouse.QuerySlots{}}
	s.metrics = metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_extractor_rows_total", Help: "Rows extracted from warehouses: a work counter, at least once (an extraction redone after a crash or a redelivery counts again); rows loaded once are sluice_loader_rows_loaded_total."}, []string{"ingestion"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_extractor_runs_total", Help: "Extractions finished, by outcome: a work counter, at least once (a redone extraction counts again); runs decided once are sluice_loader_runs_total."}, []string{"outcome"}),
		queryTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_extractor_query_seconds", Help: "Time to stream one day's query.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16)}, []string{"connection"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_extractor_bytes_total", Help: "Avro bytes of raw-rows batches produced: a work counter, at least once."}, []string{"ingestion"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_extractor_requests_rejected_total",
			Help: "Ingest requests sent to the dead-letter topic, by reason (unknown_ingestion has no day to show in the status): a work counter, at least once (a redelivered request counts again)."}, []string{"reason"}),
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
		// A poll's requests are registered in flight before a rebalance may
		// run, so a revocation sees (and stops) every one of them.
		kgo.BlockRebalanceOnPoll(),
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
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer cl.AllowRebalance()
		for {
			f := cl.PollRecords(gctx, 100)
			if f.IsClientClosed() || gctx.Err() != nil {
				return nil
			}
			f.EachError(func(topic string, partition int32, err error) {
				s.deps.Logger.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
			})
			for _, rec := range f.Records() {
				s.commits.add(rec)
				jobCtx, finish := s.inflight.start(workCtx, rec)
				running.Add(1)
				go func() {
					defer running.Done()
					defer finish()
					if s.handle(jobCtx, rec) {
						s.commits.done(rec)
					}
				}()
			}
			cl.AllowRebalance()
		}
	})
loop:
	for {
		select {
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

// onRevoked runs before revoked partitions move to another extractor: it
// stops their extractions (waiting at most DrainTimeout), commits what
// finished, and forgets the rest, which the new owner redoes (a resumable
// one from its checkpoint).
func (s *Service) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	stopped, left := s.inflight.stop(revoked, s.cfg.DrainTimeout)
	if stopped+left > 0 {
		s.deps.Logger.Info("stopped the extractions of revoked partitions", "stopped", stopped, "still_running", left)
	}
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
		s.deadLetter(ctx, rec, schemas.IngestRequest{}, vocab.ReasonUndecodableRequest, err.Error())
		return true
	}
	ing, ok := s.deps.Settings.Ingestion(req.Project, req.Ingestion)
	if !ok {
		s.deadLetter(ctx, rec, req, vocab.ReasonUnknownIngestion, fmt.Sprintf("project %q has no ingestion %q", req.Project, req.Ingestion))
		return true
	}
	day, err := civil.ParseDate(req.Date)
	if err != nil {
		s.deadLetter(ctx, rec, req, vocab.ReasonBadDate, fmt.Sprintf("date %q is not YYYY-MM-DD", req.Date))
		s.recordRequestError(ctx, rec, req, ing, fmt.Sprintf("date %q is not YYYY-MM-DD", req.Date))
		return true
	}
	conn, ok := s.deps.Sources.Connection(ing.Connection)
	if !ok {
		s.deadLetter(ctx, rec, req, vocab.ReasonUnknownConnection, fmt.Sprintf("ingestion %q names unknown connection %q", ing.Name, ing.Connection))
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
	done, err := s.extracted(ctx, req)
	if err != nil {
		log.Warn("stopped while reading the run; the request will be redone", "err", err)
		return false
	}
	if done {
		// A redelivery (after a crash) or an old request read by a new
		// extractor group: its run's rows are on raw-rows already (or the
		// run is over), so streaming the day again would only cost the
		// customer and hand the loader a second extraction.
		log.Info("skip request of a run whose extraction finished")
		s.metrics.runs.WithLabelValues("skipped_finished").Inc()
		return true
	}

	p := s.resumeFrom(ctx, req, conn, log)
	for attempt := 1; ; attempt++ {
		release, err := s.acquire(ctx, conn)
		if err != nil {
			log.Warn("stopped while waiting for a query slot; the request will be redone", "err", err)
			return false
		}
		note := fmt.Sprintf("attempt %d", attempt)
		if p.from != nil {
			note += fmt.Sprintf(", resuming extraction %s at batch %d", p.extractID, p.seq)
		}
		s.updateRun(ctx, req, ing, vocab.StatusStarted, "", "", note)
		start := s.deps.Clock()
		resumed := p.from != nil
		rows, batches, err := s.extract(ctx, req, ing, conn, day, &p)
		release()
		s.metrics.queryTime.WithLabelValues(conn.Name).Observe(s.deps.Clock().Sub(start).Seconds())
		if err == nil {
			s.metrics.runs.WithLabelValues("ok").Inc()
			log.Info("extracted day", "rows", rows, "batches", batches, "extract_id", p.extractID, "resumed", resumed)
			return s.recordExtracted(ctx, req, ing, p, rows, batches, log)
		}
		if ctx.Err() != nil {
			log.Warn("extraction stopped before it finished; the request will be redone", "extract_id", p.extractID, "err", err)
			return false
		}
		if resumed && errors.Is(err, warehouse.ErrCursorExpired) {
			// The warehouse no longer keeps the result: the day starts
			// over, under a new extract id; this is no failed attempt.
			log.Warn("resumable result is gone; extracting the day anew", "extract_id", p.extractID, "err", err)
			s.dropCheckpoint(ctx, req, log)
			p = progress{}
			attempt--
			continue
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
		if err := s.produceFailed(ctx, req, p.extractID, batches, category, err.Error()); err != nil {
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

// extract streams one day onto raw-rows and closes it with END. It starts
// where p stands: from the start under a new extract id, or, for a
// resumable source, at p's cursor under p's extract id (re-sending the
// batches after the last checkpoint, identical, which the loader skips).
// As the broker acknowledges batches p moves forward, so a retry after a
// transient error continues too.
func (s *Service) extract(ctx context.Context, req schemas.IngestRequest, ing *config.Ingestion, conn config.Connection, day civil.Date, p *progress) (rows, batches int64, err error) {
	src, err := s.deps.Sources.Source(ctx, conn.Name)
	if err != nil {
		return 0, 0, err
	}
	resumable, ok := src.(warehouse.Resumable)
	if !ok || p.from == nil {
		// The query runs (again): its rows may come in another order, so
		// they get an extract id of their own, never batches that could
		// clash with an earlier attempt's under the same (extract_id, seq).
		*p = progress{extractID: runid.New()}
	}
	topic := s.deps.Kafka.Topic(schemas.TopicRawRows)
	key := kafka.DayKey(req.Project, req.Ingestion, req.Date)
	out := kafka.NewAsyncProducer(s.client)
	raw := schemas.RawBatch{
		RunID: req.RunID, ExtractID: p.extractID, Project: req.Project, Ingestion: req.Ingestion,
		Date: req.Date, Trigger: req.Trigger, Fence: req.Fence, Kind: schemas.KindRows,
	}
	if !p.fingerprinted {
		p.fingerprint, p.fingerprinted = s.fingerprint(ctx, src, req, ing, day), true
	}
	var cps *checkpoints
	if resumable != nil {
		cps = s.startCheckpoints(ctx, store.Checkpoint{Project: req.Project, RunID: req.RunID, ExtractID: p.extractID,
			NextSeq: p.seq, Rows: p.rows, Fingerprint: p.fingerprint})
		defer func() { p.advance(cps.close()) }()
	}
	batches, rows = p.seq, p.rows
	counter := s.metrics.rows.WithLabelValues(req.Ingestion)
	byteCounter := s.metrics.bytes.WithLabelValues(req.Ingestion)
	emit := func(b *warehouse.Batch, next warehouse.Cursor) error {
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
		var acked func()
		if cps != nil {
			nextSeq, rowsThrough := batches+1, rows+int64(b.Rows)
			acked = func() { cps.acked(nextSeq, rowsThrough, next) }
		}
		if err := out.ProduceAcked(ctx, &kgo.Record{Topic: topic, Key: key, Value: data}, acked); err != nil {
			return err
		}
		batches++
		rows += int64(b.Rows)
		counter.Add(float64(b.Rows))
		byteCounter.Add(float64(len(data)))
		return nil
	}
	var streamed int64
	if resumable != nil {
		streamed, err = resumable.StreamFrom(ctx, ing.Query, day, s.cfg.BatchRows, p.from, emit)
	} else {
		streamed, err = src.Stream(ctx, ing.Query, day, s.cfg.BatchRows, func(b *warehouse.Batch) error { return emit(b, warehouse.Cursor{}) })
	}
	if err != nil {
		_ = out.Wait(ctx)
		return rows, batches, err
	}
	if streamed != rows-p.rows {
		return rows, batches, fmt.Errorf("source reported %d rows but emitted %d", streamed, rows-p.rows)
	}
	end := raw
	end.Kind = schemas.KindEnd
	end.Seq = batches
	end.FirstRow = 0
	end.RowCount = rows
	end.Columns = nil
	end.Fingerprint = p.fingerprint
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

// fingerprint takes the day's fingerprint before its rows: a change racing
// the stream then shows as a change later (a spare reload), never as the
// baseline of rows that were not loaded (a missed one). "" when unknown.
func (s *Service) fingerprint(ctx context.Context, src warehouse.Source, req schemas.IngestRequest, ing *config.Ingestion, day civil.Date) string {
	fingerprint, err := src.Fingerprint(ctx, ing.Query, day)
	if err != nil {
		if !errors.Is(err, warehouse.ErrUnsupported) {
			s.deps.Logger.Warn("fingerprint day; the watcher will take the baseline", "run_id", req.RunID, "day", req.Date, "err", err)
		}
		return ""
	}
	return fingerprint
}

func (s *Service) produceFailed(ctx context.Context, req schemas.IngestRequest, extractID string, batches int64, category vocab.Category, message string) error {
	failed := schemas.RawBatch{
		RunID: req.RunID, ExtractID: extractID, Project: req.Project, Ingestion: req.Ingestion,
		Date: req.Date, Trigger: req.Trigger, Fence: req.Fence, Kind: schemas.KindFailed,
		Seq: batches, ErrorCategory: string(category), ErrorMessage: message,
	}
	data, err := s.deps.Codecs.Encode(s.deps.Codecs.RawBatch, &failed)
	if err != nil {
		return fmt.Errorf("encode failed marker: %w", err)
	}
	return kafka.ProduceSync(ctx, s.client, &kgo.Record{
		Topic: s.deps.Kafka.Topic(schemas.TopicRawRows), Key: kafka.DayKey(req.Project, req.Ingestion, req.Date), Value: data,
	})
}

func (s *Service) updateRun(ctx context.Context, req schemas.IngestRequest, ing *config.Ingestion, status vocab.Status, category vocab.Category, message, note string) {
	err := s.deps.Store.UpdateRun(ctx, store.RunUpdate{
		RunID: req.RunID, Project: req.Project, Ingestion: req.Ingestion, Type: ing.Type, Date: req.Date,
		Trigger: vocab.Trigger(req.Trigger), Fence: req.Fence, Status: status, ErrorCategory: category, ErrorMessage: message,
		Message: withReason(req.Reason, note), At: s.deps.Clock(),
	})
	if err != nil {
		// Progress notes are best effort; the loader writes the outcome.
		s.deps.Logger.Warn("record run progress", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "project", req.Project,
			"status", status, "err", err)
	}
}

func (s *Service) deadLetter(ctx context.Context, rec *kgo.Record, req schemas.IngestRequest, reason vocab.Reason, detail string) {
	s.metrics.rejected.WithLabelValues(string(reason)).Inc()
	s.deps.Logger.Warn("ingest request rejected", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date, "project", req.Project,
		"reason", reason, "detail", detail, "partition", rec.Partition, "offset", rec.Offset)
	run := schemas.DeadLetter{RunID: req.RunID, Project: req.Project, Ingestion: req.Ingestion, Date: req.Date}
	dl, err := kafka.MessageDeadLetter(s.deps.Kafka, s.deps.Codecs, rec, run, reason, detail, s.deps.Clock())
	if err == nil {
		err = kafka.ProduceSync(ctx, s.client, dl)
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

// extracted reports whether req's run is past its extraction: at
// DOWNLOAD_COMPLETED or later (which recordExtracted makes durable before
// the request's offset is committed), or over. The store is asked until it
// answers: guessing "not extracted" would stream the day a second time.
// An error only when ctx ends first.
func (s *Service) extracted(ctx context.Context, req schemas.IngestRequest) (bool, error) {
	backoff := s.cfg.RetryBackoff
	for {
		r, err := s.deps.Store.Run(ctx, req.Project, req.RunID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err == nil {
			return r.Status.Rank() >= vocab.StatusDownloaded.Rank(), nil
		}
		s.deps.Logger.Warn("read run before extracting; retrying", "run_id", req.RunID, "ingestion", req.Ingestion, "day", req.Date,
			"project", req.Project, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// recordExtracted makes "this run's extraction finished" durable (the
// run at DOWNLOAD_COMPLETED) before the request's offset may be committed,
// so a redelivery skips the day instead of streaming it again. The write is
// retried with backoff while the store is down, and outlives a revocation
// or shutdown by at most DrainTimeout: END is already on raw-rows, and the
// note is what keeps it the run's only one. It reports whether the offset
// may be committed.
func (s *Service) recordExtracted(ctx context.Context, req schemas.IngestRequest, ing *config.Ingestion, p progress, rows, batches int64, log *slog.Logger) bool {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(s.cfg.DrainTimeout, cancel) })
	defer stopGrace()
	backoff := s.cfg.RetryBackoff
	for {
		err := s.deps.Store.UpdateRun(wctx, store.RunUpdate{
			RunID: req.RunID, Project: req.Project, Ingestion: req.Ingestion, Type: ing.Type, Date: req.Date,
			Trigger: vocab.Trigger(req.Trigger), Fence: req.Fence, Status: vocab.StatusDownloaded,
			Message: withReason(req.Reason, fmt.Sprintf("%d rows in %d batches (extraction %s)", rows, batches, p.extractID)),
			At:      s.deps.Clock(),
		})
		if err == nil {
			break
		}
		log.Warn("record the finished extraction; retrying", "extract_id", p.extractID, "backoff", backoff, "err", err)
		select {
		case <-wctx.Done():
			log.Error("could not record the finished extraction; a redelivered request will extract the day again",
				"extract_id", p.extractID, "err", err)
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
	if p.from != nil {
		s.dropCheckpoint(wctx, req, log) // the status now keeps a redelivery away
	}
	return true
}
