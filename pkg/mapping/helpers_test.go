package mapping

import (
	"encoding/json"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/schemas"
)

const testDay = "2024-03-10"

// noon is 2024-03-10T12:00:00Z in epoch seconds.
const noon = 1710072000

var testIDTypes = []string{"userID", "stableID", "companyID"}

// col builds a column from values: nil is null; string, int, int64,
// float64, bool, civil.Date and time.Time fill the slice typ uses.
func col(tb testing.TB, name, typ string, vals ...any) schemas.Column {
	tb.Helper()
	c := schemas.Column{Name: name, Type: typ, DBType: "test_" + typ}
	for _, v := range vals {
		null := byte(0)
		if v == nil {
			null = 1
		}
		c.Nulls = append(c.Nulls, null)
		switch typ {
		case schemas.TypeBoolean:
			b, _ := v.(bool)
			c.Bools = append(c.Bools, b)
		case schemas.TypeLong, schemas.TypeDate, schemas.TypeTimestamp:
			var n int64
			switch x := v.(type) {
			case int:
				n = int64(x)
			case int64:
				n = x
			case civil.Date:
				n = int64(x.DaysSince(civil.Date{Year: 1970, Month: 1, Day: 1}))
			case time.Time:
				n = x.UnixMicro()
			case nil:
			default:
				tb.Fatalf("column %s: %T in a %s column", name, v, typ)
			}
			c.Longs = append(c.Longs, n)
		case schemas.TypeDouble:
			f, ok := v.(float64)
			if !ok && v != nil {
				tb.Fatalf("column %s: %T in a DOUBLE column", name, v)
			}
			c.Doubles = append(c.Doubles, f)
		default:
			s, ok := v.(string)
			if !ok && v != nil {
				tb.Fatalf("column %s: %T in a %s column", name, v, typ)
			}
			c.Strings = append(c.Strings, s)
		}
	}
	return c
}

// rawBatch assembles columns of equal length into a ROWS batch of testDay.
func rawBatch(tb testing.TB, cols ...schemas.Column) *schemas.RawBatch {
	tb.Helper()
	rows := 0
	if len(cols) > 0 {
		rows = len(cols[0].Nulls)
	}
	return &schemas.RawBatch{Kind: schemas.KindRows, Date: testDay, FirstRow: 1000, RowCount: int64(rows), Columns: cols}
}

// withColumns replaces the columns of base that share a name with one of
// repl and appends the others; a column with Type "" is removed.
func withColumns(base []schemas.Column, repl ...schemas.Column) []schemas.Column {
	out := append([]schemas.Column(nil), base...)
	for _, r := range repl {
		found := false
		for i := range out {
			if out[i].Name == r.Name {
				out[i], found = r, true
			}
		}
		if !found {
			out = append(out, r)
		}
	}
	kept := out[:0]
	for _, c := range out {
		if c.Type != "" {
			kept = append(kept, c)
		}
	}
	return kept
}

func eventsIngestion() config.Ingestion {
	return config.Ingestion{
		Name: "events", Type: config.TypeEvents,
		Mapping: config.Mapping{
			EventName:    "name",
			Timestamp:    "ts",
			IDs:          map[string]string{"userID": "user_id", "stableID": "device_id"},
			EventValue:   "value",
			Metadata:     map[string]string{"plan": "plan", "country": "country"},
			MetadataJSON: "meta",
		},
	}
}

func metricsIngestion() config.Ingestion {
	return config.Ingestion{
		Name: "metrics", Type: config.TypeMetrics,
		Mapping: config.Mapping{
			UnitID: "unit", IDType: "id_type", Date: "ds", MetricName: "metric",
			MetricValue: "value", Numerator: "num", Denominator: "den",
		},
	}
}

// mapOne maps a batch and returns the records, the rejections and out.
func mapAll(tb testing.TB, ing config.Ingestion, raw *schemas.RawBatch) (*schemas.MappedBatch, []Rejection) {
	tb.Helper()
	m, err := New(ing, testIDTypes)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	var out schemas.MappedBatch
	var rejected []Rejection
	m.Map(raw, &out, func(r Rejection) { rejected = append(rejected, r) })
	checkAccounting(tb, raw, &out, len(rejected))
	return &out, rejected
}

// checkAccounting asserts the mapper's invariant: rows in = mapped + rejected.
func checkAccounting(tb testing.TB, raw *schemas.RawBatch, out *schemas.MappedBatch, rejectCalls int) {
	tb.Helper()
	var counted int64
	for _, rc := range out.Rejected {
		if rc.Count <= 0 {
			tb.Fatalf("reason %s counted %d", rc.Reason, rc.Count)
		}
		counted += rc.Count
	}
	if counted != int64(rejectCalls) {
		tb.Fatalf("out.Rejected sums to %d, reject was called %d times", counted, rejectCalls)
	}
	rows := max(raw.RowCount, 0)
	if out.RowCount != rows {
		tb.Fatalf("out.RowCount = %d, want %d", out.RowCount, rows)
	}
	mapped := int64(len(out.Events) + len(out.Metrics))
	if mapped+counted != rows {
		tb.Fatalf("mapped %d + rejected %d != rows %d", mapped, counted, rows)
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

// validMetadata reports whether s is a JSON object of string values.
func validMetadata(s string) bool {
	var m map[string]string
	return json.Unmarshal([]byte(s), &m) == nil && m != nil
}
