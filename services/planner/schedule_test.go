package planner

import (
	"context"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
)

func TestCheckSlot(t *testing.T) {
	start := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	end := start.Add(6 * time.Hour)
	tests := []struct {
		name     string
		after    time.Duration
		wantSlot int
		wantAt   time.Duration
	}{
		{"at the hour", 0, 0, 0},
		{"before the first gap", 14 * time.Minute, 0, 0},
		{"first gap", 15 * time.Minute, 1, 15 * time.Minute},
		{"second gap doubles", 44 * time.Minute, 1, 15 * time.Minute},
		{"third slot", 45 * time.Minute, 2, 45 * time.Minute},
		{"fourth slot after 60m", 105 * time.Minute, 3, 105 * time.Minute},
		{"capped at an hour", 165 * time.Minute, 4, 165 * time.Minute},
		{"hourly until the window end", 345 * time.Minute, 7, 345 * time.Minute},
		{"no slot at or past the window end", 6*time.Hour + time.Minute, 7, 345 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			slot, at := CheckSlot(start.Add(tt.after), start, end, 15*time.Minute, time.Hour)
			if slot != tt.wantSlot || !at.Equal(start.Add(tt.wantAt)) {
				t.Errorf("CheckSlot(+%s) = %d at +%s, want %d at +%s", tt.after, slot, at.Sub(start), tt.wantSlot, tt.wantAt)
			}
		})
	}
}

// TestScheduleWindow drives the planner's ticks across a load window on a
// fake clock, in several time zones, with the day's rows landing late.
func TestScheduleWindow(t *testing.T) {
	hour := 10
	for _, tz := range []string{"", "-08:00", "America/New_York", "Asia/Kolkata"} {
		t.Run("tz="+tz, func(t *testing.T) {
			t.Parallel()
			sched := config.Schedule{Hour: &hour, Timezone: tz}
			loc, err := sched.Location()
			if err != nil {
				t.Fatal(err)
			}
			today := civil.Date{Year: 2024, Month: time.March, Day: 20}
			day := today.AddDays(-1) // the day today's window loads
			at := func(h, m int) time.Time { return time.Date(2024, 3, 20, h, m, 0, 0, loc) }
			spec := demo.Spec{Days: 2, LastDay: day.AddDays(-1), EventsPerDay: 40, MetricsPerDay: 20, Seed: 3}
			e := newEnv(t, spec, sched, at(9, 0))
			p := e.planner(t, Config{CheckEvery: 15 * time.Minute, MaxCheckEvery: time.Hour, Window: 6 * time.Hour})
			ctx := context.Background()
			tickUntil := func(until time.Time) {
				t.Helper()
				for now := e.clock.Now(); !now.After(until); now = now.Add(5 * time.Minute) {
					e.clock.Set(now)
					if err := p.Tick(ctx); err != nil {
						t.Fatalf("tick at %s: %v", now, err)
					}
				}
			}

			tickUntil(at(9, 55))
			if c := e.checks(demo.WebEvents, day); len(c) != 0 {
				t.Fatalf("checked before the window opened: %v", c)
			}
			if r := e.runs(t, demo.WebEvents, day); len(r) != 0 {
				t.Fatalf("dispatched before the window: %+v", r)
			}

			// No rows yet: checks at 10:00, 10:15, 10:45, 11:45, 12:45.
			tickUntil(at(13, 0))
			want := []time.Time{at(10, 0), at(10, 15), at(10, 45), at(11, 45), at(12, 45)}
			assertTimes(t, "checks without data", e.checks(demo.WebEvents, day), want)
			if r := e.runs(t, demo.WebEvents, day); len(r) != 0 {
				t.Fatalf("dispatched without data: %+v", r)
			}

			// Rows land at 13:00; the next check (13:45) loads the day.
			e.seedDay(t, spec, day)
			tickUntil(at(13, 40))
			if r := e.runs(t, demo.WebEvents, day); len(r) != 0 {
				t.Fatalf("dispatched between checks: %+v", r)
			}
			tickUntil(at(17, 0)) // past the window's end
			assertTimes(t, "checks", e.checks(demo.WebEvents, day), append(want, at(13, 45)))
			runs := e.runs(t, demo.WebEvents, day)
			if len(runs) != 1 || runs[0].Trigger != vocab.TriggerScheduled || runs[0].Status != vocab.StatusScheduled {
				t.Fatalf("want exactly one scheduled run, got %+v", runs)
			}
			if holder, _, _ := e.dispatcher.Holder(ctx, dispatch.Day{Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: day.String()}); holder != runs[0].RunID {
				t.Errorf("day lease held by %q, want the run %s", holder, runs[0].RunID)
			}
			for _, ing := range []string{demo.WebEventsAPI, demo.DailyMetricsAPI} {
				if r := e.runs(t, ing, day); len(r) != 0 {
					t.Errorf("api_triggered %s was scheduled: %+v", ing, r)
				}
			}

			// The next day's rows never land: NO_DATA_YET once, at the close.
			next := today
			tickUntil(at(9, 0).AddDate(0, 0, 1).Add(7 * time.Hour))
			tickUntil(at(9, 0).AddDate(0, 0, 1).Add(8 * time.Hour))
			runs = e.runs(t, demo.WebEvents, next)
			if len(runs) != 1 || runs[0].Status != vocab.StatusNoDataYet {
				t.Fatalf("want one NO_DATA_YET run for %s, got %+v", next, runs)
			}
			days, err := e.store.Days(ctx, store.DayFilter{Project: demo.ProjectName, Ingestion: demo.WebEvents, From: next.String(), To: next.String()})
			if err != nil || len(days) != 1 || days[0].Status != vocab.StatusNoDataYet {
				t.Fatalf("day %s status: %+v (%v), want NO_DATA_YET", next, days, err)
			}
			checks := e.checks(demo.WebEvents, next)
			var wantNext []time.Time
			for _, hm := range [][2]int{{10, 0}, {10, 15}, {10, 45}, {11, 45}, {12, 45}, {13, 45}, {14, 45}, {15, 45}, {16, 0}} {
				wantNext = append(wantNext, at(hm[0], hm[1]).AddDate(0, 0, 1))
			}
			assertTimes(t, "checks of a day that never lands (the last as the window closed)", checks, wantNext)
		})
	}
}

