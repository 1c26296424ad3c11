//go:build debug_bindings

package duckdb

import (
	"context"
	"errors"
	"testing"

	bindings "github.com/duckdb/duckdb-go-bindings"

	"github.com/sluicehq/sluice/pkg/warehouse"
)

// TestStreamReleasesNativeHandles counts the C API handles alive after
// streams that end every way a stream can end. The bindings count handles
// only when built with the debug_bindings tag:
//
//	go test -tags debug_bindings -run NativeHandles ./pkg/warehouse/duckdb/
func TestStreamReleasesNativeHandles(t *testing.T) {
	src := openTemp(t, 2)
	exec(t, src, "CREATE TABLE many AS SELECT range AS id, 'name-' || range AS name FROM range(100000)")
	query := "SELECT id, name FROM many WHERE CAST($1 AS DATE) IS NOT NULL"
	ctx := context.Background()
	stop := errors.New("stop")
	for range 20 {
		if _, err := src.Stream(ctx, query, streamDay, 1000, func(*warehouse.Batch) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Stream(ctx, query, streamDay, 1000, func(*warehouse.Batch) error { return stop }); !errors.Is(err, stop) {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		if _, err := src.Stream(cctx, query, streamDay, 1000, func(*warehouse.Batch) error { cancel(); return nil }); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		if _, err := src.Stream(ctx, "SELECT CAST('x' || id AS INTEGER) FROM many WHERE CAST($1 AS DATE) IS NOT NULL", streamDay, 1000, func(*warehouse.Batch) error { return nil }); err == nil {
			t.Fatal("conversion error expected")
		}
		if _, err := src.Sample(ctx, query, streamDay, 10); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{bindings.AllocationCounterDataChunk, bindings.AllocationCounterResult, bindings.AllocationCounterPendingResult,
		bindings.AllocationCounterPreparedStatement, bindings.AllocationCounterConfig} {
		if n, _ := bindings.GetAllocationCount(k); n != 0 {
			t.Errorf("%d %s handles alive after the streams, want 0", n, k)
		}
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{bindings.AllocationCounterConnection, bindings.AllocationCounterDatabase} {
		if n, _ := bindings.GetAllocationCount(k); n != 0 {
			t.Errorf("%d %s handles alive after Close, want 0", n, k)
		}
	}
}
