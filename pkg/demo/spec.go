// Package demo generates a realistic, deterministic demo warehouse (web
// events and pre-computed daily metrics, with a few deliberately bad rows),
// seeds it into DuckDB or PostgreSQL, alters seeded days for reload tests,
// and renders the demo project's configuration for `sluice dev`.
//
// Everything is a pure function of a Spec: the same seed gives the same rows,
// and Expected says, without touching a database, how many rows each day and
// table holds and how many of them the mapper must reject, by reason code.
//
// The events table: event_id (UUID), ds DATE, event_ts TIMESTAMP (UTC),
// event_time_s BIGINT (epoch seconds), event_name (a shop funnel: page_view,
// search, add_to_cart, checkout, purchase, signup, login,
// experiment_exposure), event_value (a price such as "19.99" for purchases,
// a path, a search, a SKU or a plan otherwise, sometimes NULL), user_id
// (NULL for the three in ten anonymous events), device_id, company_id
// BIGINT (NULL for anonymous users and users of small companies), country,
// platform, and properties: a JSON object with nested values kept as text.
//
// The metrics table: ds, unit_id, id_type (userID, stableID, companyID with
// digit-string ids), metric_name, metric_value (NULL now and then, which
// maps to 0) and numerator/denominator for the two ratio metrics.
//
// One row in every Spec.BadRowEvery is bad, cycling through the classes of
// the Reason* constants; each bad row has exactly one defect, so its reason
// is unambiguous. Both kinds of ingestions of the demo configuration read
// the same two tables unless Tables says otherwise.
package demo

import (
	"fmt"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/vocab"
)

// Table kinds.
const (
	TableEvents  = "events"
	TableMetrics = "metrics"
)

// Reason codes of the deliberately bad rows: what pkg/mapping rejects each
// row for, with the demo mapping (timestamp_unit: seconds).
const (
	ReasonMissingEventName    = vocab.ReasonEventNameMissing    // event_name is NULL
	ReasonEventNameTooLong    = vocab.ReasonEventNameTooLong    // event_name of 175 characters
	ReasonMissingIDs          = vocab.ReasonUnitIDMissing       // user_id, device_id and company_id all NULL
	ReasonInvalidMetadataJSON = vocab.ReasonMetadataJSONInvalid // properties cut off mid-object
	// ReasonTimestampUnit: event_time_s holds epoch milliseconds while the
	// mapping says seconds.
	ReasonTimestampUnit = vocab.ReasonTimestampUnitMismatch

	ReasonUnknownIDType   = vocab.ReasonIDTypeUnknown   // id_type "UserID" (wrong case) or "unknownType"
	ReasonNullDenominator = vocab.ReasonDenominatorNull // ratio row (numerator set, metric_value NULL) without denominator
)

// eventReasons is the order the bad event rows cycle through.
var eventReasons = [...]vocab.Reason{
	ReasonMissingEventName,
	ReasonEventNameTooLong,
	ReasonMissingIDs,
	ReasonInvalidMetadataJSON,
	ReasonTimestampUnit,
}

// metricDefects is the order the bad metric rows cycle through; two of the
// three share a reason class.
var metricDefects = [...]string{
	"UserID",      // wrong case of userID
	"unknownType", // not a project id type
	string(ReasonNullDenominator),
}

// Spec describes a generated warehouse.
type Spec struct {
	Days          int        // how many days, ending with LastDay
	LastDay       civil.Date // the most recent day
	EventsPerDay  int        // rows per day in the events table
	MetricsPerDay int        // rows per day in the metrics table
	BadRowEvery   int        // one bad row per this many rows; 0 = no bad rows
	Seed          uint64

	EventsTable  string // default "events"
	MetricsTable string // default "metrics"
}

// DefaultSpec is the `sluice dev` warehouse: 7 days ending yesterday, a few
// thousand rows a day, a handful of bad rows of every class each day.
func DefaultSpec(today civil.Date) Spec {
	return Spec{
		Days:          7,
		LastDay:       today.AddDays(-1),
		EventsPerDay:  5000,
		MetricsPerDay: 1500,
		BadRowEvery:   500,
		Seed:          42,
	}
}

