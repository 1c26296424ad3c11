package mapping

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// Sample sizes shown in a Report.
const (
	ReportRecords    = 5  // first mapped records
	ReportRejections = 10 // first rejected rows
)

// Report is the sample validation of an ingestion's mapping: what the query
// returned, whether each mapped field finds and converts its column, and
// what a person must change. The caller runs the query with a row limit and
// fills QueryAsRun and Cost.
type Report struct {
	Ingestion  string `json:"ingestion"`
	Type       string `json:"type"`
	Day        string `json:"day"`
	QueryAsRun string `json:"query_as_run"`
	Cost       *Cost  `json:"cost,omitempty"`

	// OK is false when a mapped column is missing or has the wrong type, or
	// when every sample row is rejected: such a mapping must not be enabled.
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"` // what to change; each one blocks
	Warnings []string `json:"warnings"` // what to look at

	SampleRows       int            `json:"sample_rows"`
	Mapped           int            `json:"mapped"`
	Rejected         int            `json:"rejected"`
	RejectedByReason []ReasonCount  `json:"rejected_by_reason"`
	Columns          []ColumnInfo   `json:"columns"`
	Fields           []FieldCheck   `json:"fields"`
	Events           []SampleEvent  `json:"events,omitempty"`
	Metrics          []SampleMetric `json:"metrics,omitempty"`
	Rejections       []SampleReject `json:"rejections"`
}

// Cost is the warehouse's estimate of the query's cost, where it gives one
// (BigQuery's dry run).
type Cost struct {
	BytesProcessed int64  `json:"bytes_processed"`
	Detail         string `json:"detail,omitempty"`
}

// ReasonCount counts the sample rows rejected for one reason.
type ReasonCount struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// ColumnInfo is one column of the query's result.
type ColumnInfo struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	DBType string `json:"db_type"`
}

// FieldCheck says how one mapped field fares on the sample. Each field is
// checked on every row on its own, so a row failing two fields counts in both.
type FieldCheck struct {
	Field    string `json:"field"`
	Column   string `json:"column"`
	Required bool   `json:"required"`
	Found    bool   `json:"found"`
	// MatchedColumn is the result's column name when it matched Column only
	// case-insensitively.
	MatchedColumn string `json:"matched_column,omitempty"`
	Type          string `json:"type,omitempty"`
	TypeOK        bool   `json:"type_ok"`
	Accepts       string `json:"accepts"`
	OKRows        int    `json:"ok_rows"`
	NullRows      int    `json:"null_rows"`
	FailingRows   int    `json:"failing_rows"`
	FirstFailure  string `json:"first_failure,omitempty"` // reason: detail
}

// SampleEvent is a mapped event as the report shows it.
type SampleEvent struct {
	Position   int64           `json:"position"`
	EventName  string          `json:"event_name"`
	EventValue string          `json:"event_value"`
	Time       string          `json:"time"`
	TimeMs     int64           `json:"time_ms"`
	UnitIDs    []SampleUnitID  `json:"unit_ids"`
	Metadata   json.RawMessage `json:"metadata"`
}

// SampleUnitID is one unit id of a SampleEvent.
type SampleUnitID struct {
	IDType string `json:"id_type"`
	Value  string `json:"value"`
}

// SampleMetric is a mapped metric as the report shows it.
type SampleMetric struct {
	Position    int64   `json:"position"`
	UnitID      string  `json:"unit_id"`
	IDType      string  `json:"id_type"`
	Date        string  `json:"date"`
	MetricName  string  `json:"metric_name"`
	MetricValue float64 `json:"metric_value"`
	IsRatio     bool    `json:"is_ratio"`
	Numerator   float64 `json:"numerator"`
	Denominator float64 `json:"denominator"`
}

// SampleReject is a rejected sample row with its original values.
type SampleReject struct {
	Position int64             `json:"position"`
	Reason   string            `json:"reason"`
	Detail   string            `json:"detail"`
	Field    string            `json:"field,omitempty"`
	Values   map[string]string `json:"values"`
}

