package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/runid"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe to read while dev writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDevOnceReconcilesEveryDay(t *testing.T) {
	var out, errs syncBuffer
	code := dispatch(t.Context(), []string{"dev", "--once", "--days", "3", "--events-per-day", "2500",
		"--kafka-addr", freeAddr(t), "--http-addr", freeAddr(t), "--api-key", "k", "--data-dir", t.TempDir()}, &out, &errs)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errs.String())
	}
	text := out.String()
	if !strings.Contains(text, "All 6 days reconciled.") {
		t.Fatalf("no reconciliation verdict:\n%s", text)
	}
	// Every demo day has its bad rows rejected with reasons in the table.
	for _, reason := range []string{"event_name_missing=", "timestamp_unit_mismatch=", "id_type_unknown=", "denominator_null="} {
		if !strings.Contains(text, reason) {
			t.Errorf("table lacks rejected reason %s:\n%s", reason, text)
		}
	}
}

// The checks a new user does against a running `sluice dev --api-key K`:
// the topics are listed by any Kafka client, and the README's curl gets
// 202 and then 429.
func TestDevServesKafkaAndTheTriggerAPI(t *testing.T) {
	kafkaAddr, httpAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	var out, errs syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"dev", "--days", "2", "--events-per-day", "200", "--kafka-addr", kafkaAddr,
			"--http-addr", httpAddr, "--api-key", "K", "--data-dir", t.TempDir()}, &out, &errs)
	}()
	defer func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("dev exited %d on cancel\n%s", code, errs.String())
		}
	}()

	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var topics kadm.TopicDetails
	waitFor(t, "the topics", func() bool {
		topics, err = adm.ListTopics(ctx)
		return err == nil && len(topics) >= len(kafka.AllTopics)
	})
	for _, name := range kafka.AllTopics {
		if !topics.Has(name) {
			t.Errorf("topic %s not listed; have %v", name, topics.Names())
		}
	}

	body := fmt.Sprintf(`{"datestamps": %q, "type": "events"}`, civil.DateOf(time.Now()).AddDays(-2))
	post := func() *http.Response {
		req, _ := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/v1/mark_data_ready_dwh", strings.NewReader(body))
		req.Header.Set("statsig-api-key", "K")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil
		}
		resp.Body.Close()
		return resp
	}
	var first *http.Response
	waitFor(t, "the HTTP API", func() bool { first = post(); return first != nil })
	if first.StatusCode != http.StatusAccepted {
		t.Fatalf("first mark_data_ready: %d", first.StatusCode)
	}
	if second := post(); second.StatusCode != http.StatusTooManyRequests || second.Header.Get("Retry-After") == "" {
		t.Fatalf("second mark_data_ready: %d Retry-After=%q", second.StatusCode, second.Header.Get("Retry-After"))
	}
	if !strings.Contains(out.String(), "API key") || !strings.Contains(out.String(), kafkaAddr) {
		t.Errorf("banner lacks the key or the broker address:\n%s", out.String())
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond) // polling another goroutine's servers
	}
}

// `sluice dev --config` runs the same stack against the connections and
// store of a config file: here PostgreSQL as the warehouse and the store.
func TestDevWithConfigFileOnPostgres(t *testing.T) {
	ctx := t.Context()
	pool := pgPool(t, ctx)
	suffix := runid.New()[:10]
	whSchema, storeSchema := "devcfg_wh_"+suffix, "devcfg_store_"+suffix
	t.Cleanup(func() {
		for _, s := range []string{whSchema, storeSchema} {
			_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE")
		}
	})
	spec := demo.Spec{Days: 5, LastDay: civil.DateOf(time.Now().UTC()), EventsPerDay: 600, MetricsPerDay: 200, BadRowEvery: 50, Seed: 3}
	if _, err := demo.SeedPostgres(ctx, pool, whSchema, spec); err != nil {
		t.Fatal(err)
	}
	const dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	t.Setenv("SLUICE_DEVCFG_DSN", dsn)
	yaml := demo.ConfigYAML(demo.ConfigOptions{
		APIKey:    "k",
		Warehouse: demo.WarehousePostgres,
		Postgres:  demo.PostgresWarehouse{DSNEnv: "SLUICE_DEVCFG_DSN", Schema: whSchema},
		Store:     config.Store{Kind: "postgres", DSNEnv: "SLUICE_DEVCFG_DSN", Schema: storeSchema},
		Pipeline:  config.Pipeline{CatchUpDays: 3},
	})
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, yaml, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errs syncBuffer
	code := dispatch(ctx, []string{"dev", "--once", "--config", path, "--kafka-addr", freeAddr(t), "--http-addr", freeAddr(t)}, &out, &errs)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errs.String())
	}
	if !strings.Contains(out.String(), "All 6 days reconciled.") {
		t.Fatalf("want 3 days of 2 scheduled ingestions reconciled:\n%s", out.String())
	}
	// The rows are in the PostgreSQL store, visible through its view.
	var n int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{storeSchema, "visible_events"}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no events visible in the PostgreSQL store")
	}
}
