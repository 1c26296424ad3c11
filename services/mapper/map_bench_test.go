package mapper

import (
	"path/filepath"
	"runtime"
	"testing"

	"cloud.google.com/go/civil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/schemas"
)

// BenchmarkDecodeMapEncode is the mapper's per-row path, mapRecord itself:
// decode a raw-rows record of 2,000 demo events, map and validate every
// row, encode the mapped-events record.
func BenchmarkDecodeMapEncode(b *testing.B) {
	const rows, batchRows = 20_000, 2000
	day := civil.Date{Year: 2024, Month: 3, Day: 14}
	path := filepath.Join(b.TempDir(), "wh.duckdb")
	if _, err := demo.SeedDuckDBFile(b.Context(), path, demo.BenchSpec(day, rows)); err != nil {
		b.Fatal(err)
	}
	f := demo.Config(demo.ConfigOptions{APIKey: "k", DuckDBPath: path})
	codecs, err := schemas.NewCodecs()
	if err != nil {
		b.Fatal(err)
	}
	records := rawRecords(b, f.Connections[0], codecs, day, batchRows)
	// The client is never used: mapRecord only builds records.
	s, err := New(Config{}, Deps{Kafka: kafka.Config{Brokers: []string{"127.0.0.1:1"}}, Codecs: codecs, Settings: f})
	if err != nil {
		b.Fatal(err)
	}
	defer s.client.Close()
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	for b.Loop() {
		for _, rec := range records {
			out, err := s.mapRecord(rec)
			if err != nil || len(out) != 1 {
				b.Fatalf("map: %d records, %v", len(out), err)
			}
		}
	}
	runtime.ReadMemStats(&ms1)
	total := float64(b.N * rows)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/row")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/total, "allocs/row")
}

// rawRecords streams the seeded day into raw-rows records.
func rawRecords(tb testing.TB, conn config.Connection, codecs *schemas.Codecs, day civil.Date, batchRows int) []*kgo.Record {
	tb.Helper()
	src, err := duckdb.Open(conn)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	raw := schemas.RawBatch{RunID: "run", ExtractID: "x", Project: demo.ProjectName, Ingestion: demo.WebEventsAPI,
		Date: day.String(), Trigger: "api", Kind: schemas.KindRows}
	var out []*kgo.Record
	_, err = src.Stream(tb.Context(), demo.EventsQuery(`"events"`), day, batchRows, func(bt *warehouse.Batch) error {
		raw.Seq, raw.RowCount, raw.Columns = int64(len(out)), int64(bt.Rows), bt.Columns
		data, err := codecs.Encode(codecs.RawBatch, &raw)
		out = append(out, &kgo.Record{Key: []byte("k"), Value: data})
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}
