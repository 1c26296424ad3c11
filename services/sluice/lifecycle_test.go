package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/kafka/kafkatest"
)

// events is what fake services saw, in order.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, s)
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// fake is a service that runs until cancelled, then drains for drain
// (fake time) and returns nil. It logs "name stop" and "name done".
func fake(ev *events, name string, st stage, drain time.Duration) runnable {
	return runnable{name: name, stop: st, run: func(ctx context.Context) error {
		<-ctx.Done()
		ev.add(name + " stop")
		time.Sleep(drain)
		ev.add(name + " done")
		return nil
	}}
}

// logRecords decodes the JSON log lines RunAll wrote.
func logRecords(tb testing.TB, buf *bytes.Buffer) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			tb.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// lateServices are the services RunAll logged as overrunning their bound.
func lateServices(recs []map[string]any) map[string]time.Duration {
	late := map[string]time.Duration{}
	for _, r := range recs {
		if r["msg"] == "service did not stop within its bound, shutdown moves on" {
			ns, _ := r["waited"].(float64) // slog's JSON writes a duration in ns
			late[r["service"].(string)] = time.Duration(ns)
		}
	}
	return late
}

// The stack's stages in the order the issue asks for, each service
// draining for a while: every stage is stopped only once the stage
// before it has returned, whatever order the services were given in.
func TestRunAllStopsStagesInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := &events{}
		services := []runnable{
			fake(ev, "pprof", stageServers, 0),
			fake(ev, "lag", stageClients, 0),
			fake(ev, "notifier", stageNotify, 3*time.Second),
			fake(ev, "loader", stageLoad, 2*time.Second),
			fake(ev, "mapper", stageMap, time.Second),
			fake(ev, "extractor", stageExtract, 4*time.Second),
			fake(ev, "dispatcher", stageClients, 0),
			fake(ev, "watcher", stageIntake, 0),
			fake(ev, "trigger", stageIntake, 2*time.Second),
			fake(ev, "planner", stageIntake, time.Second),
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- RunAll(ctx, services, Shutdown{Bound: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)})
		}()
		synctest.Wait()
		if got := ev.all(); len(got) != 0 {
			t.Fatalf("services stopped before shutdown: %v", got)
		}
		start := time.Now()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("RunAll = %v, want nil", err)
		}
		// Stages one after the other: 2s + 4s + 1s + 2s + 3s + 0 + 0.
		if took := time.Since(start); took != 12*time.Second {
			t.Errorf("shutdown took %v, want 12s (each stage after the one before)", took)
		}
		got := ev.all()
		pos := func(s string) int {
			i := slices.Index(got, s)
			if i < 0 {
				t.Fatalf("no %q in %v", s, got)
			}
			return i
		}
		order := [][]string{{"trigger", "planner", "watcher"}, {"extractor"}, {"mapper"}, {"loader"}, {"notifier"}, {"dispatcher", "lag"}, {"pprof"}}
		for i := 1; i < len(order); i++ {
			for _, before := range order[i-1] {
				for _, after := range order[i] {
					if pos(before+" done") > pos(after+" stop") {
						t.Errorf("%s was told to stop before %s had returned: %v", after, before, got)
					}
				}
			}
		}
		// Within a stage, services stop together, not one by one.
		if pos("planner stop") > pos("trigger done") || pos("watcher stop") > pos("trigger done") {
			t.Errorf("intake services were not stopped together: %v", got)
		}
	})
}

// A stage that overruns its bound is logged with the service and how long
// was waited, and shutdown goes on to the next stage; RunAll returns.
func TestRunAllBoundsAStuckStage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := &events{}
		release := make(chan struct{})
		defer close(release) // the stuck goroutine ends with the test
		stuck := runnable{name: "loader", stop: stageLoad, run: func(ctx context.Context) error {
			<-ctx.Done()
			ev.add("loader stop")
			<-release // ignores its bound
			return nil
		}}
		services := []runnable{fake(ev, "mapper", stageMap, time.Second), stuck,
			fake(ev, "notifier", stageNotify, time.Second), fake(ev, "lag", stageClients, 0)}
		var logs bytes.Buffer
		sd := Shutdown{Bound: 5 * time.Second, Grace: 2 * time.Second, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- RunAll(ctx, services, sd) }()
		synctest.Wait()
		start := time.Now()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("RunAll = %v, want nil", err)
		}
		// mapper 1s, the stuck loader its bound and grace (7s), notifier 1s.
		if took := time.Since(start); took != 9*time.Second {
			t.Errorf("shutdown took %v, want 9s", took)
		}
		want := []string{"mapper stop", "mapper done", "loader stop", "notifier stop", "notifier done", "lag stop", "lag done"}
		if got := ev.all(); !slices.Equal(got, want) {
			t.Errorf("events = %v, want %v", got, want)
		}
		late := lateServices(logRecords(t, &logs))
		if len(late) != 1 || late["loader"] != 7*time.Second {
			t.Errorf("late services logged = %v, want loader after 7s", late)
		}
	})
}

