package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/alicebob/miniredis/v2"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	daydispatch "github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
)

// replayBed is the dev stack's pieces for the replay test: kfake,
// miniredis, a seeded DuckDB warehouse and a DuckDB store, with two config
// files: one whose project lacks the companyID id type, one fixed.
type replayBed struct {
	day                  civil.Date
	brokenPath, goodPath string
	warehousePath        string
}

func newReplayBed(t *testing.T) *replayBed {
	t.Helper()
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	redisServer := miniredis.RunT(t)

	dir := t.TempDir()
	b := &replayBed{day: civil.Date{Year: 2026, Month: 11, Day: 20}, warehousePath: filepath.Join(dir, "warehouse.duckdb")}
	// No deliberately bad rows: every row the broken config rejects is a
	// companyID row, and the fixed config must load every one.
	spec := demo.Spec{Days: 1, LastDay: b.day, EventsPerDay: 0, MetricsPerDay: 600, Seed: 11}
	src, err := duckdb.Open(config.Connection{Path: b.warehousePath})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := demo.SeedDuckDB(t.Context(), src.DB(), spec); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	good := demo.ConfigYAML(demo.ConfigOptions{APIKey: "k", DuckDBPath: b.warehousePath,
		Store: config.Store{Kind: "duckdb", Path: filepath.Join(dir, "store.duckdb")},
		Kafka: broker.Addrs(), RedisAddr: redisServer.Addr()})
	// The events ingestions map a companyID id, which the broken project
	// could not have; this test loads metrics only.
	good = bytes.ReplaceAll(good, []byte("        companyID: company_id\n"), nil)
	broken := bytes.Replace(good, []byte("      - companyID\n"), nil, 1)
	if bytes.Equal(broken, good) {
		t.Fatal("the demo config's id_types no longer list companyID; adapt the test")
	}
	b.goodPath, b.brokenPath = filepath.Join(dir, "good.yaml"), filepath.Join(dir, "broken.yaml")
	for path, data := range map[string][]byte{b.goodPath: good, b.brokenPath: broken} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// runningStack runs the extractor, mapper and loader of config path until
// the test ends or stop is called; done receives every finished run.
type runningStack struct {
	in   *Infra
	done chan store.RunEnd
	stop func()
}

func startStack(t *testing.T, path string) *runningStack {
	t.Helper()
	settings, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	in, err := NewInfra(t.Context(), settings, logger)
	if err != nil {
		t.Fatal(err)
	}
	s := &runningStack{in: in, done: make(chan store.RunEnd, 16)}
	services, err := Build(t.Context(), in, RunOptions{
		Targets:      []string{"extractor", "mapper", "loader"},
		LoaderOnDone: func(_ context.Context, end store.RunEnd, _ store.Outcome) { s.done <- end },
	})
	if err != nil {
		in.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	ended := make(chan error, 1)
	go func() { ended <- RunAll(ctx, services, Shutdown{Logger: in.Logger}) }()
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-ended; err != nil {
			t.Errorf("stack stopped with %v", err)
		}
		in.Close()
	}
	t.Cleanup(s.stop)
	return s
}

// day returns the store's view of the bed's day of ingestion.
func (s *runningStack) day(t *testing.T, ingestion string, d civil.Date) store.Day {
	t.Helper()
	days, err := s.in.Store.Days(t.Context(), store.DayFilter{Project: demo.ProjectName, Ingestion: ingestion, From: d.String(), To: d.String()})
	if err != nil || len(days) != 1 {
		t.Fatalf("day %s of %s: %v (%d days)", d, ingestion, err, len(days))
	}
	return days[0]
}

func TestReplayLoadsTheRejectedRowsOnce(t *testing.T) {
	bed := newReplayBed(t)
	const ing = demo.DailyMetricsAPI // api_triggered: nothing loads unless asked

	// 1. Load the day under the broken config: companyID rows are rejected.
	first := startStack(t, bed.brokenPath)
	d, closeDispatcher, err := newDispatcher(t.Context(), first.in, "test")
	if err != nil {
		t.Fatal(err)
	}
	oldID, err := d.Dispatch(t.Context(), daydispatch.Request{Project: demo.ProjectName, Ingestion: ing, Date: bed.day.String(), Trigger: vocab.TriggerAPI})
	closeDispatcher()
	if err != nil {
		t.Fatal(err)
	}
	waitEnd(t, first.done, oldID)
	before := first.day(t, ing, bed.day)
	oldRun, err := first.in.Store.Run(t.Context(), demo.ProjectName, oldID)
	if err != nil {
		t.Fatal(err)
	}
	rejected := before.Rejected[string(vocab.ReasonIDTypeUnknown)]
	if before.Status != vocab.StatusSuccessful || rejected == 0 || sum(before.Rejected) != rejected || before.RowsLoaded+rejected != 600 {
		t.Fatalf("first load: %s, %d loaded, rejected %v; want some rows rejected only as %s and 600 in all",
			before.Status, before.RowsLoaded, before.Rejected, vocab.ReasonIDTypeUnknown)
	}
	first.stop()

	// 2. Fix the config (the project gets companyID), restart the services
	// on it, and replay the run with the CLI.
	second := startStack(t, bed.goodPath)
	var stdout, stderr bytes.Buffer
	code := dispatch(t.Context(), []string{"replay", "--config", bed.goodPath, "--run", oldID, "--wait", "--log-level", "error"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("replay exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	after := second.day(t, ing, bed.day)
	newID := after.VisibleRunID
	if newID == oldID {
		t.Fatalf("the day still shows run %s", oldID)
	}
	newRun, err := second.in.Store.Run(t.Context(), demo.ProjectName, newID)
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Join(strings.Fields(stdout.String()), " ") // columns aligned by any spaces
	for _, want := range []string{
		"Run " + oldID + ": metrics of " + ing + " on " + bed.day.String() + " (trigger api), IMPORT_SUCCESSFUL",
		fmt.Sprintf("%s %d", vocab.ReasonIDTypeUnknown, rejected),
		"new run " + newID + " (trigger replay)",
		"OLD RUN", "NEW RUN",
		fmt.Sprintf("mapped (loaded) %d %d", oldRun.Mapped, newRun.Mapped),
		fmt.Sprintf("rejected %d 0", rejected),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("replay output lacks %q:\n%s", want, stdout.String())
		}
	}

	// 3. The day rose by exactly the rejected rows, and holds each
	// warehouse row once.
	if newRun.Trigger != vocab.TriggerReplay || after.RowsLoaded != before.RowsLoaded+rejected || sum(after.Rejected) != 0 {
		t.Errorf("after replay: trigger %s, %d loaded (was %d, +%d rejected), rejected %v",
			newRun.Trigger, after.RowsLoaded, before.RowsLoaded, rejected, after.Rejected)
	}
	visible, err := second.in.Store.VisibleMetrics(t.Context(), demo.ProjectName, ing, bed.day.String())
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(visible))
	for i, m := range visible {
		got[i] = m.UnitID + "|" + m.IDType + "|" + m.MetricName
	}
	slices.Sort(got)
	want := warehouseMetricKeys(t, bed.warehousePath, bed.day)
	if !slices.Equal(got, want) {
		t.Errorf("store holds %d metrics, warehouse %d; first differences: %s", len(got), len(want), firstDiff(got, want))
	}
	if n := len(slices.Compact(slices.Clone(got))); n != len(got) {
		t.Errorf("%d duplicate metrics in the store", len(got)-n)
	}

	t.Run("nothing to replay", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code := dispatch(t.Context(), []string{"replay", "--config", bed.goodPath, "--run", newID, "--project", demo.ProjectName, "--log-level", "error"}, &stdout, &stderr)
		if code != exitOK || !strings.Contains(stdout.String(), "rejected no rows: nothing to replay") {
			t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		}
		if d := second.day(t, ing, bed.day); d.VisibleRunID != newID {
			t.Errorf("the day now shows run %s, want %s untouched", d.VisibleRunID, newID)
		}
	})
	t.Run("unknown run", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code := dispatch(t.Context(), []string{"replay", "--config", bed.goodPath, "--run", "nope", "--log-level", "error"}, &stdout, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), "run nope: not found in any project of the config") {
			t.Errorf("exit %d, stderr %q", code, stderr.String())
		}
	})
}

// waitEnd waits for run id to finish, bounded so a stuck pipeline fails
// the test instead of hanging it.
func waitEnd(t *testing.T, done <-chan store.RunEnd, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		select {
		case end := <-done:
			if end.RunID == id {
				return
			}
		case <-ctx.Done():
			t.Fatalf("run %s did not finish", id)
		}
	}
}

// warehouseMetricKeys are the day's metric rows, sorted, as the store keys them.
func warehouseMetricKeys(t *testing.T, path string, day civil.Date) []string {
	t.Helper()
	src, err := duckdb.Open(config.Connection{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	rows, err := src.DB().QueryContext(t.Context(), "SELECT unit_id || '|' || id_type || '|' || metric_name FROM metrics WHERE ds = $1 ORDER BY 1", day.String())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out) // Go's order, as got is sorted
	return out
}

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("at %d: store %q, warehouse %q", i, got[i], want[i])
		}
	}
	return "one is a prefix of the other"
}
