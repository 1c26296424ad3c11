package extractor

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/kafka/kafkatest"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/schemas"
)

// TestOutsideRequests: requests an outside system publishes onto
// ingest-requests take the day's lease, queue behind a running day, and
// when wrong reach the dead-letter topic and, where there is a source to
// show them under, the status.
func TestOutsideRequests(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	day := civil.Date{Year: 2024, Month: time.April, Day: 2}
	spec := demo.Spec{Days: 2, LastDay: day, EventsPerDay: 30, MetricsPerDay: 10, Seed: 9}
	whPath := filepath.Join(dir, "wh.duckdb")
	if _, err := demo.SeedDuckDBFile(ctx, whPath, spec); err != nil {
		t.Fatal(err)
	}
	kcfg, admin := kafkatest.Start(t, kafka.Config{TopicPrefix: "t."})
	settings := demo.Config(demo.ConfigOptions{APIKey: "k", DuckDBPath: whPath, Kafka: kcfg.Brokers})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("Redis at 127.0.0.1:6379 is not reachable (%v)", err)
		}
		t.Fatal(err)
	}
	prefix := "sluice-extractor-test-" + runid.New()[:12] + ":"
	t.Cleanup(func() {
		if keys, _ := rdb.Keys(context.Background(), prefix+"*").Result(); len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	st8 := state.New(rdb, state.Options{Prefix: prefix})
	st, err := duckstore.Open(ctx, filepath.Join(dir, "store.duckdb"), duckstore.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	pool := warehouse.NewPool(settings.Connections, map[string]warehouse.Opener{
		"duckdb": func(_ context.Context, c config.Connection) (warehouse.Source, error) { return duckdb.Open(c) },
	})
	t.Cleanup(func() { pool.Close() })
	reg := prometheus.NewRegistry()
	days, err := dispatch.New(dispatch.Config{LeaseTTL: time.Hour}, dispatch.Deps{Codecs: codecs, Settings: settings, Store: st,
		State: st8, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{}, Deps{Kafka: kcfg, Codecs: codecs, Sources: pool, Settings: settings,
		Store: st, Dispatcher: days, Logger: log, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	publish := func(req schemas.IngestRequest) {
		t.Helper()
		data, err := codecs.Encode(codecs.IngestRequest, &req)
		if err != nil {
			t.Fatal(err)
		}
		if err := kafka.ProduceSync(ctx, admin, &kgo.Record{Topic: kcfg.Topic(schemas.TopicIngestRequests), Value: data}); err != nil {
			t.Fatal(err)
		}
	}
	waitRun := func(id string, ok func(store.Run) bool) store.Run {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			r, err := st.Run(ctx, demo.ProjectName, id)
			if err == nil && ok(r) {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %s: last seen %+v (%v)", id, r, err)
			}
			time.Sleep(10 * time.Millisecond) // polling the running service
		}
	}
	key := dispatch.Day{Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: day.String()}

	// A request for a free day leases it and extracts.
	publish(schemas.IngestRequest{RequestID: "orch-1", Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: day.String(), Trigger: string(vocab.TriggerScheduled)})
	r := waitRun("req-orch-1", func(r store.Run) bool { return r.Status == vocab.StatusDownloaded })
	if r.Trigger != vocab.TriggerRequest || r.Fence <= 0 {
		t.Errorf("outside run %+v: want trigger request and a fence", r)
	}
	if holder, fence, _ := days.Holder(ctx, key); holder != "req-orch-1" || fence != r.Fence {
		t.Errorf("day held by %q fence %d, want req-orch-1 fence %d (the loader releases it)", holder, fence, r.Fence)
	}

	// Two more while it holds the day: queued once, the newer wins.
	publish(schemas.IngestRequest{RequestID: "orch-2", Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: day.String()})
	waitRun("req-orch-2", func(r store.Run) bool { return r.Status == vocab.StatusScheduled })
	publish(schemas.IngestRequest{RequestID: "orch-3", Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: day.String()})
	waitRun("req-orch-3", func(r store.Run) bool { return r.Status == vocab.StatusScheduled })
	waitRun("req-orch-2", func(r store.Run) bool { return r.Status == vocab.StatusSuperseded })
	if pending, ok, err := days.Pending(ctx, key); err != nil || !ok || pending != "req-orch-3" {
		t.Fatalf("pending %q %v (%v), want req-orch-3", pending, ok, err)
	}

	// A bad date of a known ingestion: a FAILED run with REQUEST_ERROR.
	publish(schemas.IngestRequest{RequestID: "orch-bad", Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: "2024-02-30"})
	bad := waitRun("req-orch-bad", func(r store.Run) bool { return r.Status == vocab.StatusFailed })
	if bad.ErrorCategory != vocab.CategoryRequest || bad.Ingestion != demo.WebEvents {
		t.Errorf("bad-date run %+v", bad)
	}
	// An unknown ingestion: only the dead-letter topic and a metric.
	publish(schemas.IngestRequest{RequestID: "orch-unknown", Project: demo.ProjectName, Ingestion: "nope", Date: day.String()})

	cl, err := kgo.NewClient(kgo.SeedBrokers(kcfg.Brokers...), kgo.ConsumeTopics(kcfg.Topic(schemas.TopicDeadLetter)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	reasons := map[string]string{}
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for len(reasons) < 2 && pctx.Err() == nil {
		cl.PollFetches(pctx).EachRecord(func(rec *kgo.Record) {
			var dl schemas.DeadLetter
			if err := codecs.Decode(codecs.DeadLetter, rec.Value, &dl); err != nil {
				t.Fatal(err)
			}
			reasons[dl.Ingestion] = dl.Reason
		})
	}
	if reasons[demo.WebEvents] != string(vocab.ReasonBadDate) || reasons["nope"] != string(vocab.ReasonUnknownIngestion) {
		t.Errorf("dead letters by ingestion: %v", reasons)
	}
	var m dto.Metric
	if err := svc.metrics.rejected.WithLabelValues(string(vocab.ReasonUnknownIngestion)).Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("unknown_ingestion counter %v (%v), want 1", m.GetCounter().GetValue(), err)
	}

	// A request whose run is already over (redelivered after a crash, or
	// read again by a new extractor group) never queries the warehouse.
	if err := st.UpdateRun(ctx, store.RunUpdate{RunID: "done-run", Project: demo.ProjectName, Ingestion: demo.DailyMetrics,
		Type: config.TypeMetrics, Date: day.String(), Trigger: vocab.TriggerScheduled, Status: vocab.StatusFailed,
		ErrorCategory: vocab.CategoryQuery, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	publish(schemas.IngestRequest{RequestID: "planner-1", RunID: "done-run", Project: demo.ProjectName, Ingestion: demo.DailyMetrics,
		Date: day.String(), Trigger: string(vocab.TriggerScheduled), Fence: 1})
	skipped := svc.metrics.runs.WithLabelValues("skipped_finished")
	deadline := time.Now().Add(20 * time.Second)
	for {
		var sm dto.Metric
		if err := skipped.Write(&sm); err == nil && sm.GetCounter().GetValue() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the finished run's request was not skipped")
		}
		time.Sleep(10 * time.Millisecond) // polling the running service
	}
	if r := waitRun("done-run", func(store.Run) bool { return true }); len(r.History) != 1 || r.Status != vocab.StatusFailed {
		t.Errorf("finished run was touched again: %+v", r)
	}
}
