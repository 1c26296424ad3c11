// Package planner decides which days load when. It turns daily schedules
// (after checking that the day's data is present), reload candidates from
// the watcher, and queued requests into runs through the Dispatcher, which
// keeps one run per day in flight.
package planner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cloud.google.com/go/civil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// Config tunes the planner.
type Config struct {
	// Tick is how often schedules and queued requests are looked at.
	Tick time.Duration
	// CatchUpDays: on start, a daily ingestion loads each of its last
	// CatchUpDays due days that is not loaded yet (missed windows), once.
	CatchUpDays int
	// Window is how long after the scheduled hour the planner keeps
	// checking for the day's data; CheckEvery spaces those checks.
	Window     time.Duration
	CheckEvery time.Duration
	Group      string // reload-candidates consumer group
}

func (c *Config) defaults() {
	if c.Tick == 0 {
		c.Tick = 30 * time.Second
	}
	if c.Window == 0 {
		c.Window = 6 * time.Hour
	}
	if c.CheckEvery == 0 {
		c.CheckEvery = 15 * time.Minute
	}
	if c.Group == "" {
		c.Group = "sluice-planner"
	}
}

// Deps are the planner's collaborators.
type Deps struct {
	Kafka      kafka.Config
	Codecs     *schemas.Codecs
	Settings   *config.File
	Store      store.Store
	State      *state.State
	Sources    *warehouse.Pool
	Dispatcher *Dispatcher
	Logger     *slog.Logger
	Clock      func() time.Time
	Registry   prometheus.Registerer
}

// Service is a running planner.
type Service struct {
	cfg    Config
	deps   Deps
	client *kgo.Client // reload-candidates consumer

	dispatched *prometheus.CounterVec
}

// New builds a planner.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg.defaults()
	if deps.Codecs == nil || deps.Settings == nil || deps.Store == nil || deps.State == nil || deps.Sources == nil || deps.Dispatcher == nil {
		return nil, errors.New("planner: codecs, settings, store, state, sources and dispatcher are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	s := &Service{cfg: cfg, deps: deps,
		dispatched: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_planner_runs_dispatched_total", Help: "Runs the planner started, by trigger."}, []string{"trigger"}),
	}
	if deps.Registry != nil {
		if err := deps.Registry.Register(s.dispatched); err != nil {
			return nil, fmt.Errorf("register planner metrics: %w", err)
		}
	}
	cl, err := kafka.NewClient(deps.Kafka, "planner", deps.Logger, deps.Registry, kafka.GroupOpts(s.consumerConfig())...)
	if err != nil {
		return nil, err
	}
	s.client = cl
	return s, nil
}

func (s *Service) consumerConfig() kafka.ConsumerConfig {
	return kafka.ConsumerConfig{Group: s.cfg.Group, Topics: []string{s.deps.Kafka.Topic(schemas.TopicReloadCandidates)}, MaxPollRecords: 100}
}

