package validation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// fakeSource serves fixed rows per day and records what it was asked.
type fakeSource struct {
	rows     map[civil.Date]int // rows the query returns per day
	err      error              // returned by Sample and Count
	block    bool               // Sample waits for the context to end
	mu       sync.Mutex
	counted  []civil.Date
	sampled  civil.Date
	limitArg int
}

func (f *fakeSource) Stream(context.Context, string, civil.Date, int, func(*warehouse.Batch) error) (int64, error) {
	return 0, warehouse.ErrUnsupported
}

func (f *fakeSource) Count(_ context.Context, _ string, day civil.Date) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counted = append(f.counted, day)
	if f.err != nil {
		return 0, f.err
	}
	return int64(f.rows[day]), nil
}

func (f *fakeSource) Fingerprint(context.Context, string, civil.Date) (string, error) {
	return "", warehouse.ErrUnsupported
}

// Sample returns min(rows, limit) metric rows of day: every third row has
// id type "companyID", which the test project lacks.
func (f *fakeSource) Sample(ctx context.Context, _ string, day civil.Date, limit int) (*warehouse.Batch, error) {
	f.mu.Lock()
	f.sampled, f.limitArg = day, limit
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return nil, fmt.Errorf("sample day %s: %w", day, ctx.Err())
	}
	if f.err != nil {
		return nil, fmt.Errorf("sample day %s: %w", day, f.err)
	}
	b := &warehouse.Batch{}
	b.SetColumns([]warehouse.ColumnSpec{
		{Name: "ds", Type: schemas.TypeDate, DBType: "DATE"},
		{Name: "unit_id", Type: schemas.TypeString, DBType: "VARCHAR"},
		{Name: "id_type", Type: schemas.TypeString, DBType: "VARCHAR"},
		{Name: "metric_name", Type: schemas.TypeString, DBType: "VARCHAR"},
		{Name: "metric_value", Type: schemas.TypeDouble, DBType: "DOUBLE"},
	})
	for i := range min(f.rows[day], limit) {
		idType := "userID"
		if i%3 == 2 {
			idType = "companyID"
		}
		b.AppendDate(0, warehouse.DaysSinceEpoch(day))
		b.AppendString(1, fmt.Sprintf("u%d", i))
		b.AppendString(2, idType)
		b.AppendString(3, "sessions")
		b.AppendDouble(4, float64(i))
		b.EndRow()
	}
	return b, nil
}

func (f *fakeSource) Close() error { return nil }

// dryRunSource is a fakeSource whose warehouse estimates cost.
type dryRunSource struct {
	*fakeSource
	bytes  int64
	dryErr error
}

func (d *dryRunSource) DryRun(context.Context, string, civil.Date) (int64, error) {
	return d.bytes, d.dryErr
}

var today = civil.Date{Year: 2026, Month: 11, Day: 27}

// newValidator serves src as connection "wh" of kind kind, to project
// "p" with ingestion "m" (metrics, mapping column metricCol to
// metric_value) whose schedule clock is UTC.
func newValidator(tb testing.TB, src warehouse.Source, kind, metricCol string, timeout time.Duration) *Validator {
	tb.Helper()
	placeholder := "$1"
	if kind == "bigquery" {
		placeholder = "@date"
	}
	settings := &config.File{
		Projects:    []config.Project{{Name: "p", IDTypes: []string{"userID", "stableID"}}},
		Connections: []config.Connection{{Name: "wh", Kind: kind}},
		Ingestions: []config.Ingestion{{
			Name: "m", Project: "p", Connection: "wh", Type: config.TypeMetrics,
			Query: "SELECT * FROM metrics WHERE ds = " + placeholder,
			Mapping: config.Mapping{UnitID: "unit_id", IDType: "id_type", Date: "ds", MetricName: "metric_name",
				MetricValue: metricCol},
			Schedule: config.Schedule{Timezone: "UTC"},
		}},
	}
	pool := warehouse.NewPool(settings.Connections, map[string]warehouse.Opener{
		kind: func(context.Context, config.Connection) (warehouse.Source, error) { return src, nil },
	})
	clock := func() time.Time { return today.In(time.UTC).Add(15 * time.Hour) }
	return New(Deps{Settings: settings, Sources: pool, Clock: clock, Timeout: timeout})
}

