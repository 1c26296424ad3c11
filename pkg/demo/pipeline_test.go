package demo

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/mapping"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/pkg/warehouse/postgres"
	"github.com/sluicehq/sluice/schemas"
)

// The demo data through the real extractor source and the real mapper:
// every day's rejections, by reason, are exactly what Expected says, and
// every other row maps. This is what `sluice dev --once` reconciles.
func TestDemoDaysMapAsExpected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testSpec()

	cases := []struct {
		name string
		open func(t *testing.T) (warehouse.Source, ConfigOptions)
	}{
		{"duckdb", func(t *testing.T) (warehouse.Source, ConfigOptions) {
			path := filepath.Join(t.TempDir(), "wh.duckdb")
			if _, err := SeedDuckDBFile(ctx, path, s); err != nil {
				t.Fatal(err)
			}
			opts := ConfigOptions{APIKey: "k", DuckDBPath: path}
			src, err := duckdb.Open(Config(opts).Connections[0])
			if err != nil {
				t.Fatal(err)
			}
			return src, opts
		}},
		{"postgres", func(t *testing.T) (warehouse.Source, ConfigOptions) {
			w := openPostgres(t)
			if _, err := w.seed(s); err != nil {
				t.Fatal(err)
			}
			opts := ConfigOptions{APIKey: "k", Warehouse: WarehousePostgres, Postgres: PostgresWarehouse{
				Host: "127.0.0.1", Port: 5432, User: "postgres", Database: "postgres", SSLMode: "disable", Schema: w.schema}}
			src, err := postgres.Open(ctx, Config(opts).Connections[0])
			if err != nil {
				t.Fatal(err)
			}
			return src, opts
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, opts := tc.open(t)
			defer src.Close()
			f := Config(opts)
			exp := Expected(s)
			for _, in := range f.Ingestions {
				for _, day := range s.Dates() {
					want := exp[day].Events
					if in.Type == config.TypeMetrics {
						want = exp[day].Metrics
					}
					if got := mapDay(t, src, f, in, day.String(), s); !reflect.DeepEqual(got, want) {
						t.Errorf("%s %s: mapped %+v, want %+v", in.Name, day, got, want)
					}
				}
			}
		})
	}
}

// mapDay streams one day of in through src and the mapper and counts rows
// and rejections by reason.
func mapDay(tb testing.TB, src warehouse.Source, f *config.File, in config.Ingestion, day string, s Spec) TableCounts {
	tb.Helper()
	p, _ := f.Project(in.Project)
	m, err := mapping.New(in, p.IDTypes)
	if err != nil {
		tb.Fatalf("%s: %v", in.Name, err)
	}
	got := TableCounts{Rejected: map[string]int64{}}
	var out schemas.MappedBatch
	d := s.LastDay
	if err := d.UnmarshalText([]byte(day)); err != nil {
		tb.Fatal(err)
	}
	n, err := src.Stream(context.Background(), in.Query, d, 500, func(b *warehouse.Batch) error {
		raw := &schemas.RawBatch{Date: day, FirstRow: got.Rows, RowCount: int64(b.Rows), Columns: b.Columns}
		m.Map(raw, &out, nil)
		if mapped := int64(len(out.Events) + len(out.Metrics)); mapped+sum(out.Rejected) != out.RowCount {
			tb.Fatalf("%s %s: %d mapped + %d rejected != %d rows", in.Name, day, mapped, sum(out.Rejected), out.RowCount)
		}
		got.Rows += out.RowCount
		for _, r := range out.Rejected {
			got.Rejected[r.Reason] += r.Count
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("%s %s: stream: %v", in.Name, day, err)
	}
	if n != got.Rows {
		tb.Fatalf("%s %s: streamed %d rows, mapped %d", in.Name, day, n, got.Rows)
	}
	return got
}

func sum(rs []schemas.ReasonCount) int64 {
	var n int64
	for _, r := range rs {
		n += r.Count
	}
	return n
}
