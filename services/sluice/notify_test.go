package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/notify"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// TestNotifierBesideLoader: the loader target runs a notifier that
// delivers from the store's outbox, and drains it when stopped.
func TestNotifierBesideLoader(t *testing.T) {
	ctx := context.Background()
	st, err := duckstore.Open(ctx, filepath.Join(t.TempDir(), "s.duckdb"), duckstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ids []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		ids = append(ids, r.Header.Get(notify.HeaderID))
	}))
	defer srv.Close()
	settings := demo.Config(demo.ConfigOptions{APIKey: "k"})
	settings.Projects[0].WebhookURL = srv.URL
	if err := st.UpdateRun(ctx, store.RunUpdate{RunID: "r1", Project: demo.ProjectName, Ingestion: "events_daily",
		Type: "events", Date: "2024-02-20", Status: vocab.StatusFailed, ErrorCategory: vocab.CategoryQuery, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	in := &Infra{Settings: settings, Store: st, Registry: prometheus.NewRegistry(), Logger: log, Clock: time.Now}
	n, err := notifierFor(in, log, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n.name != "notifier" || n.stop != stageNotify {
		t.Fatalf("runnable %q", n.name)
	}
	stopped, cancel := context.WithCancel(ctx)
	cancel() // what is due goes out in the drain
	if err := n.run(stopped); err != nil {
		t.Fatalf("notifier returned %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := demo.ProjectName + "/r1/failed"; len(ids) != 1 || ids[0] != want {
		t.Fatalf("webhook got %v, want one %s", ids, want)
	}
}