func TestValidateReport(t *testing.T) {
	t.Parallel()
	day := today.AddDays(-2)
	tests := []struct {
		name      string
		metricCol string
		opts      Options
		wantDay   civil.Date
		wantLimit int
		wantOK    bool
		wantRows  int
		wantText  []string
	}{
		{"default day and limit", "metric_value", Options{}, day, DefaultLimit, true, DefaultLimit,
			[]string{"at most 100 rows", "$1 = 2026-11-25 (DATE, bound parameter)", "id_type_unknown"}},
		{"explicit day and limit", "metric_value", Options{Day: day, Limit: 10}, day, 10, true, 10,
			[]string{"at most 10 rows", "metric_value"}},
		{"missing column", "value", Options{Day: day, Limit: 10}, day, 10, false, 10,
			[]string{"NOT OK", `column "value" is not in the query result`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &fakeSource{rows: map[civil.Date]int{day: 150, today.AddDays(-5): 3}}
			rep, err := newValidator(t, src, "duckdb", tt.metricCol, 0).Validate(context.Background(), "p", "m", tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if src.sampled != tt.wantDay || src.limitArg != tt.wantLimit {
				t.Errorf("sampled %s with limit %d, want %s with %d", src.sampled, src.limitArg, tt.wantDay, tt.wantLimit)
			}
			if rep.OK != tt.wantOK || rep.SampleRows != tt.wantRows || rep.Day != tt.wantDay.String() {
				t.Errorf("report ok=%v rows=%d day=%s, want ok=%v rows=%d day=%s", rep.OK, rep.SampleRows, rep.Day, tt.wantOK, tt.wantRows, tt.wantDay)
			}
			if !strings.HasPrefix(rep.QueryAsRun, "SELECT * FROM metrics WHERE ds = $1\n") {
				t.Errorf("query as run pastes or changes the query: %q", rep.QueryAsRun)
			}
			if strings.Contains(strings.SplitN(rep.QueryAsRun, "\n", 2)[0], tt.wantDay.String()) {
				t.Errorf("the day is pasted into the SQL: %q", rep.QueryAsRun)
			}
			text := rep.Text()
			for _, w := range tt.wantText {
				if !strings.Contains(text, w) {
					t.Errorf("report text lacks %q:\n%s", w, text)
				}
			}
			if rep.Cost != nil {
				t.Errorf("cost %+v from a warehouse without a dry run", rep.Cost)
			}
		})
	}
}

func TestValidateLooksBackForTheMostRecentDayWithRows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		rows        map[civil.Date]int
		want        civil.Date
		wantCounted int
		wantWarning bool
	}{
		{"today has rows", map[civil.Date]int{today: 1, today.AddDays(-1): 5}, today, 1, false},
		{"four days ago", map[civil.Date]int{today.AddDays(-4): 5, today.AddDays(-6): 5}, today.AddDays(-4), 5, false},
		{"older than the window", map[civil.Date]int{today.AddDays(-LookbackDays): 5}, today.AddDays(-1), LookbackDays, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &fakeSource{rows: tt.rows}
			rep, err := newValidator(t, src, "duckdb", "metric_value", 0).Validate(context.Background(), "p", "m", Options{})
			if err != nil {
				t.Fatal(err)
			}
			if src.sampled != tt.want || len(src.counted) != tt.wantCounted {
				t.Errorf("sampled %s after counting %v, want %s after %d counts", src.sampled, src.counted, tt.want, tt.wantCounted)
			}
			warned := strings.Contains(strings.Join(rep.Warnings, "\n"), "no day of the last 7 had rows")
			if warned != tt.wantWarning {
				t.Errorf("warnings %q: want the no-rows warning %v", rep.Warnings, tt.wantWarning)
			}
		})
	}
}