func assertTimes(t testing.TB, what string, got, want []time.Time) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d at %v, want %v", what, len(got), got, want)
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Fatalf("%s: #%d at %s, want %s (all: %v)", what, i, got[i], want[i], got)
		}
	}
}

// TestCatchUp: days missed while the planner was down load on start, once.
func TestCatchUp(t *testing.T) {
	hour := 10
	sched := config.Schedule{Hour: &hour, Timezone: "-08:00"}
	loc, _ := sched.Location()
	today := civil.Date{Year: 2024, Month: time.May, Day: 9}
	now := time.Date(2024, 5, 9, 11, 0, 0, 0, loc)
	// Rows for the two days before today; the third due day has none.
	spec := demo.Spec{Days: 2, LastDay: today.AddDays(-1), EventsPerDay: 30, MetricsPerDay: 10, Seed: 5}
	e := newEnv(t, spec, sched, now)
	ctx := context.Background()
	p := e.planner(t, Config{CatchUpDays: 3})
	if err := p.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ing := range []string{demo.WebEvents, demo.DailyMetrics} {
		for back, want := range map[int]int{1: 1, 2: 1, 3: 0} {
			d := today.AddDays(-back)
			runs := e.runs(t, ing, d)
			if len(runs) != want {
				t.Errorf("%s %s: %d runs after catch-up, want %d", ing, d, len(runs), want)
			}
			for _, r := range runs {
				// The runs end (failed, say): the lease is free again.
				if err := e.dispatcher.Release(ctx, dispatch.Day{Project: demo.ProjectName, Ingestion: ing, Date: d.String()}, r.RunID); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if r := e.runs(t, demo.WebEventsAPI, today.AddDays(-1)); len(r) != 0 {
		t.Errorf("catch-up loaded an api_triggered ingestion: %+v", r)
	}
	// A restart catches up again: nothing new, the windows were caught up once.
	p2 := e.planner(t, Config{CatchUpDays: 3})
	if err := p2.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ing := range []string{demo.WebEvents, demo.DailyMetrics} {
		for back := 1; back <= 3; back++ {
			if runs := e.runs(t, ing, today.AddDays(-back)); len(runs) > 1 {
				t.Errorf("%s %s: caught up twice: %+v", ing, today.AddDays(-back), runs)
			}
		}
	}
}

// TestCatchUpRetriesADayADeadDispatchHeld: a planner killed after marking
// a catch-up day done and taking its lease, before recording or publishing
// the run, leaves the day held by a run that does not exist. The next
// planner's catch-up must not give up on that day: once the dead
// dispatch's short lease is gone, a later tick dispatches it (the fault
// suite saw such a day never loaded until yet another planner start).
func TestCatchUpRetriesADayADeadDispatchHeld(t *testing.T) {
	hour := 10
	sched := config.Schedule{Hour: &hour, Timezone: "-08:00"}
	loc, _ := sched.Location()
	today := civil.Date{Year: 2024, Month: time.May, Day: 9}
	now := time.Date(2024, 5, 9, 11, 0, 0, 0, loc)
	spec := demo.Spec{Days: 1, LastDay: today.AddDays(-1), EventsPerDay: 30, MetricsPerDay: 10, Seed: 5}
	e := newEnv(t, spec, sched, now)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p := e.planner(t, Config{CatchUpDays: 1, Tick: 50 * time.Millisecond})

	// The dead planner's traces.
	day := today.AddDays(-1)
	ing, _ := e.settings.Ingestion(demo.ProjectName, demo.DailyMetrics)
	key := state.DayKey{Project: demo.ProjectName, Ingestion: demo.DailyMetrics, Date: day.String()}
	if _, err := e.state.Once(ctx, "schedule-done:"+p.dayKey(ing, day.String()), onceTTL); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := e.state.AcquireDay(ctx, key, "run-of-a-dead-dispatch", time.Hour); err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() { stop(); <-done }()

	// While the dead dispatch holds the day, nothing is dispatched...
	waitFor(ctx, t, func() bool { return len(e.runs(t, demo.WebEvents, day)) == 1 })
	if runs := e.runs(t, demo.DailyMetrics, day); len(runs) != 0 {
		t.Fatalf("dispatched a day whose lease is held: %+v", runs)
	}
	// ...and once its lease is gone (here released; it expires after
	// dispatchLease), a later tick's catch-up dispatches it.
	if err := e.dispatcher.Release(ctx, key, "run-of-a-dead-dispatch"); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { return len(e.runs(t, demo.DailyMetrics, day)) == 1 })
}

func waitFor(ctx context.Context, t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("condition never held: %v", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
