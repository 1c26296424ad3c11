package bigquery

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery/bqtest"
)

// BenchmarkStream streams a 50,000-row day (INT64, STRING) through the
// Storage Read path, server included; allocs/op over rows/op is the
// per-row cost the source adds.
func BenchmarkStream(b *testing.B) {
	const rows = 50000
	srv := bqtest.NewServer(b)
	srv.SetPageSize(5000)
	seed(b, srv, rows)
	src := openTest(b, testConn(srv), Options{})
	b.ReportAllocs()
	for b.Loop() {
		n, err := src.Stream(context.Background(), eventsQuery, testDay, 10000, func(*warehouse.Batch) error { return nil })
		if err != nil || n != rows {
			b.Fatalf("Stream = %d, %v", n, err)
		}
	}
	b.ReportMetric(float64(rows), "rows/op")
}
