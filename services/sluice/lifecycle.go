package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// stage is when a service stops during shutdown. Stages stop in the
// order below, each once the one before has returned or overrun its
// bound, so every service stops after those that feed it: intake stops
// before the extractors it feeds, the loader after the mapper whose
// output it commits, the clients after everything that uses them.
type stage int

const (
	stageUnset stage = iota // a runnable must say when it stops
	// stageIntake: the trigger (finishes its in-flight requests, which
	// may dispatch runs), the planner and the watcher. No new work enters.
	stageIntake
	// stageExtract: extractors finish their running extractions or hand
	// them back uncommitted, to be redone.
	stageExtract
	// stageMap: the mapper finishes its poll, produces it and commits.
	stageMap
	// stageLoad: the loader makes its poll durable in the store and commits.
	stageLoad
	// stageNotify: the notifier delivers what the loader made due.
	stageNotify
	// stageClients: clients shared by the stages above (the dispatcher's
	// producer) and the lag monitor.
	stageClients
	// stageServers: admin and pprof HTTP, last, so /metrics and profiles
	// answer while the rest drains.
	stageServers
	stageCount
)

func (s stage) String() string {
	switch s {
	case stageIntake:
		return "intake"
	case stageExtract:
		return "extract"
	case stageMap:
		return "map"
	case stageLoad:
		return "load"
	case stageNotify:
		return "notify"
	case stageClients:
		return "clients"
	case stageServers:
		return "servers"
	}
	return fmt.Sprintf("stage(%d)", int(s))
}

// runnable is one service of a process: its Run, which returns nil once
// its context is cancelled and its in-flight work has drained, and the
// stage in which that context is cancelled.
type runnable struct {
	name string
	stop stage
	run  func(context.Context) error
}

// Defaults of Shutdown. A service drains for its bound (--drain-timeout,
// which Build hands every service as its own drain bound) and then
// commits and closes its clients: the final commits are bounded at 5 s
// (pkg/kafka) and 10 s (the extractor), hence the grace.
const (
	DefaultDrainTimeout = 30 * time.Second
	DefaultStopGrace    = 10 * time.Second
)

// Shutdown is how RunAll stops a process's services.
type Shutdown struct {
	// Bound is how long each stage's services may drain once told to
	// stop (--drain-timeout); Grace is how much longer RunAll waits for
	// them to commit and return before it moves on to the next stage.
	Bound  time.Duration
	Grace  time.Duration
	Logger *slog.Logger
}

func (sd *Shutdown) defaults() {
	if sd.Bound <= 0 {
		sd.Bound = DefaultDrainTimeout
	}
	if sd.Grace <= 0 {
		sd.Grace = DefaultStopGrace
	}
	if sd.Logger == nil {
		sd.Logger = slog.Default()
	}
}

// started is a running service.
type started struct {
	runnable
	cancel context.CancelFunc
	done   chan struct{}
}

// RunAll runs services until ctx is cancelled or one of them fails, then
// stops them stage by stage (see stage), each stage bounded by
// sd.Bound+sd.Grace. A stage that overruns is logged and left behind:
// its services' contexts are already cancelled and their own drain
// bounds cancel their work, but a goroutine cannot be preempted, so
// RunAll moves on rather than hang. It returns every service's error.
func RunAll(ctx context.Context, services []runnable, sd Shutdown) error {
	sd.defaults()
	for _, s := range services {
		if s.stop <= stageUnset || s.stop >= stageCount {
			return fmt.Errorf("%s: no stop stage", s.name)
		}
	}
	// Each service's context is cancelled by its stage, not by ctx, so
	// stopping the process does not stop everything at once.
	base := context.WithoutCancel(ctx)
	var byStage [stageCount][]*started
	errc := make(chan error, len(services))
	for _, s := range services {
		sctx, cancel := context.WithCancel(base)
		st := &started{runnable: s, cancel: cancel, done: make(chan struct{})}
		byStage[s.stop] = append(byStage[s.stop], st)
		go func() {
			defer close(st.done)
			if err := s.run(sctx); err != nil {
				errc <- fmt.Errorf("%s: %w", s.name, err)
			}
		}()
	}

	var errs []error
	select {
	case <-ctx.Done():
		sd.Logger.Info("shutting down")
	case err := <-errc:
		sd.Logger.Error("service failed, shutting down", "err", err)
		errs = append(errs, err)
	}
	for s, group := range byStage {
		sd.stopStage(stage(s), group)
	}
	for {
		select {
		case err := <-errc:
			errs = append(errs, err)
		default:
			return errors.Join(errs...)
		}
	}
}

// stopStage cancels a stage's services and waits for them, bounded.
func (sd Shutdown) stopStage(s stage, group []*started) {
	if len(group) == 0 {
		return
	}
	start := time.Now()
	for _, st := range group {
		st.cancel()
	}
	wait, cancel := context.WithTimeout(context.Background(), sd.Bound+sd.Grace)
	defer cancel()
	var late []*started
	for _, st := range group {
		select {
		case <-st.done:
		case <-wait.Done():
			select { // both may be ready: done wins
			case <-st.done:
			default:
				late = append(late, st)
			}
		}
	}
	for _, st := range late {
		sd.Logger.Error("service did not stop within its bound, shutdown moves on", "service", st.name,
			"stage", s.String(), "waited", time.Since(start).Round(time.Millisecond), "bound", sd.Bound)
	}
	sd.Logger.Info("stage stopped", "stage", s.String(), "took", time.Since(start).Round(time.Millisecond), "late", len(late))
}
