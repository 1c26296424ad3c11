package loader

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"cloud.google.com/go/civil"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/mapping"
	"github.com/sluicehq/sluice/pkg/runid"
	pgstore "github.com/sluicehq/sluice/pkg/store/postgres"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/schemas"
)

const benchDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// BenchmarkDecodeLoad is the loader's per-row path: decode mapped-events
// records of 2,000 demo events each and stage them in the PostgreSQL store
// by binary COPY, 16 records per transaction like a poll.
func BenchmarkDecodeLoad(b *testing.B) {
	const rows, batchRows, perPoll = 32_000, 2000, 16
	ctx := b.Context()
	records := mappedRecords(b, rows, batchRows)
	pool, err := pgxpool.New(ctx, benchDSN)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if os.Getenv("CI") == "" {
			b.Skipf("PostgreSQL at 127.0.0.1:5432 is not reachable (%v)", err)
		}
		b.Fatal(err)
	}
	defer pool.Close()
	schema := "bench_load_" + runid.New()[:10]
	b.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	st, err := pgstore.Open(ctx, benchDSN, pgstore.Options{Schema: schema})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		b.Fatal(err)
	}
	decoded := make([]*schemas.MappedBatch, perPoll)
	for i := range decoded {
		decoded[i] = new(schemas.MappedBatch)
	}
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	iter := 0
	for b.Loop() {
		iter++
		// A new extraction each time, or the store skips the batches as redelivered.
		extractID := fmt.Sprintf("bench-%d", iter)
		for i := 0; i < len(records); i += perPoll {
			poll := decoded[:min(perPoll, len(records)-i)]
			for j, bt := range poll {
				if err := codecs.Decode(codecs.MappedBatch, records[i+j], bt); err != nil {
					b.Fatal(err)
				}
				bt.ExtractID = extractID
			}
			if err := st.StageBatches(ctx, poll); err != nil {
				b.Fatal(err)
			}
		}
	}
	runtime.ReadMemStats(&ms1)
	total := float64(b.N * rows)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/row")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/total, "allocs/row")
}

// mappedRecords seeds a DuckDB day, streams and maps it, and returns the
// encoded mapped-events records.
func mappedRecords(tb testing.TB, rows, batchRows int) [][]byte {
	tb.Helper()
	day := civil.Date{Year: 2024, Month: 3, Day: 14}
	path := filepath.Join(tb.TempDir(), "wh.duckdb")
	if _, err := demo.SeedDuckDBFile(tb.Context(), path, demo.BenchSpec(day, rows)); err != nil {
		tb.Fatal(err)
	}
	f := demo.Config(demo.ConfigOptions{APIKey: "k", DuckDBPath: path})
	ing, _ := f.Ingestion(demo.ProjectName, demo.WebEventsAPI)
	p, _ := f.Project(demo.ProjectName)
	mp, err := mapping.New(*ing, p.IDTypes)
	if err != nil {
		tb.Fatal(err)
	}
	src, err := duckdb.Open(f.Connections[0])
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	codecs, err := schemas.NewCodecs()
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	raw := schemas.RawBatch{RunID: "run", ExtractID: "x", Project: demo.ProjectName, Ingestion: demo.WebEventsAPI,
		Date: day.String(), Trigger: string(vocab.TriggerAPI), Kind: schemas.KindRows, Fence: 1}
	_, err = src.Stream(tb.Context(), ing.Query, day, batchRows, func(bt *warehouse.Batch) error {
		raw.Seq, raw.RowCount, raw.Columns = int64(len(out)), int64(bt.Rows), bt.Columns
		m := schemas.MappedBatch{RunID: raw.RunID, ExtractID: raw.ExtractID, Project: raw.Project, Ingestion: raw.Ingestion,
			Date: raw.Date, Trigger: raw.Trigger, Fence: raw.Fence, Kind: raw.Kind, Type: ing.Type, Seq: raw.Seq, RowCount: raw.RowCount}
		mp.Map(&raw, &m, func(mapping.Rejection) {})
		if len(m.Events) != bt.Rows {
			return fmt.Errorf("mapped %d of %d rows", len(m.Events), bt.Rows)
		}
		data, err := codecs.Encode(codecs.MappedBatch, &m)
		out = append(out, data)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}
