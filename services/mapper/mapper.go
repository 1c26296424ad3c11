// Package mapper turns raw warehouse rows into canonical events and
// metrics. Each raw-rows batch becomes one mapped-events batch with the
// same key and sequence number, carrying its per-reason reject counts and
// every rejected row with its reason and original values; the loader
// stages those with the batch and publishes them to the dead-letter topic
// once the run is decided, so a redelivered batch or a redone extraction
// does not dead-letter a row twice. END and FAILED markers pass through,
// so the loader sees a run's records and then its end, in order. Per run:
// extracted = mapped + rejected. Only a message that does not decode goes
// to the dead-letter topic from here: it has no run.
package mapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/mapping"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// Config tunes the mapper.
type Config struct {
	Group          string // consumer group, default sluice-mapper
	MaxPollRecords int
	// DrainTimeout bounds the poll in hand once told to stop (default 30s).
	DrainTimeout time.Duration
}

// Deps are the mapper's collaborators.
type Deps struct {
	Kafka    kafka.Config
	Codecs   *schemas.Codecs
	Settings *config.File
	Logger   *slog.Logger
	Clock    func() time.Time
	Registry prometheus.Registerer
}

// Service is a running mapper.
type Service struct {
	cfg    Config
	deps   Deps
	client *kgo.Client

	mu      sync.Mutex
	mappers map[string]*mapping.Mapper // by project/ingestion

	// Reused across batches: the loop is single-threaded.
	raw    schemas.RawBatch
	mapped schemas.MappedBatch

	rows     *prometheus.CounterVec
	rejected *prometheus.CounterVec
}

// New builds a mapper and its Kafka client.
func New(cfg Config, deps Deps) (*Service, error) {
	if cfg.Group == "" {
		cfg.Group = "sluice-mapper"
	}
	if cfg.MaxPollRecords == 0 {
		// A poll's mapped records are held until all are acknowledged:
		// 16 batches of 2,000 rows is about 11 MiB.
		cfg.MaxPollRecords = 16
	}
	if deps.Codecs == nil || deps.Settings == nil {
		return nil, errors.New("mapper: codecs and settings are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	s := &Service{cfg: cfg, deps: deps, mappers: map[string]*mapping.Mapper{},
		rows:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_mapper_rows_total", Help: "Rows mapped, by ingestion and outcome: a work counter, at least once (a redelivered or re-extracted batch counts again); rows loaded once are sluice_loader_rows_loaded_total."}, []string{"ingestion", "outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_mapper_rejected_rows_total", Help: "Rows rejected, by reason: a work counter, at least once (a redelivered or re-extracted batch counts again); rejected rows of each run once are sluice_loader_rows_rejected_total."}, []string{"ingestion", "reason"}),
	}
	if deps.Registry != nil {
		for _, c := range []prometheus.Collector{s.rows, s.rejected} {
			if err := deps.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register mapper metrics: %w", err)
			}
		}
	}
	// Bound what a fetch buffers ahead of the polls: raw rows compress about
	// 3x, so 4 MiB fetched is some 12 MiB of records in memory.
	opts := append(kafka.GroupOpts(s.consumerConfig()), kgo.FetchMaxBytes(4<<20), kgo.FetchMaxPartitionBytes(4<<20))
	cl, err := kafka.NewClient(deps.Kafka, "mapper", deps.Logger, deps.Registry, opts...)
	if err != nil {
		return nil, err
	}
	s.client = cl
	return s, nil
}

func (s *Service) consumerConfig() kafka.ConsumerConfig {
	return kafka.ConsumerConfig{
		Group:          s.cfg.Group,
		Topics:         []string{s.deps.Kafka.Topic(schemas.TopicRawRows)},
		MaxPollRecords: s.cfg.MaxPollRecords,
		DrainTimeout:   s.cfg.DrainTimeout,
	}
}

// Run maps until ctx is cancelled.
func (s *Service) Run(ctx context.Context) error {
	defer s.client.Close()
	return kafka.Consume(ctx, s.client, s.consumerConfig(), s.deps.Logger, s.handle)
}