// BenchSpec is one bench day of rows events (scripts/bench uses 2,000,000)
// and no bad rows, so the pipeline and a direct copy move the same rows.
func BenchSpec(day civil.Date, rows int) Spec {
	return Spec{Days: 1, LastDay: day, EventsPerDay: rows, Seed: 1}
}

// WithDefaults returns s with its table names filled.
func (s Spec) WithDefaults() Spec {
	if s.EventsTable == "" {
		s.EventsTable = TableEvents
	}
	if s.MetricsTable == "" {
		s.MetricsTable = TableMetrics
	}
	return s
}

// Validate says what is wrong with s.
func (s Spec) Validate() error {
	switch {
	case s.Days < 1:
		return fmt.Errorf("demo spec: days must be at least 1, got %d", s.Days)
	case !s.LastDay.IsValid():
		return fmt.Errorf("demo spec: last day %v is not a valid date", s.LastDay)
	case s.EventsPerDay < 0 || s.MetricsPerDay < 0:
		return fmt.Errorf("demo spec: rows per day must not be negative")
	case s.BadRowEvery < 0:
		return fmt.Errorf("demo spec: bad_row_every must not be negative")
	}
	return nil
}

// Dates lists the spec's days, oldest first.
func (s Spec) Dates() []civil.Date {
	out := make([]civil.Date, s.Days)
	for i := range out {
		out[i] = s.LastDay.AddDays(i - s.Days + 1)
	}
	return out
}

// FirstDay is the oldest day.
func (s Spec) FirstDay() civil.Date { return s.LastDay.AddDays(1 - s.Days) }

// dayNumber is a stable number for a date, used to seed its generators, so
// a day's rows do not depend on which other days the spec holds.
func dayNumber(d civil.Date) uint64 {
	return uint64(d.In(time.UTC).Unix() / 86400)
}

// TableCounts is what one table holds for one day.
type TableCounts struct {
	Rows     int64            // rows the day's query returns
	Rejected map[string]int64 // bad rows by reason class
}

// Good is the number of rows the mapper must accept.
func (c TableCounts) Good() int64 {
	n := c.Rows
	for _, r := range c.Rejected {
		n -= r
	}
	return n
}

// Day is what one day holds in both tables.
type Day struct {
	Events  TableCounts
	Metrics TableCounts
}

// Expected returns, for every day of s, the rows each table holds and the
// bad rows among them by reason class, computed without generating rows.
func Expected(s Spec) map[civil.Date]Day {
	out := make(map[civil.Date]Day, s.Days)
	for _, d := range s.Dates() {
		out[d] = Day{
			Events:  tableCounts(s.EventsPerDay, s.BadRowEvery, d, eventReasonAt),
			Metrics: tableCounts(s.MetricsPerDay, s.BadRowEvery, d, metricReasonAt),
		}
	}
	return out
}

func tableCounts(rows, every int, d civil.Date, reasonAt func(int, civil.Date, int) vocab.Reason) TableCounts {
	c := TableCounts{Rows: int64(rows), Rejected: map[string]int64{}}
	if every <= 0 {
		return c
	}
	for i := every / 2; i < rows; i += every {
		c.Rejected[string(reasonAt(i, d, every))]++
	}
	return c
}

// isBad says whether row i of a day is a bad one: exactly one in every
// `every` rows, in the middle of each stretch.
func isBad(i, every int) bool { return every > 0 && i%every == every/2 }

// defectAt is which defect bad row i has; the cycle starts at a different
// place each day so every class shows up even on small days.
func defectAt(i int, d civil.Date, every, classes int) int {
	return int((uint64(i/every) + dayNumber(d)) % uint64(classes))
}

func eventReasonAt(i int, d civil.Date, every int) vocab.Reason {
	return eventReasons[defectAt(i, d, every, len(eventReasons))]
}

func metricReasonAt(i int, d civil.Date, every int) vocab.Reason {
	if metricDefects[defectAt(i, d, every, len(metricDefects))] == string(ReasonNullDenominator) {
		return ReasonNullDenominator
	}
	return ReasonUnknownIDType
}
