package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/state"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
)

// TestAdminReadyz checks that /readyz answers 200 only when Redis, the
// store and Kafka all answer, and names the one that does not.
func TestAdminReadyz(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		down     string // which dependency to stop first
		wantCode int
	}{
		{"every dependency answers", "", http.StatusOK},
		{"kafka is down", "kafka", http.StatusServiceUnavailable},
		{"redis is down", "redis", http.StatusServiceUnavailable},
		{"the store is closed", "store", http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cluster.Close)
			cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cl.Close)
			mr := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			t.Cleanup(func() { rdb.Close() })
			st, err := duckstore.Open(ctx, t.TempDir()+"/store.duckdb", duckstore.Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			in := &Infra{State: state.New(rdb, state.Options{}), Store: st, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)}
			switch tt.down {
			case "kafka":
				cluster.Close()
			case "redis":
				mr.Close()
			case "store":
				st.Close()
			}
			w := httptest.NewRecorder()
			adminHandler(in, cl.Ping).ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
			if w.Code != tt.wantCode {
				t.Fatalf("readyz = %d, want %d: %s", w.Code, tt.wantCode, w.Body)
			}
			if tt.down != "" && !strings.Contains(w.Body.String(), tt.down) {
				t.Fatalf("readyz body %q does not name %s", w.Body, tt.down)
			}
		})
	}
}
