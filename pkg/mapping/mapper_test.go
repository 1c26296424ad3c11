package mapping

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

func TestMapBatchAccountsForEveryRow(t *testing.T) {
	t.Parallel()
	S, L := schemas.TypeString, schemas.TypeLong
	raw := rawBatch(t,
		col(t, "name", S, "a", nil, "c", "d", ""),
		col(t, "ts", L, noon, noon, noon*1000, noon, noon),
		col(t, "user_id", L, 1, 2, 3, nil, 5),
		col(t, "device_id", S, nil, nil, nil, nil, nil),
		col(t, "value", S, nil, nil, nil, nil, nil),
		col(t, "plan", schemas.TypeTimestamp, time.Date(2024, 3, 10, 1, 2, 3, 0, time.UTC), nil, nil, nil, nil),
		col(t, "country", S, nil, nil, nil, nil, nil),
		col(t, "meta", S, nil, nil, nil, nil, nil),
		col(t, "extra", schemas.TypeDouble, 1.0, 2.5, 3.0, 4.0, 5.0),
	)
	m, err := New(eventsIngestion(), testIDTypes)
	if err != nil {
		t.Fatal(err)
	}
	var out schemas.MappedBatch
	var rejected []Rejection
	var values []map[string]string
	m.Map(raw, &out, func(r Rejection) {
		rejected = append(rejected, r)
		values = append(values, r.Values())
	})
	checkAccounting(t, raw, &out, len(rejected))
	if len(out.Events) != 1 || out.Events[0].Position != 1000 || out.Events[0].MetadataJSON != `{"plan":"2024-03-10T01:02:03Z"}` {
		t.Fatalf("events = %+v", out.Events)
	}
	wantReasons := []schemas.ReasonCount{
		{Reason: string(vocab.ReasonEventNameMissing), Count: 2},
		{Reason: string(vocab.ReasonTimestampUnitMismatch), Count: 1},
		{Reason: string(vocab.ReasonUnitIDMissing), Count: 1},
	}
	if !equalCounts(out.Rejected, wantReasons) {
		t.Fatalf("out.Rejected = %+v, want %+v", out.Rejected, wantReasons)
	}
	positions := []int64{1001, 1002, 1003, 1004}
	for j, r := range rejected {
		if r.Position != positions[j] {
			t.Errorf("rejection %d at %d, want %d", j, r.Position, positions[j])
		}
	}
	wantValues := map[string]string{"ts": "1710072000000", "user_id": "3", "name": "c", "extra": "3"}
	if !maps.Equal(values[1], wantValues) {
		t.Errorf("values of row 1002 = %v, want %v", values[1], wantValues)
	}

	// Reusing out: the second batch replaces the first's records and counts.
	raw2 := rawBatch(t,
		col(t, "name", S, "x"), col(t, "ts", L, noon), col(t, "user_id", L, 9), col(t, "device_id", S, "d"),
		col(t, "value", S, nil), col(t, "plan", S, nil), col(t, "country", S, nil), col(t, "meta", S, nil),
	)
	raw2.FirstRow = 5
	m.Map(raw2, &out, nil)
	checkAccounting(t, raw2, &out, 0)
	if len(out.Events) != 1 || out.Events[0].Position != 5 || len(out.Events[0].UnitIDs) != 2 || len(out.Rejected) != 0 {
		t.Fatalf("second batch: %+v", out)
	}
}

func equalCounts(a, b []schemas.ReasonCount) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMapRejectsWholeBatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		cols   func(tb testing.TB) []schemas.Column
		reason vocab.Reason
		detail string
	}{
		{name: "two missing columns", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{{Name: "name"}, {Name: "plan"}}
		}, reason: vocab.ReasonMissingColumn, detail: `mapped column "name" (event_name), "plan" (metadata.plan) not in the query result; its columns are: ts, user_id`},
		{name: "short column", cols: func(tb testing.TB) []schemas.Column {
			c := col(tb, "ts", schemas.TypeLong, noon, noon, noon)
			c.Longs = c.Longs[:2]
			return []schemas.Column{c}
		}, reason: vocab.ReasonMalformedBatch, detail: `column "ts" has fewer values than the batch's 3 rows`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			S := schemas.TypeString
			base := []schemas.Column{
				col(t, "name", S, "a", "b", "c"), col(t, "ts", schemas.TypeLong, noon, noon, noon),
				col(t, "user_id", S, "1", "2", "3"), col(t, "device_id", S, nil, nil, nil),
				col(t, "value", S, nil, nil, nil), col(t, "plan", S, nil, nil, nil),
				col(t, "country", S, nil, nil, nil), col(t, "meta", S, nil, nil, nil),
			}
			out, rejected := mapAll(t, eventsIngestion(), rawBatch(t, withColumns(base, tt.cols(t)...)...))
			if len(rejected) != 3 || len(out.Events) != 0 {
				t.Fatalf("rejected %d, mapped %d; want all 3 rejected", len(rejected), len(out.Events))
			}
			for _, r := range rejected {
				if r.Reason != string(tt.reason) || !strings.Contains(r.Detail, tt.detail) {
					t.Fatalf("rejected %s %q, want %s containing %q", r.Reason, r.Detail, tt.reason, tt.detail)
				}
			}
		})
	}
}

func TestNewRefusesIncompleteMappings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ing  func() config.Ingestion
		want string
	}{
		{name: "events without timestamp", ing: func() config.Ingestion { i := eventsIngestion(); i.Mapping.Timestamp = ""; return i }, want: "timestamp required for events"},
		{name: "events without ids", ing: func() config.Ingestion { i := eventsIngestion(); i.Mapping.IDs = nil; return i }, want: "ids required"},
		{name: "bad unit", ing: func() config.Ingestion { i := eventsIngestion(); i.Mapping.TimestampUnit = "ns"; return i }, want: `timestamp_unit "ns"`},
		{name: "metrics without value", ing: func() config.Ingestion {
			i := metricsIngestion()
			i.Mapping.MetricValue, i.Mapping.Numerator, i.Mapping.Denominator = "", "", ""
			return i
		}, want: "metric_value (or numerator and denominator) required"},
		{name: "numerator alone", ing: func() config.Ingestion { i := metricsIngestion(); i.Mapping.Denominator = ""; return i }, want: "go together"},
		{name: "unknown type", ing: func() config.Ingestion { i := eventsIngestion(); i.Type = "logs"; return i }, want: `type "logs"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.ing(), testIDTypes)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNumberText(t *testing.T) {
	t.Parallel()
	floats := []struct {
		v    float64
		want string
	}{{5, "5"}, {-0.0, "0"}, {0.1, "0.1"}, {1e20, "100000000000000000000"}, {1e21, "1e+21"}, {1e-7, "1e-07"}, {-2.5, "-2.5"}, {123456789012, "123456789012"}}
	for _, tt := range floats {
		if got := string(appendFloat(nil, tt.v)); got != tt.want {
			t.Errorf("appendFloat(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
	decimals := []struct {
		in, want string
		ok       bool
	}{
		{"12", "12", true}, {"12.50", "12.5", true}, {"007.500", "7.5", true}, {"-0.000", "0", true},
		{"+3", "3", true}, {"12.", "12", true}, {".5", "0.5", true}, {"1.5E+3", "1500", true},
		{"-12.25", "-12.25", true}, {"abc", "abc", false}, {"", "", false}, {"NaN", "NaN", false},
	}
	for _, tt := range decimals {
		got, ok := canonicalDecimal(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("canonicalDecimal(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
