package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// watchedListener tells a test when the server first read from a
// connection it accepted, and when the server closed the listener (which
// http.Server.Shutdown does first).
type watchedListener struct {
	net.Listener
	read, closed        chan struct{}
	readOnce, closeOnce sync.Once
}

func watchListener(tb testing.TB) *watchedListener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return &watchedListener{Listener: ln, read: make(chan struct{}), closed: make(chan struct{})}
}

func (l *watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return watchedConn{Conn: c, l: l}, nil
}

func (l *watchedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

type watchedConn struct {
	net.Conn
	l *watchedListener
}

func (c watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.l.readOnce.Do(func() { close(c.l.read) })
	}
	return n, err
}

// counterSum is the sum of a counter family's series in reg.
func counterSum(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	families, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var total float64
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// SIGTERM to the whole stack while a day is loading and while a
// mark_data_ready request is in flight: the request is answered with its
// run dispatched (the dispatcher's Kafka client outlives the trigger's
// drain), shutdown returns cleanly, and after a restart on the same
// store, Kafka and Redis every day holds the warehouse's rows exactly
// once, the API day under the run the trigger answered with.
func TestShutdownUnderLoadLosesNothing(t *testing.T) {
	day := civil.DateOf(time.Now().UTC()).AddDays(-1)
	spec := demo.Spec{Days: 1, LastDay: day, EventsPerDay: 40000, MetricsPerDay: 600, BadRowEvery: 100, Seed: 12}
	s := newE2E(t, spec, config.Pipeline{CatchUpDays: 1, BatchRows: 500})
	ln := watchListener(t)
	opts := RunOptions{Targets: Targets, PlannerTick: 100 * time.Millisecond, WatcherTick: time.Hour, TriggerListener: ln}
	stop := s.start(opts)

	// Wait until the loader has staged part of the scheduled day.
	deadline := time.Now().Add(90 * time.Second)
	for counterSum(t, s.registry, "sluice_loader_rows_total") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the loader staged no rows in 90s")
		}
		time.Sleep(10 * time.Millisecond) // polling a real pipeline
	}
	midLoad := !loaded(s.dayNow(demo.WebEvents, day))

	// A mark_data_ready whose body is still arriving when SIGTERM comes.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := fmt.Sprintf(`{"datestamps": %q, "type": "events"}`, day)
	head := fmt.Sprintf("POST /v1/mark_data_ready_dwh HTTP/1.1\r\nHost: sluice\r\nstatsig-api-key: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", e2eKey, len(body))
	if _, err := io.WriteString(conn, head+body[:5]); err != nil {
		t.Fatal(err)
	}
	<-ln.read // the trigger is reading the request
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	<-ln.closed // shutdown has begun: the trigger no longer accepts
	if _, err := io.WriteString(conn, body[5:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read the in-flight request's response: %v", err)
	}
	respBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("in-flight mark_data_ready during shutdown: %d %s", resp.StatusCode, respBody)
	}
	var answer struct {
		Data struct {
			Runs []struct {
				Source, RunID string
			} `json:"runs"`
		} `json:"data"`
	}
	if err := json.Unmarshal(respBody, &answer); err != nil || len(answer.Data.Runs) != 1 || answer.Data.Runs[0].Source != demo.WebEventsAPI {
		t.Fatalf("in-flight mark_data_ready answered %s (%v), want one %s run", respBody, err, demo.WebEventsAPI)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown under load: %v", err)
	}
	t.Logf("stopped with the scheduled day mid-load: %v", midLoad)

	// Restart on the same store, Kafka and Redis.
	opts.TriggerListener = watchListener(t)
	s.start(opts)
	s.assertEventsMatch(demo.WebEvents, day)
	api := s.assertEventsMatch(demo.WebEventsAPI, day)
	if api.VisibleRunID != answer.Data.Runs[0].RunID {
		t.Errorf("%s %s is visible under run %s, the trigger answered %s", demo.WebEventsAPI, day, api.VisibleRunID, answer.Data.Runs[0].RunID)
	}
	m := s.waitDay(demo.DailyMetrics, day, "loaded", loaded)
	if want := demo.Expected(spec)[day].Metrics; m.Extracted != want.Rows || m.RowsLoaded != want.Good() {
		t.Errorf("metrics %s: extracted=%d loaded=%d, want %d rows, %d good", day, m.Extracted, m.RowsLoaded, want.Rows, want.Good())
	}
	for _, ing := range []string{demo.WebEvents, demo.WebEventsAPI, demo.DailyMetrics} {
		var visible int
		for _, r := range s.runsOf(ing, day) {
			if r.Status == vocab.StatusSuccessful {
				visible++
			}
		}
		if visible != 1 {
			t.Errorf("%s %s: %d successful runs, want 1: %+v", ing, day, visible, s.runsOf(ing, day))
		}
	}
}

// dayNow is the day's row in the store now, or a zero Day.
func (s *e2eStack) dayNow(ingestion string, day civil.Date) store.Day {
	s.t.Helper()
	days, err := s.in.Store.Days(context.Background(), store.DayFilter{Project: demo.ProjectName, Ingestion: ingestion, From: day.String(), To: day.String()})
	if err != nil {
		s.t.Fatal(err)
	}
	if len(days) == 0 {
		return store.Day{}
	}
	return days[0]
}
