// Package watcher re-counts, for a few days after a day's first load, the
// rows the ingestion's query returns for that day, and emits a reload
// candidate when the count moved by more than the threshold (either way) or
// the day's content fingerprint changed with the same count.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"time"

	"cloud.google.com/go/civil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// Config tunes the watcher.
type Config struct {
	// Days is how long after its first load a day is watched.
	Days int
	// Interval is the least time between two counts of one day.
	Interval time.Duration
	// Threshold is the relative count change that reloads (0.05 = 5%).
	Threshold float64
	// Tick is how often the watcher looks for days due a count.
	Tick time.Duration
	// Parallel bounds concurrent counts overall; each connection's own
	// max_concurrency bounds them per warehouse.
	Parallel int
}

func (c *Config) defaults() {
	if c.Days == 0 {
		c.Days = 3
	}
	if c.Interval == 0 {
		c.Interval = time.Hour
	}
	if c.Threshold == 0 {
		c.Threshold = 0.05
	}
	if c.Tick == 0 {
		c.Tick = time.Minute
	}
	if c.Parallel == 0 {
		c.Parallel = 4
	}
}

// Deps are the watcher's collaborators.
type Deps struct {
	Kafka    kafka.Config
	Codecs   *schemas.Codecs
	Settings *config.File
	Store    store.Store
	State    *state.State
	Sources  *warehouse.Pool
	Logger   *slog.Logger
	Clock    func() time.Time
	Registry prometheus.Registerer

	// Dispatcher says whether a day's run is in flight; it needs no Kafka
	// client.
	Dispatcher *dispatch.Dispatcher
}

// Service is a running watcher.
type Service struct {
	cfg    Config
	deps   Deps
	client *kgo.Client

	candidates *prometheus.CounterVec
	counts     prometheus.Counter
}

// New builds a watcher and its producer.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg.defaults()
	if deps.Codecs == nil || deps.Settings == nil || deps.Store == nil || deps.State == nil || deps.Dispatcher == nil || deps.Sources == nil {
		return nil, errors.New("watcher: codecs, settings, store, state, dispatcher and sources are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	s := &Service{cfg: cfg, deps: deps,
		candidates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_watcher_reload_candidates_total", Help: "Days found changed in the warehouse, by reason."}, []string{"reason"}),
		counts:     prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_watcher_counts_total", Help: "Warehouse re-counts run."}),
	}
	if deps.Registry != nil {
		for _, c := range []prometheus.Collector{s.candidates, s.counts} {
			if err := deps.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register watcher metrics: %w", err)
			}
		}
	}
	cl, err := kafka.NewClient(deps.Kafka, "watcher", deps.Logger, deps.Registry)
	if err != nil {
		return nil, err
	}
	s.client = cl
	return s, nil
}

// Run watches until ctx is cancelled.
func (s *Service) Run(ctx context.Context) error {
	defer s.client.Close()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		if err := s.Check(ctx); err != nil && ctx.Err() == nil {
			s.deps.Logger.Error("watch loaded days", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check re-counts every watched day that is due and emits the candidates.
func (s *Service) Check(ctx context.Context) error {
	now := s.deps.Clock()
	days, err := s.deps.Store.Days(ctx, store.DayFilter{LoadedSince: now.Add(-time.Duration(s.cfg.Days) * 24 * time.Hour)})
	if err != nil {
		return fmt.Errorf("list watched days: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Parallel)
	for _, d := range days {
		if d.Status != vocab.StatusSuccessful && d.Status != vocab.StatusLoadedEmpty {
			continue
		}
		if d.WarehouseAt != nil && d.LastLoadedAt != nil && d.WarehouseAt.After(*d.LastLoadedAt) && now.Sub(*d.WarehouseAt) < s.cfg.Interval {
			continue
		}
		g.Go(func() error {
			if err := s.checkDay(gctx, d); err != nil {
				s.deps.Logger.Warn("re-count day", "ingestion", d.Ingestion, "day", d.Date, "project", d.Project, "err", err)
			}
			return nil
		})
	}
	return g.Wait()
}

func (s *Service) checkDay(ctx context.Context, d store.Day) error {
	ing, ok := s.deps.Settings.Ingestion(d.Project, d.Ingestion)
	if !ok {
		return nil
	}
	key := dispatch.Day{Project: d.Project, Ingestion: d.Ingestion, Date: d.Date}
	if busy, err := s.deps.Dispatcher.Busy(ctx, key); err != nil || busy {
		return err // a run of the day is in flight; count after it
	}
	day, err := civil.ParseDate(d.Date)
	if err != nil {
		return err
	}
	src, err := s.deps.Sources.Source(ctx, ing.Connection)
	if err != nil {
		return err
	}
	count, err := src.Count(ctx, ing.Query, day)
	if err != nil {
		return err
	}
	fingerprint, err := src.Fingerprint(ctx, ing.Query, day)
	if err != nil && !errors.Is(err, warehouse.ErrUnsupported) {
		return err
	}
	s.counts.Inc()
	now := s.deps.Clock()
	if err := s.deps.Store.RecordWarehouseCount(ctx, d.Project, d.Ingestion, d.Date, count, fingerprint, now); err != nil {
		return err
	}
	reason := ""
	switch {
	case Changed(d.Extracted, count, s.cfg.Threshold):
		reason = "count"
	case count == d.Extracted && fingerprint != "" && baseline(d) != "" && fingerprint != baseline(d):
		reason = "content"
	}
	if reason == "" {
		return nil
	}
	// One candidate per observed change, however often it is seen again
	// before the reload lands.
	first, err := s.deps.State.Once(ctx, "reload-candidate:"+key.String()+":"+strconv.FormatInt(count, 10)+":"+fingerprint, s.cfg.Interval)
	if err != nil || !first {
		return err
	}
	c := schemas.ReloadCandidate{
		Project: d.Project, Ingestion: d.Ingestion, Date: d.Date, Reason: reason,
		LoadedCount: d.Extracted, WarehouseCount: count, LoadedFingerprint: baseline(d),
		WarehouseFingerprint: fingerprint, DetectedAt: now.UnixMilli(),
	}
	data, err := s.deps.Codecs.Encode(s.deps.Codecs.ReloadCandidate, &c)
	if err != nil {
		return fmt.Errorf("encode reload candidate: %w", err)
	}
	if err := kafka.ProduceSync(ctx, s.client, &kgo.Record{
		Topic: s.deps.Kafka.Topic(schemas.TopicReloadCandidates), Key: kafka.DayKey(d.Project, d.Ingestion, d.Date), Value: data,
	}); err != nil {
		return err
	}
	s.candidates.WithLabelValues(reason).Inc()
	s.deps.Logger.Info("day changed in the warehouse, reload requested", "ingestion", d.Ingestion, "day", d.Date,
		"project", d.Project, "reason", reason, "loaded", d.Extracted, "warehouse", count)
	return nil
}

// baseline is the fingerprint the day's loaded rows are compared with: the
// one taken at load when known, else the first one watched after the load.
func baseline(d store.Day) string {
	if d.Fingerprint != "" {
		return d.Fingerprint
	}
	if d.WarehouseAt != nil && d.LastLoadedAt != nil && d.WarehouseAt.After(*d.LastLoadedAt) {
		return d.WarehouseFinger
	}
	return ""
}

// Changed reports whether a count moved from loaded to now by more than
// threshold, relative to loaded. Rows appearing for an empty day count as
// a change.
func Changed(loaded, now int64, threshold float64) bool {
	if loaded == now {
		return false
	}
	if loaded == 0 {
		return true
	}
	return math.Abs(float64(now-loaded))/float64(loaded) > threshold
}
