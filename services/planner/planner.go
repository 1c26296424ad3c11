// Package planner decides which days load when. It turns daily schedules
// (after checking that the day's data is present), reload candidates from
// the watcher, and queued requests into runs through pkg/dispatch, which
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
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
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
	// checking for the day's data. The first check is at the hour; the
	// next after CheckEvery, each later gap twice the one before, up to
	// MaxCheckEvery (backoff: a warehouse late by hours is not asked
	// every few minutes). The window's end is always a last check.
	Window        time.Duration
	CheckEvery    time.Duration
	MaxCheckEvery time.Duration
	Group         string // reload-candidates consumer group
	// DrainTimeout bounds the reload candidates in hand once told to stop.
	DrainTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Tick == 0 {
		c.Tick = 30 * time.Second
	}
	if c.Window == 0 {
		c.Window = 6 * time.Hour
	}
	if c.CheckEvery <= 0 {
		c.CheckEvery = 15 * time.Minute
	}
	if c.MaxCheckEvery < c.CheckEvery {
		c.MaxCheckEvery = max(time.Hour, c.CheckEvery)
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
	Dispatcher *dispatch.Dispatcher
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
	checks     prometheus.Counter
	noData     prometheus.Counter
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
		checks:     prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_planner_presence_checks_total", Help: "Checks inside a load window that the day has rows."}),
		noData:     prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_planner_windows_without_data_total", Help: "Load windows that closed without rows (NO_DATA_YET)."}),
	}
	if deps.Registry != nil {
		for _, c := range []prometheus.Collector{s.dispatched, s.checks, s.noData} {
			if err := deps.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register planner metrics: %w", err)
			}
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
	return kafka.ConsumerConfig{Group: s.cfg.Group, Topics: []string{s.deps.Kafka.Topic(schemas.TopicReloadCandidates)}, MaxPollRecords: 100,
		DrainTimeout: s.cfg.DrainTimeout}
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
		catchingUp := true
		t := time.NewTicker(s.cfg.Tick)
		defer t.Stop()
		for {
			// Catch-up runs again on later ticks while it skipped a day
			// whose lease was held: the holder may be a dispatch killed
			// before it published (its short lease runs out), which no
			// other path would ever redo.
			if catchingUp {
				deferred, err := s.catchUp(ctx)
				if err != nil && ctx.Err() == nil {
					s.deps.Logger.Error("catch up missed days", "err", err)
				}
				catchingUp = deferred > 0 || err != nil
			}
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
	if err := s.deps.Dispatcher.StartPending(ctx); err != nil {
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

// window is one scheduled load window: the day it loads (the day before
// the window opens, in the schedule's time zone) and when it opens and
// closes.
type window struct {
	day        civil.Date
	start, end time.Time
}

// windows returns the windows of ing that may be open or just closed at
// now: today's and yesterday's (a window opened late in the evening stays
// open past midnight).
func (s *Service) windows(ing *config.Ingestion, now time.Time) ([]window, error) {
	loc, err := ing.Schedule.Location()
	if err != nil {
		return nil, err
	}
	local := now.In(loc)
	out := make([]window, 0, 2)
	for back := 1; back >= 0; back-- {
		opens := civil.DateOf(local).AddDays(-back)
		start := time.Date(opens.Year, opens.Month, opens.Day, ing.Schedule.HourOrDefault(), 0, 0, 0, loc)
		out = append(out, window{day: opens.AddDays(-1), start: start, end: start.Add(s.cfg.Window)})
	}
	return out, nil
}

// CheckSlot numbers the presence check due at now inside a window that
// opened at start and closes at end: slot 0 at start, slot k after gaps
// of every, 2*every, 4*every, ... capped at maxEvery. It also returns
// when the slot began.
func CheckSlot(now, start, end time.Time, every, maxEvery time.Duration) (slot int, at time.Time) {
	at, gap := start, every
	for !at.Add(gap).After(now) && at.Add(gap).Before(end) {
		at = at.Add(gap)
		gap = min(gap*2, maxEvery)
		slot++
	}
	return slot, at
}

func (s *Service) dayKey(ing *config.Ingestion, date string) string {
	return ing.Project + "/" + ing.Name + "/" + date
}

// schedule loads ing's latest day inside its window once the warehouse has
// rows for it, checking with backoff, and records "no data yet" once when
// the window closes without.
func (s *Service) schedule(ctx context.Context, ing *config.Ingestion) error {
	now := s.deps.Clock()
	wins, err := s.windows(ing, now)
	if err != nil {
		return err
	}
	var errs []error
	for _, w := range wins {
		if now.Before(w.start) {
			continue
		}
		if err := s.scheduleWindow(ctx, ing, w, now); err != nil {
			errs = append(errs, fmt.Errorf("window of %s: %w", w.day, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Service) scheduleWindow(ctx context.Context, ing *config.Ingestion, w window, now time.Time) error {
	date := w.day.String()
	doneKey := "schedule-done:" + s.dayKey(ing, date)
	if loaded, err := s.loaded(ctx, ing, date, date); err != nil {
		return err
	} else if len(loaded) > 0 {
		return nil
	}
	if busy, err := s.deps.Dispatcher.Busy(ctx, dispatch.Day{Project: ing.Project, Ingestion: ing.Name, Date: date}); err != nil || busy {
		return err // a run of the day is in flight already
	}
	if !now.Before(w.end) {
		// The window closed: one last look, then load or say so, once.
		first, err := s.deps.State.Once(ctx, "schedule-closed:"+s.dayKey(ing, date), onceTTL)
		if err != nil || !first {
			return err
		}
		has, err := s.present(ctx, ing, w.day)
		if err != nil {
			return err
		}
		if has {
			if first, err := s.deps.State.Once(ctx, doneKey, onceTTL); err != nil || !first {
				return err
			}
			return s.dispatch(ctx, ing, date, vocab.TriggerScheduled, "daily schedule (rows found as the window closed)")
		}
		s.noData.Inc()
		s.deps.Logger.Warn("load window closed without rows", "ingestion", ing.Name, "project", ing.Project, "day", date)
		return s.deps.Store.UpdateRun(ctx, store.RunUpdate{
			RunID: "nodata-" + ing.Project + "-" + ing.Name + "-" + date, Project: ing.Project, Ingestion: ing.Name,
			Type: ing.Type, Date: date, Trigger: vocab.TriggerScheduled, Status: vocab.StatusNoDataYet,
			Message: fmt.Sprintf("no rows for %s by the end of the load window (%s)", date, w.end.Format(time.RFC3339)), At: now,
		})
	}
	// One presence check per backoff slot, whichever planner gets it.
	slot, _ := CheckSlot(now, w.start, w.end, s.cfg.CheckEvery, s.cfg.MaxCheckEvery)
	first, err := s.deps.State.Once(ctx, fmt.Sprintf("schedule-check:%s/%d", s.dayKey(ing, date), slot), onceTTL)
	if err != nil || !first {
		return err
	}
	s.checks.Inc()
	has, err := s.present(ctx, ing, w.day)
	if err != nil || !has {
		return err
	}
	first, err = s.deps.State.Once(ctx, doneKey, onceTTL)
	if err != nil || !first {
		return err
	}
	return s.dispatch(ctx, ing, date, vocab.TriggerScheduled, "daily schedule")
}

// onceTTL outlives any window and the catch-up horizon.
const onceTTL = 8 * 24 * time.Hour

// CatchUp loads the due days of every daily ingestion, up to CatchUpDays
// back, that are not loaded and have rows: the windows missed while the
// planner was down (or a first start).
func (s *Service) CatchUp(ctx context.Context) error {
	_, err := s.catchUp(ctx)
	return err
}

// catchUp is CatchUp; deferred counts the days it skipped because their
// lease was held (a run in flight, or a dispatch that died before
// publishing): a later catch-up looks at them again.
func (s *Service) catchUp(ctx context.Context) (deferred int, _ error) {
	if s.cfg.CatchUpDays <= 0 {
		return 0, nil
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
			if busy, err := s.deps.Dispatcher.Busy(ctx, dispatch.Day{Project: ing.Project, Ingestion: ing.Name, Date: date}); err != nil || busy {
				deferred++
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
			doneKey := "schedule-done:" + s.dayKey(ing, date)
			first, err := s.deps.State.Once(ctx, doneKey, onceTTL)
			if err != nil {
				continue
			}
			if !first && s.hasRun(ctx, ing, date) {
				continue
			}
			// Marked done but without any run: a planner was killed between
			// marking and dispatching. Dispatch now.
			if err := s.dispatch(ctx, ing, date, vocab.TriggerScheduled, "catch-up of a missed window"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return deferred, errors.Join(errs...)
}

// loaded returns the dates in [from, to] that the store shows loaded.
func (s *Service) loaded(ctx context.Context, ing *config.Ingestion, from, to string) (map[string]bool, error) {
	days, err := s.deps.Store.Days(ctx, store.DayFilter{Project: ing.Project, Ingestion: ing.Name, From: from, To: to})
	if err != nil {
		return nil, fmt.Errorf("read days of %s: %w", ing.Name, err)
	}
	out := map[string]bool{}
	for _, d := range days {
		if d.Status == vocab.StatusSuccessful || d.Status == vocab.StatusLoadedEmpty {
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

// hasRun reports whether the day has any run in the store (or the store
// cannot say).
func (s *Service) hasRun(ctx context.Context, ing *config.Ingestion, date string) bool {
	runs, err := s.deps.Store.Runs(ctx, store.RunFilter{Project: ing.Project, Ingestion: ing.Name, Date: date, Limit: 1})
	return err != nil || len(runs) > 0
}

func (s *Service) dispatch(ctx context.Context, ing *config.Ingestion, date string, trigger vocab.Trigger, reason string) error {
	_, err := s.deps.Dispatcher.Dispatch(ctx, dispatch.Request{Project: ing.Project, Ingestion: ing.Name, Date: date, Trigger: trigger, Reason: reason})
	if err != nil {
		return err
	}
	s.dispatched.WithLabelValues(string(trigger)).Inc()
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
		if err := s.dispatch(ctx, ing, c.Date, vocab.TriggerReload, reason); err != nil {
			return err
		}
	}
	return nil
}