// An error from one service while running stops all the others, in stage
// order, and RunAll returns it (with the service's name).
func TestRunAllStopsEverythingInOrderOnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := &events{}
		boom := errors.New("store unreachable")
		failing := runnable{name: "loader", stop: stageLoad, run: func(ctx context.Context) error {
			time.Sleep(time.Minute)
			ev.add("loader failed")
			return boom
		}}
		services := []runnable{fake(ev, "lag", stageClients, 0), failing, fake(ev, "notifier", stageNotify, time.Second),
			fake(ev, "mapper", stageMap, time.Second), fake(ev, "trigger", stageIntake, time.Second)}
		var logs bytes.Buffer
		err := RunAll(t.Context(), services, Shutdown{Bound: time.Second, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "loader: ") {
			t.Fatalf("RunAll = %v, want the loader's error", err)
		}
		want := []string{"loader failed", "trigger stop", "trigger done", "mapper stop", "mapper done", "notifier stop", "notifier done", "lag stop", "lag done"}
		if got := ev.all(); !slices.Equal(got, want) {
			t.Errorf("events = %v, want %v", got, want)
		}
		if late := lateServices(logRecords(t, &logs)); len(late) != 0 {
			t.Errorf("late services logged = %v, want none", late)
		}
	})
}

// Errors returned while draining are returned too, joined.
func TestRunAllReturnsDrainErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drainErr := errors.New("shut down http server: context deadline exceeded")
		services := []runnable{{name: "trigger", stop: stageIntake, run: func(ctx context.Context) error { <-ctx.Done(); return drainErr }}}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := RunAll(ctx, services, Shutdown{Logger: slog.New(slog.DiscardHandler)})
		if !errors.Is(err, drainErr) || !strings.HasPrefix(err.Error(), "trigger: ") {
			t.Fatalf("RunAll = %v, want the trigger's drain error", err)
		}
	})
}

// A runnable without a stop stage is a wiring mistake, refused up front.
func TestRunAllRefusesAServiceWithoutStage(t *testing.T) {
	ran := false
	services := []runnable{{name: "orphan", run: func(context.Context) error { ran = true; return nil }}}
	err := RunAll(t.Context(), services, Shutdown{Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "orphan: no stop stage") || ran {
		t.Fatalf("RunAll = %v (ran %v), want it refused before running", err, ran)
	}
}

// Every service Build makes for --target=all (a webhook included, so the
// notifier too) stops in the stage the shutdown order needs, and the
// built stack stops cleanly on an immediate shutdown.
func TestBuildGivesEveryServiceItsStage(t *testing.T) {
	kcfg, _ := kafkatest.Start(t, kafka.Config{})
	dir := t.TempDir()
	settings := demo.Config(demo.ConfigOptions{APIKey: "k", DuckDBPath: filepath.Join(dir, "warehouse.duckdb"),
		Store: config.Store{Kind: "duckdb", Path: filepath.Join(dir, "store.duckdb")}})
	settings.Projects[0].WebhookURL = "http://127.0.0.1:1/hook"
	settings.Kafka.Brokers = kcfg.Brokers
	settings.Redis.Addr = miniredis.RunT(t).Addr()
	if err := settings.Validate(); err != nil {
		t.Fatal(err)
	}
	in, err := NewInfra(t.Context(), settings, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	services, err := Build(t.Context(), in, RunOptions{Targets: Targets, TriggerListener: ln, DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]stage{"trigger": stageIntake, "planner": stageIntake, "watcher": stageIntake, "extractor": stageExtract,
		"mapper": stageMap, "loader": stageLoad, "notifier": stageNotify, "dispatcher": stageClients, "lag": stageClients}
	got := map[string]stage{}
	for _, r := range services {
		got[r.name] = r.stop
	}
	if !maps.Equal(got, want) {
		t.Errorf("stages = %v, want %v", got, want)
	}
	for name, r := range map[string]runnable{"pprof": pprofServer("127.0.0.1:0", time.Second), "admin": httpRunnable("admin", "127.0.0.1:0", nil, 0, time.Second)} {
		if r.stop != stageServers {
			t.Errorf("%s stops in stage %v, want servers", name, r.stop)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := RunAll(ctx, services, Shutdown{Bound: time.Second, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Errorf("an immediate shutdown of the built stack: %v", err)
	}
}
