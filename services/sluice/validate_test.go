package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/mapping"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata")

// validateDay is the one day of the validate tests' warehouse.
var validateDay = civil.Date{Year: 2026, Month: 11, Day: 26}

// brokenMetrics is a metrics ingestion whose metric_value column is
// misspelled: the query has metric_value, the mapping says value.
const brokenMetrics = "broken_metrics"

// validateSpec is a small warehouse: one day, a bad row in every ten.
func validateSpec(last civil.Date) demo.Spec {
	return demo.Spec{Days: 1, LastDay: last, EventsPerDay: 40, MetricsPerDay: 40, BadRowEvery: 10, Seed: 7}
}

// validateConfig seeds a DuckDB demo warehouse with spec and writes a config
// for it, with the demo ingestions and brokenMetrics; change, when not nil,
// alters the config's options. It returns the config's path.
func validateConfig(tb testing.TB, spec demo.Spec, change func(*demo.ConfigOptions)) string {
	tb.Helper()
	dir := tb.TempDir()
	whPath := filepath.Join(dir, "warehouse.duckdb")
	src, err := duckdb.Open(config.Connection{Path: whPath})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := demo.SeedDuckDB(tb.Context(), src.DB(), spec); err != nil {
		tb.Fatal(err)
	}
	if err := src.Close(); err != nil {
		tb.Fatal(err)
	}
	broken := config.Ingestion{
		Name: brokenMetrics, Project: demo.ProjectName, Connection: demo.ConnectionName, Type: config.TypeMetrics,
		Query: demo.MetricsQuery("metrics"),
		Mapping: config.Mapping{UnitID: "unit_id", IDType: "id_type", Date: "ds", MetricName: "metric_name",
			MetricValue: "value"},
		Schedule: config.Schedule{Mode: config.ScheduleAPITriggered},
	}
	o := demo.ConfigOptions{APIKey: "k", DuckDBPath: whPath,
		Store: config.Store{Kind: "duckdb", Path: filepath.Join(dir, "store.duckdb")}, Extra: []config.Ingestion{broken}}
	if change != nil {
		change(&o)
	}
	yaml := demo.ConfigYAML(o)
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, yaml, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func TestValidateVerb(t *testing.T) {
	t.Parallel()
	cfg := validateConfig(t, validateSpec(validateDay), nil)
	day := "--date=" + validateDay.String()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		golden   string   // stdout must equal testdata/<golden>
		stdout   []string // stdout must contain each
		stderr   []string // stderr must contain each
	}{
		{name: "good events mapping", args: []string{"--source", demo.WebEvents, day, "--limit", "12"},
			wantCode: exitOK, golden: "validate_events.golden"},
		{name: "good metrics mapping", args: []string{"--source", demo.DailyMetrics, day, "--limit", "12"},
			wantCode: exitOK, golden: "validate_metrics.golden"},
		{name: "missing column", args: []string{"--source", brokenMetrics, day, "--limit", "12"},
			wantCode: exitFailure, golden: "validate_broken.golden"},
		{name: "unknown source", args: []string{"--source", "nope"}, wantCode: exitUsage,
			stderr: []string{`--source "nope": the config has no such ingestion; it has: broken_metrics, daily_metrics`}},
		{name: "unknown project", args: []string{"--source", demo.WebEvents, "--project", "other"}, wantCode: exitUsage,
			stderr: []string{"project other has no such ingestion"}},
		{name: "bad date", args: []string{"--source", demo.WebEvents, "--date", "2026-13-01"}, wantCode: exitUsage,
			stderr: []string{`--date "2026-13-01": want YYYY-MM-DD`}},
		{name: "limit too big", args: []string{"--source", demo.WebEvents, day, "--limit", "5000"}, wantCode: exitUsage,
			stderr: []string{"--limit: 5000 is not between 1 and 1000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := dispatch(t.Context(), append([]string{"validate", "--config", cfg}, tt.args...), &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if tt.golden != "" {
				goldenFile(t, tt.golden, stdout.String())
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

func TestValidateVerbFindsTheMostRecentDay(t *testing.T) {
	t.Parallel()
	// The demo schedule's clock is Etc/GMT+8; two days back from now there
	// is always a day inside the 7-day lookback, whatever the hour.
	last := civil.DateOf(time.Now().In(time.FixedZone("GMT+8", -8*3600))).AddDays(-2)
	spec := validateSpec(last)
	spec.Days = 3 // last-2 .. last; the newest one must be chosen
	cfg := validateConfig(t, spec, nil)
	var stdout, stderr bytes.Buffer
	code := dispatch(t.Context(), []string{"validate", "--config", cfg, "--source", demo.DailyMetrics, "--project", demo.ProjectName, "--json"}, &stdout, &stderr)
	var rep mapping.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || code != exitOK {
		t.Fatalf("exit %d (%v):\n%s\nstderr:\n%s", code, err, stdout.String(), stderr.String())
	}
	if rep.Day != last.String() || rep.SampleRows != 40 || !strings.Contains(rep.QueryAsRun, "$1 = "+last.String()) {
		t.Errorf("sampled %s (%d rows, query %q), want the newest day %s with its 40 rows", rep.Day, rep.SampleRows, rep.QueryAsRun, last)
	}
}

// TestValidateVerbContent checks what the goldens must show, so a careless
// -update cannot bless a report that lost them.
func TestValidateVerbContent(t *testing.T) {
	t.Parallel()
	cfg := validateConfig(t, validateSpec(validateDay), nil)
	run := func(t *testing.T, source string) (mapping.Report, int) {
		var stdout, stderr bytes.Buffer
		code := dispatch(t.Context(), []string{"validate", "--config", cfg, "--source", source, "--date", validateDay.String(), "--json"}, &stdout, &stderr)
		var rep mapping.Report
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("stdout is not a report (%v):\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
		return rep, code
	}
	t.Run("good", func(t *testing.T) {
		rep, code := run(t, demo.DailyMetrics)
		if code != exitOK || !rep.OK {
			t.Fatalf("exit %d ok %v problems %q", code, rep.OK, rep.Problems)
		}
		if rep.SampleRows != 40 || rep.Mapped+rep.Rejected != 40 || rep.Mapped == 0 || rep.Rejected != 4 {
			t.Errorf("sample %d rows, %d mapped, %d rejected; want 40 = 36 + 4 (one bad row in ten)", rep.SampleRows, rep.Mapped, rep.Rejected)
		}
		if len(rep.Columns) != 7 || len(rep.Metrics) == 0 {
			t.Errorf("%d columns and %d sample metrics; want the query's 7 columns and some records", len(rep.Columns), len(rep.Metrics))
		}
		if !strings.Contains(rep.QueryAsRun, "WHERE ds = $1\n-- $1 = 2026-11-26") {
			t.Errorf("query as run %q does not show the bound day", rep.QueryAsRun)
		}
	})
	t.Run("missing column", func(t *testing.T) {
		rep, code := run(t, brokenMetrics)
		if code != exitFailure || rep.OK {
			t.Fatalf("exit %d ok %v, want exit 1 and not ok", code, rep.OK)
		}
		var field *mapping.FieldCheck
		for i := range rep.Fields {
			if rep.Fields[i].Field == "metric_value" {
				field = &rep.Fields[i]
			}
		}
		if field == nil || field.Found || field.Column != "value" {
			t.Errorf("metric_value check %+v, want column value not found", field)
		}
		if !strings.Contains(strings.Join(rep.Problems, "\n"), `metric_value: column "value" is not in the query result`) {
			t.Errorf("problems %q do not name the missing column", rep.Problems)
		}
	})
}

func TestValidateVerbWarehouseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		change   func(o *demo.ConfigOptions)
		source   string
		wantCode int
		stderr   string
	}{
		{"query error", func(o *demo.ConfigOptions) {
			o.Extra = append(o.Extra, config.Ingestion{Name: "bad_query", Project: demo.ProjectName, Connection: demo.ConnectionName,
				Type: config.TypeEvents, Query: "SELECT nope FROM events WHERE ds = $1",
				Mapping:  config.Mapping{EventName: "nope", Timestamp: "nope", IDs: map[string]string{"userID": "nope"}},
				Schedule: config.Schedule{Mode: config.ScheduleAPITriggered}})
		}, "bad_query", exitFailure, "sluice validate: bad_query of demo (sample 2026-11-26): QUERY_ERROR: "},
		{"unreachable warehouse", func(o *demo.ConfigOptions) {
			o.DuckDBPath = filepath.Join(t.TempDir(), "no", "such", "dir", "w.duckdb")
		}, demo.WebEvents, exitUnhealthy, "sluice validate: web_events of demo (open connection demo_warehouse): "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := validateConfig(t, validateSpec(validateDay), tt.change)
			var stdout, stderr bytes.Buffer
			code := dispatch(t.Context(), []string{"validate", "--config", cfg, "--source", tt.source, "--date", validateDay.String()}, &stdout, &stderr)
			if code != tt.wantCode || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("exit %d stderr %q, want %d and %q", code, stderr.String(), tt.wantCode, tt.stderr)
			}
		})
	}
	t.Run("bad config", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "sluice.yaml")
		if err := os.WriteFile(path, []byte("ingestions:\n  - name: x\n    type: logs\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		if code := dispatch(t.Context(), []string{"validate", "--config", path, "--source", "x"}, &stdout, &stderr); code != exitConfig {
			t.Errorf("exit %d, want %d; stderr %q", code, exitConfig, stderr.String())
		}
	})
}

// goldenFile compares got with testdata/name; -update rewrites it.
func goldenFile(tb testing.TB, name, got string) {
	tb.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			tb.Fatal(err)
		}
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
		tb.Errorf("%s differs (run go test ./services/sluice -run TestValidateVerb -update after checking):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
