package mapping

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestValidateGolden(t *testing.T) {
	t.Parallel()
	day := civil.Date{Year: 2024, Month: 3, Day: 10}
	S, L := schemas.TypeString, schemas.TypeLong
	tests := []struct {
		name   string
		ing    func() config.Ingestion
		sample func(tb testing.TB) *warehouse.Batch
		cost   *Cost
		wantOK bool
	}{
		{
			name: "events_mixed",
			ing:  eventsIngestion,
			sample: func(tb testing.TB) *warehouse.Batch {
				return &warehouse.Batch{Rows: 4, Columns: []schemas.Column{
					col(tb, "name", S, "purchase", "view", strings.Repeat("n", 130), "purchase"),
					col(tb, "ts", L, noon, noon+60, noon, int64(noon)*1000),
					col(tb, "user_id", L, 1, nil, 3, 4),
					col(tb, "device_id", S, "d1", nil, nil, "d4"),
					col(tb, "value", schemas.TypeDouble, 9.0, nil, nil, 1.5),
					col(tb, "plan", S, "pro", "free", nil, nil),
					col(tb, "country", S, "NZ", nil, nil, nil),
					col(tb, "meta", schemas.TypeJSON, `{"page":"/a","ab":{"v":"b"}}`, `{"page":"/b"}`, nil, `not json`),
				}}
			},
			cost:   &Cost{BytesProcessed: 3 << 20, Detail: "BigQuery dry run"},
			wantOK: true,
		},
		{
			name: "events_missing_column_and_millis",
			ing:  eventsIngestion,
			sample: func(tb testing.TB) *warehouse.Batch {
				return &warehouse.Batch{Rows: 2, Columns: []schemas.Column{
					col(tb, "NAME", S, "purchase", "view"),
					col(tb, "ts", L, int64(noon)*1000, int64(noon)*1000+5),
					col(tb, "user_id", S, "u1", "u2"),
					col(tb, "value", S, nil, nil),
					col(tb, "plan", schemas.TypeBoolean, true, false),
					col(tb, "country", S, nil, nil),
					col(tb, "meta", S, nil, nil),
				}}
			},
		},
		{
			name: "metrics_id_type_case",
			ing:  metricsIngestion,
			sample: func(tb testing.TB) *warehouse.Batch {
				return &warehouse.Batch{Rows: 3, Columns: []schemas.Column{
					col(tb, "unit", L, 1, 2, 3),
					col(tb, "id_type", S, "userID", "UserID", "userID"),
					col(tb, "ds", S, "2024-03-10", "2024-03-10", "2024-03-09"),
					col(tb, "metric", S, "revenue", "revenue", "revenue"),
					col(tb, "value", schemas.TypeDecimal, "10.50", "3", nil),
					col(tb, "num", schemas.TypeDouble, nil, nil, 1.0),
					col(tb, "den", schemas.TypeDouble, nil, nil, 2.0),
				}}
			},
			wantOK: true,
		},
		{
			name:   "metrics_no_rows",
			ing:    metricsIngestion,
			sample: func(tb testing.TB) *warehouse.Batch { return &warehouse.Batch{Columns: metricBaseEmpty(tb)} },
			wantOK: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rep := Validate(tt.ing(), testIDTypes, tt.sample(t), day)
			rep.QueryAsRun = "SELECT *\nFROM demo.events\nWHERE ds = $1 -- $1 = '2024-03-10'\nLIMIT 100"
			rep.Cost = tt.cost
			if rep.OK != tt.wantOK {
				t.Errorf("OK = %v, want %v; problems: %v", rep.OK, tt.wantOK, rep.Problems)
			}
			if rep.Mapped+rep.Rejected != rep.SampleRows {
				t.Errorf("mapped %d + rejected %d != sample rows %d", rep.Mapped, rep.Rejected, rep.SampleRows)
			}
			js, err := json.MarshalIndent(rep, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name+".txt.golden", rep.Text())
			golden(t, tt.name+".json.golden", string(js)+"\n")
		})
	}
}

func metricBaseEmpty(tb testing.TB) []schemas.Column {
	cols := metricBase(tb)
	for i := range cols {
		c := &cols[i]
		c.Nulls, c.Longs, c.Doubles, c.Strings, c.Bools = nil, nil, nil, nil, nil
	}
	return cols
}

func golden(tb testing.TB, name, got string) {
	tb.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			tb.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if got != string(want) {
		tb.Errorf("%s differs from the golden file (run go test ./pkg/mapping -run TestValidateGolden -update after checking):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
