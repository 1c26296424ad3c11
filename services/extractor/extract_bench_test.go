package extractor

import (
	"path/filepath"
	"runtime"
	"testing"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/schemas"
)

// BenchmarkExtractEncode is the extractor's per-row path: stream a day of
// demo events from DuckDB in batches of 2,000 rows and encode each batch
// as a raw-rows Avro record, as extract does (without producing).
func BenchmarkExtractEncode(b *testing.B) {
	const rows, batchRows = 100_000, 2000
	day := civil.Date{Year: 2024, Month: 3, Day: 14}
	path := filepath.Join(b.TempDir(), "wh.duckdb")
	if _, err := demo.SeedDuckDBFile(b.Context(), path, demo.BenchSpec(day, rows)); err != nil {
		b.Fatal(err)
	}
	f := demo.Config(demo.ConfigOptions{APIKey: "k", DuckDBPath: path})
	ing, _ := f.Ingestion(demo.ProjectName, demo.WebEventsAPI)
	src, err := duckdb.Open(f.Connections[0])
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	codecs, err := schemas.NewCodecs()
	if err != nil {
		b.Fatal(err)
	}
	raw := schemas.RawBatch{RunID: "run", ExtractID: "x", Project: demo.ProjectName, Ingestion: demo.WebEventsAPI,
		Date: day.String(), Trigger: string(vocab.TriggerAPI), Kind: schemas.KindRows}
	var bytes int64
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	for b.Loop() {
		var seq int64
		n, err := src.Stream(b.Context(), ing.Query, day, batchRows, func(bt *warehouse.Batch) error {
			raw.Seq, raw.RowCount, raw.Columns = seq, int64(bt.Rows), bt.Columns
			data, err := codecs.Encode(codecs.RawBatch, &raw)
			seq++
			bytes += int64(len(data))
			return err
		})
		if err != nil || n != rows {
			b.Fatalf("streamed %d rows: %v", n, err)
		}
	}
	runtime.ReadMemStats(&ms1)
	reportPerRow(b, rows, ms1.Mallocs-ms0.Mallocs)
	b.ReportMetric(float64(bytes)/float64(b.N*rows), "avro-bytes/row")
}

// reportPerRow adds ns/row and allocs/row to the benchmark's figures.
func reportPerRow(b *testing.B, rowsPerOp int, mallocs uint64) {
	total := float64(b.N * rowsPerOp)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/row")
	b.ReportMetric(float64(mallocs)/total, "allocs/row")
}