// Validate maps sample, at most a few hundred rows of ing's query for day,
// and reports on it. A mapping New refuses gives a report that says why.
func Validate(ing config.Ingestion, idTypes []string, sample *warehouse.Batch, day civil.Date) Report {
	rep := Report{Ingestion: ing.Name, Type: ing.Type, Day: day.String(), Problems: []string{}, Warnings: []string{},
		RejectedByReason: []ReasonCount{}, Columns: []ColumnInfo{}, Fields: []FieldCheck{}, Rejections: []SampleReject{}}
	if sample == nil {
		sample = &warehouse.Batch{}
	}
	for _, c := range sample.Columns {
		rep.Columns = append(rep.Columns, ColumnInfo{Name: c.Name, Type: c.Type, DBType: c.DBType})
	}
	rep.SampleRows = sample.Rows
	m, err := New(ing, idTypes)
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
		return rep
	}
	raw := &schemas.RawBatch{Kind: schemas.KindRows, Ingestion: ing.Name, Date: day.String(), RowCount: int64(sample.Rows), Columns: sample.Columns}
	m.setDay(raw.Date)
	rep.Fields = m.checkFields(raw, &rep)

	var out schemas.MappedBatch
	m.Map(raw, &out, func(r Rejection) {
		rep.Rejected++
		if len(rep.Rejections) < ReportRejections {
			rep.Rejections = append(rep.Rejections, SampleReject{Position: r.Position, Reason: r.Reason, Detail: r.Detail, Field: r.Field, Values: r.Values()})
		}
	})
	rep.Mapped = len(out.Events) + len(out.Metrics)
	for _, rc := range out.Rejected {
		rep.RejectedByReason = append(rep.RejectedByReason, ReasonCount{Reason: rc.Reason, Count: int(rc.Count)})
	}
	for _, e := range out.Events[:min(len(out.Events), ReportRecords)] {
		se := SampleEvent{Position: e.Position, EventName: e.EventName, EventValue: e.EventValue, Time: fmtMs(e.TimeMs), TimeMs: e.TimeMs,
			UnitIDs: []SampleUnitID{}, Metadata: json.RawMessage(e.MetadataJSON)}
		for _, id := range e.UnitIDs {
			se.UnitIDs = append(se.UnitIDs, SampleUnitID{IDType: id.IDType, Value: id.Value})
		}
		rep.Events = append(rep.Events, se)
	}
	for _, mt := range out.Metrics[:min(len(out.Metrics), ReportRecords)] {
		rep.Metrics = append(rep.Metrics, SampleMetric(mt))
	}

	for _, f := range rep.Fields {
		if f.FailingRows == 0 {
			continue
		}
		msg := fmt.Sprintf("%s: %d of %d sample rows fail; first: %s", f.Field, f.FailingRows, sample.Rows, f.FirstFailure)
		if f.FailingRows == sample.Rows {
			rep.Problems = append(rep.Problems, msg)
		} else {
			rep.Warnings = append(rep.Warnings, msg)
		}
	}
	switch {
	case sample.Rows == 0:
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the query returned no rows for %s, so no value could be checked; validate a day that has data", rep.Day))
	case rep.Mapped == 0 && len(rep.Problems) == 0:
		rep.Problems = append(rep.Problems, fmt.Sprintf("every one of the %d sample rows is rejected; see the reasons below", sample.Rows))
	case rep.Rejected > 0:
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d of %d sample rows would be rejected (and sent to the dead-letter topic)", rep.Rejected, sample.Rows))
	}
	rep.OK = len(rep.Problems) == 0
	return rep
}

// checkFields resolves every mapped field's column and checks each field
// on every sample row independently of the others.
func (m *Mapper) checkFields(raw *schemas.RawBatch, rep *Report) []FieldCheck {
	rows := int(raw.RowCount)
	names := make([]string, len(raw.Columns))
	for i := range raw.Columns {
		names[i] = raw.Columns[i].Name
	}
	checks := make([]FieldCheck, len(m.refs))
	for k := range m.refs {
		r := &m.refs[k]
		fc := FieldCheck{Field: r.field, Column: r.column, Required: r.required, Accepts: r.accept.String()}
		r.col = nil
		idx := findColumn(raw.Columns, r.column)
		if idx < 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: column %q is not in the query result; map it to one of: %s",
				r.field, r.column, strings.Join(names, ", ")))
			checks[k] = fc
			continue
		}
		c := &raw.Columns[idx]
		fc.Found, fc.Type = true, c.Type
		if c.Name != r.column {
			fc.MatchedColumn = c.Name
		}
		fc.TypeOK = typeBit(c.Type)&r.accept != 0
		if !fc.TypeOK {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: column %q is %s (%s) but %s needs %s; cast it in the query",
				r.field, c.Name, c.Type, c.DBType, r.field, fc.Accepts))
		} else if !complete(c, rows) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: column %q has fewer values than the sample's %d rows", r.field, c.Name, rows))
		} else {
			r.col = c
			for i := range rows {
				null, f := m.checkField(k, i)
				switch {
				case f.r != rNone:
					fc.FailingRows++
					if fc.FirstFailure == "" {
						fc.FirstFailure = f.r.String() + ": " + f.detail
					}
				case null:
					fc.NullRows++
				default:
					fc.OKRows++
				}
			}
		}
		checks[k] = fc
	}
	return checks
}

// checkField checks row i of mapped field k alone.
func (m *Mapper) checkField(k, i int) (null bool, f fail) {
	r := &m.refs[k]
	null = r.col.IsNull(i)
	switch k {
	case m.eventName:
		_, f = m.name(k, i, rEventNameMissing, rEventNameTooLong)
	case m.metricName:
		_, f = m.name(k, i, rMetricNameMissing, rMetricNameTooLong)
	case m.timestamp:
		_, f = m.timeMs(i)
	case m.eventValue:
		_, f = m.value(i)
	case m.metadataJSON:
		if !null {
			m.arena, m.pairs = m.arena[:0], m.pairs[:0]
			f = m.unpack(k, r.col.Strings[i])
		}
	case m.unitID:
		var ok bool
		if _, ok, f = m.idText(k, i); !ok && f.r == rNone {
			f = m.failf(rUnitIDMissing, k, "unit_id (column %q) is empty or null", r.column)
		}
	case m.idType:
		_, f = m.idTypeOf(i)
	case m.date:
		_, f = m.dateOf(i)
	case m.metricValue, m.num, m.den:
		_, null, f = m.number(k, i)
	default:
		if slices.Contains(m.ids, k) {
			var ok bool
			_, ok, f = m.idText(k, i)
			null = null || !ok && f.r == rNone
		} else if !null { // metadata
			m.arena = appendText(m.arena[:0], r.col, i)
			if !validTextBytes(m.arena) {
				f = m.failf(rInvalidText, k, "%s (column %q) is not valid UTF-8 text or holds a NUL byte", r.field, r.column)
			}
		}
	}
	return null, f
}