func TestValidateCostFromDryRun(t *testing.T) {
	t.Parallel()
	day := today.AddDays(-1)
	t.Run("estimate", func(t *testing.T) {
		t.Parallel()
		src := &dryRunSource{fakeSource: &fakeSource{rows: map[civil.Date]int{day: 4}}, bytes: 3 << 30}
		rep, err := newValidator(t, src, "bigquery", "metric_value", 0).Validate(context.Background(), "p", "m", Options{Day: day})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Cost == nil || rep.Cost.BytesProcessed != 3<<30 {
			t.Fatalf("cost %+v, want 3 GiB", rep.Cost)
		}
		if text := rep.Text(); !strings.Contains(text, "Estimated cost: 3.0 GiB processed") || !strings.Contains(text, "@date = "+day.String()) {
			t.Errorf("text lacks the cost or the @date parameter:\n%s", text)
		}
	})
	t.Run("failed estimate is a warning", func(t *testing.T) {
		t.Parallel()
		src := &dryRunSource{fakeSource: &fakeSource{rows: map[civil.Date]int{day: 4}},
			dryErr: &warehouse.Error{Category: vocab.CategoryPermission, Err: errors.New("no dry runs for you")}}
		rep, err := newValidator(t, src, "bigquery", "metric_value", 0).Validate(context.Background(), "p", "m", Options{Day: day})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Cost != nil || !strings.Contains(strings.Join(rep.Warnings, "\n"), "no cost estimate: PERMISSION_ERROR: no dry runs for you") {
			t.Errorf("cost %+v warnings %q: want no cost and the dry run's error", rep.Cost, rep.Warnings)
		}
	})
}

func TestValidateErrors(t *testing.T) {
	t.Parallel()
	day := today.AddDays(-1)
	queryErr := &warehouse.Error{Category: vocab.CategoryQuery, Err: errors.New(`column "foo" does not exist`)}
	tests := []struct {
		name       string
		src        *fakeSource
		ingestion  string
		opts       Options
		timeout    time.Duration
		wantField  string         // an OptionError on this field
		wantCat    vocab.Category // a WarehouseError of this category
		wantText   string
		wantLookup bool // ErrUnknownIngestion
	}{
		{name: "unknown ingestion", src: &fakeSource{}, ingestion: "nope", wantLookup: true},
		{name: "limit too big", src: &fakeSource{}, ingestion: "m", opts: Options{Limit: MaxLimit + 1}, wantField: "limit", wantText: "limit: 1001 is not between 1 and 1000"},
		{name: "negative limit", src: &fakeSource{}, ingestion: "m", opts: Options{Limit: -1}, wantField: "limit"},
		{name: "invalid date", src: &fakeSource{}, ingestion: "m", opts: Options{Day: civil.Date{Year: 2026, Month: 2, Day: 30}}, wantField: "date"},
		{name: "query error", src: &fakeSource{err: queryErr}, ingestion: "m", opts: Options{Day: day},
			wantCat: vocab.CategoryQuery, wantText: `QUERY_ERROR: column "foo" does not exist`},
		{name: "count error while looking for a day", src: &fakeSource{err: queryErr}, ingestion: "m",
			wantCat: vocab.CategoryQuery, wantText: `QUERY_ERROR: column "foo" does not exist`},
		{name: "timeout", src: &fakeSource{block: true}, ingestion: "m", opts: Options{Day: day}, timeout: time.Millisecond,
			wantCat: vocab.CategoryTimeout, wantText: "QUERY_TIMEOUT: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := newValidator(t, tt.src, "duckdb", "metric_value", tt.timeout).Validate(context.Background(), "p", tt.ingestion, tt.opts)
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, ErrUnknownIngestion); got != tt.wantLookup {
				t.Errorf("errors.Is(ErrUnknownIngestion) = %v for %v", got, err)
			}
			var oe *OptionError
			if got := errors.As(err, &oe); got != (tt.wantField != "") || got && oe.Field != tt.wantField {
				t.Errorf("error %v: want an option error on %q", err, tt.wantField)
			}
			var we *WarehouseError
			if got := errors.As(err, &we); got != (tt.wantCat != "") || got && we.Category != tt.wantCat {
				t.Errorf("error %v: want a warehouse error of category %q", err, tt.wantCat)
			}
			if cat, _ := warehouse.Categorize(err); tt.wantCat != "" && cat != tt.wantCat {
				t.Errorf("warehouse.Categorize = %s, want %s", cat, tt.wantCat)
			}
			if !strings.HasPrefix(err.Error(), tt.wantText) {
				t.Errorf("error %q, want it to start with %q", err, tt.wantText)
			}
		})
	}
}