// handle maps one poll's records, producing each one's results as soon as
// they are mapped (the broker acknowledges them while the next records are
// mapped), and returns only when every output is acknowledged, so offsets
// are committed after. Records of one partition keep their order: franz-go
// produces them in the order given, idempotently.
func (s *Service) handle(ctx context.Context, records []*kgo.Record) error {
	out := kafka.NewAsyncProducer(s.client)
	for _, rec := range records {
		produced, err := s.mapRecord(rec)
		if err != nil {
			_ = out.Wait(ctx)
			return err
		}
		for _, r := range produced {
			if err := out.Produce(ctx, r); err != nil {
				_ = out.Wait(ctx)
				return err
			}
		}
	}
	return out.Wait(ctx)
}

// mapRecord returns the records one raw-rows record turns into.
func (s *Service) mapRecord(rec *kgo.Record) ([]*kgo.Record, error) {
	c := s.deps.Codecs
	raw := &s.raw
	if err := c.Decode(c.RawBatch, rec.Value, raw); err != nil {
		// A poison message must not block its partition.
		dl, derr := kafka.MessageDeadLetter(s.deps.Kafka, c, rec, schemas.DeadLetter{}, vocab.ReasonUndecodableMessage, err.Error(), s.deps.Clock())
		return []*kgo.Record{dl}, derr
	}
	m := &s.mapped
	*m = schemas.MappedBatch{
		RunID: raw.RunID, ExtractID: raw.ExtractID, Project: raw.Project, Ingestion: raw.Ingestion,
		Date: raw.Date, Trigger: raw.Trigger, Fence: raw.Fence, Kind: raw.Kind, Seq: raw.Seq,
		RowCount: raw.RowCount, ErrorCategory: raw.ErrorCategory, ErrorMessage: raw.ErrorMessage, Fingerprint: raw.Fingerprint,
		Events: m.Events[:0], Metrics: m.Metrics[:0], Rejected: m.Rejected[:0], RejectedRows: m.RejectedRows[:0],
	}
	if ing, ok := s.deps.Settings.Ingestion(raw.Project, raw.Ingestion); ok {
		m.Type = ing.Type
	}
	if raw.Kind == schemas.KindRows {
		mp, err := s.mapperFor(raw.Project, raw.Ingestion)
		if err != nil {
			// The ingestion is gone or its mapping broke: fail the run
			// visibly rather than drop its rows.
			m.Kind = schemas.KindFailed
			m.ErrorCategory = string(vocab.CategorySetup)
			m.ErrorMessage = err.Error()
		} else {
			mp.Map(raw, m, func(r mapping.Rejection) {
				values := r.Values()
				if values == nil {
					values = map[string]string{}
				}
				m.RejectedRows = append(m.RejectedRows, schemas.RejectedRow{
					Position: r.Position, Reason: r.Reason, Detail: r.Detail, Values: values})
			})
			mapped := len(m.Events) + len(m.Metrics)
			s.rows.WithLabelValues(raw.Ingestion, "mapped").Add(float64(mapped))
			for _, rc := range m.Rejected {
				s.rows.WithLabelValues(raw.Ingestion, "rejected").Add(float64(rc.Count))
				s.rejected.WithLabelValues(raw.Ingestion, rc.Reason).Add(float64(rc.Count))
			}
		}
	}
	data, err := c.Encode(c.MappedBatch, m)
	if err != nil {
		return nil, fmt.Errorf("encode mapped batch %d of run %s: %w", m.Seq, m.RunID, err)
	}
	return []*kgo.Record{{Topic: s.deps.Kafka.Topic(schemas.TopicMappedEvents), Key: rec.Key, Value: data}}, nil
}

func (s *Service) mapperFor(project, ingestion string) (*mapping.Mapper, error) {
	key := project + "/" + ingestion
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.mappers[key]; ok {
		return m, nil
	}
	ing, ok := s.deps.Settings.Ingestion(project, ingestion)
	if !ok {
		return nil, fmt.Errorf("project %q has no ingestion %q in this mapper's config", project, ingestion)
	}
	p, ok := s.deps.Settings.Project(project)
	if !ok {
		return nil, fmt.Errorf("unknown project %q", project)
	}
	m, err := mapping.New(*ing, p.IDTypes)
	if err != nil {
		return nil, fmt.Errorf("compile mapping of %s: %w", key, err)
	}
	s.mappers[key] = m
	return m, nil
}