// Run plans until ctx is cancelled: catch-up once, then schedules and
// queued requests on every tick, and reload candidates as they come.
func (s *Service) Run(ctx context.Context) error {
	defer s.client.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return kafka.Consume(ctx, s.client, s.consumerConfig(), s.deps.Logger, s.handleCandidates)
	})
	g.Go(func() error {
		if err := s.CatchUp(ctx); err != nil && ctx.Err() == nil {
			s.deps.Logger.Error("catch up missed days", "err", err)
		}
		t := time.NewTicker(s.cfg.Tick)
		defer t.Stop()
		for {
			if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
				s.deps.Logger.Error("planner tick", "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	return g.Wait()
}

// Tick runs the schedules and releases queued requests once.
func (s *Service) Tick(ctx context.Context) error {
	var errs []error
	for i := range s.deps.Settings.Ingestions {
		ing := &s.deps.Settings.Ingestions[i]
		if ing.Schedule.Mode != config.ScheduleDaily {
			continue
		}
		if err := s.schedule(ctx, ing); err != nil {
			errs = append(errs, fmt.Errorf("schedule %s/%s: %w", ing.Project, ing.Name, err))
		}
	}
	if err := s.deps.Dispatcher.ReleasePending(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DueDays returns the last n days of a daily ingestion that are due at
// now: up to yesterday in its time zone once today's window has opened,
// up to the day before otherwise.
func DueDays(ing *config.Ingestion, now time.Time, n int) (first, last civil.Date, err error) {
	loc, err := ing.Schedule.Location()
	if err != nil {
		return civil.Date{}, civil.Date{}, err
	}
	local := now.In(loc)
	last = civil.DateOf(local).AddDays(-1)
	if local.Hour() < ing.Schedule.HourOrDefault() {
		last = last.AddDays(-1) // today's window has not opened
	}
	return last.AddDays(1 - n), last, nil
}

// window returns the latest due day of ing (yesterday in its time zone)
// and its load window.
func (s *Service) window(ing *config.Ingestion) (day civil.Date, start, end time.Time, err error) {
	loc, err := ing.Schedule.Location()
	if err != nil {
		return civil.Date{}, time.Time{}, time.Time{}, err
	}
	now := s.deps.Clock().In(loc)
	today := civil.DateOf(now)
	start = time.Date(now.Year(), now.Month(), now.Day(), ing.Schedule.HourOrDefault(), 0, 0, 0, loc)
	return today.AddDays(-1), start, start.Add(s.cfg.Window), nil
}

// schedule loads ing's latest day inside its window once the warehouse has
// rows for it, and records "no data yet" when the window closes without.
func (s *Service) schedule(ctx context.Context, ing *config.Ingestion) error {
	day, start, end, err := s.window(ing)
	if err != nil {
		return err
	}
	now := s.deps.Clock()
	if now.Before(start) {
		return nil
	}
	date := day.String()
	doneKey := "schedule-done:" + ing.Project + "/" + ing.Name + "/" + date
	if loaded, err := s.loaded(ctx, ing, date, date); err != nil {
		return err
	} else if len(loaded) > 0 {
		return nil
	}
	if !now.Before(end) {
		first, err := s.deps.State.Once(ctx, doneKey, 8*24*time.Hour)
		if err != nil || !first {
			return err
		}
		return s.deps.Store.UpdateRun(ctx, store.RunUpdate{
			RunID: "nodata-" + ing.Project + "-" + ing.Name + "-" + date, Project: ing.Project, Ingestion: ing.Name,
			Type: ing.Type, Date: date, Trigger: schemas.TriggerScheduled, Status: store.StatusNoDataYet,
			Message: fmt.Sprintf("no rows for %s by the end of the load window (%s)", date, end.Format(time.RFC3339)), At: now,
		})
	}
	// Space the presence checks; the key also marks a day already started.
	first, err := s.deps.State.Once(ctx, "schedule-check:"+ing.Project+"/"+ing.Name+"/"+date, s.cfg.CheckEvery)
	if err != nil || !first {
		return err
	}
	if held, _, err := s.deps.State.DayHolder(ctx, state.DayKey{Project: ing.Project, Ingestion: ing.Name, Date: date}); err != nil || held != "" {
		return err
	}
	has, err := s.present(ctx, ing, day)
	if err != nil || !has {
		return err
	}
	first, err = s.deps.State.Once(ctx, doneKey, 8*24*time.Hour)
	if err != nil || !first {
		return err
	}
	return s.dispatch(ctx, ing, date, schemas.TriggerScheduled, "daily schedule")
}

// CatchUp loads the due days of every daily ingestion, up to CatchUpDays
// back, that are not loaded and have rows: the windows missed while the
// planner was down (or a first start).
func (s *Service) CatchUp(ctx context.Context) error {
	if s.cfg.CatchUpDays <= 0 {
		return nil
	}
	var errs []error
	for i := range s.deps.Settings.Ingestions {
		ing := &s.deps.Settings.Ingestions[i]
		if ing.Schedule.Mode != config.ScheduleDaily {
			continue
		}
		first, latest, err := DueDays(ing, s.deps.Clock(), s.cfg.CatchUpDays)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		loaded, err := s.loaded(ctx, ing, first.String(), latest.String())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for d := first; !d.After(latest); d = d.AddDays(1) {
			date := d.String()
			if loaded[date] {
				continue
			}
			if held, _, err := s.deps.State.DayHolder(ctx, state.DayKey{Project: ing.Project, Ingestion: ing.Name, Date: date}); err != nil || held != "" {
				continue
			}
			has, err := s.present(ctx, ing, d)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !has {
				continue
			}
			doneKey := "schedule-done:" + ing.Project + "/" + ing.Name + "/" + date
			if first, err := s.deps.State.Once(ctx, doneKey, 8*24*time.Hour); err != nil || !first {
				continue
			}
			if err := s.dispatch(ctx, ing, date, schemas.TriggerScheduled, "catch-up of a missed window"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// loaded returns the dates in [from, to] that the store shows loaded.
func (s *Service) loaded(ctx context.Context, ing *config.Ingestion, from, to string) (map[string]bool, error) {
	days, err := s.deps.Store.Days(ctx, store.DayFilter{Project: ing.Project, Ingestion: ing.Name, From: from, To: to})
	if err != nil {
		return nil, fmt.Errorf("read days of %s: %w", ing.Name, err)
	}
	out := map[string]bool{}
	for _, d := range days {
		if d.Status == store.StatusSuccessful || d.Status == store.StatusLoadedEmpty {
			out[d.Date] = true
		}
	}
	return out, nil
}

// present reports whether the warehouse has rows for the day.
func (s *Service) present(ctx context.Context, ing *config.Ingestion, day civil.Date) (bool, error) {
	src, err := s.deps.Sources.Source(ctx, ing.Connection)
	if err != nil {
		return false, err
	}
	n, err := src.Count(ctx, ing.Query, day)
	if err != nil {
		return false, fmt.Errorf("count %s rows of %s: %w", ing.Name, day, err)
	}
	return n > 0, nil
}

func (s *Service) dispatch(ctx context.Context, ing *config.Ingestion, date, trigger, reason string) error {
	_, err := s.deps.Dispatcher.Dispatch(ctx, Request{Project: ing.Project, Ingestion: ing.Name, Date: date, Trigger: trigger, Reason: reason})
	if err != nil {
		return err
	}
	s.dispatched.WithLabelValues(trigger).Inc()
	return nil
}

// handleCandidates turns the watcher's reload candidates into reload runs.
// An api_triggered ingestion is reloaded too: its data changed.
func (s *Service) handleCandidates(ctx context.Context, records []*kgo.Record) error {
	for _, rec := range records {
		var c schemas.ReloadCandidate
		if err := s.deps.Codecs.Decode(s.deps.Codecs.ReloadCandidate, rec.Value, &c); err != nil {
			s.deps.Logger.Error("skip undecodable reload candidate", "partition", rec.Partition, "offset", rec.Offset, "err", err)
			continue
		}
		ing, ok := s.deps.Settings.Ingestion(c.Project, c.Ingestion)
		if !ok {
			continue
		}
		reason := fmt.Sprintf("%s changed in the warehouse: %d rows loaded, %d now", c.Reason, c.LoadedCount, c.WarehouseCount)
		if err := s.dispatch(ctx, ing, c.Date, schemas.TriggerReload, reason); err != nil {
			return err
		}
	}
	return nil
}
