package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
)

// TestLoaderHooks: the notifier runs beside the loader only when a project
// has a webhook, and the caller's own hook still sees every run.
func TestLoaderHooks(t *testing.T) {
	st, err := duckstore.Open(context.Background(), filepath.Join(t.TempDir(), "s.duckdb"), duckstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	defer rdb.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tt := range []struct {
		name         string
		webhook      string
		withExtra    bool
		wantNotifier bool
	}{
		{"no webhook, no hook", "", false, false},
		{"no webhook, caller's hook", "", true, false},
		{"webhook and caller's hook", "http://127.0.0.1:1/hook", true, true},
		{"webhook alone", "http://127.0.0.1:1/hook", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			settings := demo.Config(demo.ConfigOptions{APIKey: "k"})
			settings.Projects[0].WebhookURL = tt.webhook
			in := &Infra{Settings: settings, Store: st, State: state.New(rdb, state.Options{}), Registry: prometheus.NewRegistry(), Logger: log}
			calls := 0
			var extra func(context.Context, store.RunEnd, store.Outcome)
			if tt.withExtra {
				extra = func(context.Context, store.RunEnd, store.Outcome) { calls++ }
			}
			hook, notifier, err := loaderHooks(in, extra, log)
			if err != nil {
				t.Fatal(err)
			}
			if (notifier != nil) != tt.wantNotifier {
				t.Fatalf("notifier %v, want %v", notifier != nil, tt.wantNotifier)
			}
			if hook == nil {
				if tt.withExtra || tt.wantNotifier {
					t.Fatal("no hook")
				}
				return
			}
			hook(context.Background(), store.RunEnd{RunID: "r", Project: demo.ProjectName}, store.Swapped)
			if tt.withExtra && calls != 1 {
				t.Errorf("caller's hook called %d times, want 1", calls)
			}
		})
	}
}
