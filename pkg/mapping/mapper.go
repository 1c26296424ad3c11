// Package mapping turns columnar warehouse rows into the canonical event and
// metric records of DESIGN.md, and says exactly why a row could not be.
//
// A Mapper is compiled once per ingestion and reused for every batch of a
// run; Map is the per-row hot path and allocates little. Every row of a batch
// comes out either mapped or rejected with a stable reason code (REASONS.md),
// never dropped silently.
package mapping

import (
	"fmt"
	"slices"
	"strings"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/schemas"
)

// MaxNameChars is the longest event_name, metric_name and event_value
// accepted, in characters: the seed product's "< 128 chars".
const MaxNameChars = 127

// Timestamp units of an events mapping (config timestamp_unit).
const (
	UnitSeconds      = "seconds"
	UnitMilliseconds = "milliseconds"
	UnitMicroseconds = "microseconds"
	UnitAuto         = "auto"
)

// typeSet is a set of raw column types a mapped field accepts.
type typeSet uint16

const (
	tBoolean typeSet = 1 << iota
	tLong
	tDouble
	tDecimal
	tString
	tBytes
	tDate
	tTimestamp
	tJSON

	tNumber   = tLong | tDouble | tDecimal | tString
	tIDs      = tString | tLong | tDecimal | tDouble
	tAnyType  = tBoolean | tLong | tDouble | tDecimal | tString | tBytes | tDate | tTimestamp | tJSON
	tTimeLike = tTimestamp | tLong | tDouble | tDecimal | tString
)

func typeBit(t string) typeSet {
	switch t {
	case schemas.TypeBoolean:
		return tBoolean
	case schemas.TypeLong:
		return tLong
	case schemas.TypeDouble:
		return tDouble
	case schemas.TypeDecimal:
		return tDecimal
	case schemas.TypeString:
		return tString
	case schemas.TypeBytes:
		return tBytes
	case schemas.TypeDate:
		return tDate
	case schemas.TypeTimestamp:
		return tTimestamp
	case schemas.TypeJSON:
		return tJSON
	}
	return 0
}

func (s typeSet) String() string {
	var names []string
	for _, t := range []string{schemas.TypeBoolean, schemas.TypeLong, schemas.TypeDouble, schemas.TypeDecimal, schemas.TypeString, schemas.TypeBytes, schemas.TypeDate, schemas.TypeTimestamp, schemas.TypeJSON} {
		if s&typeBit(t) != 0 {
			names = append(names, t)
		}
	}
	return strings.Join(names, ", ")
}

// ref is one mapped field: the config's name for it, the column it reads,
// and, per batch, the resolved column.
type ref struct {
	field    string // as the config spells it: event_name, ids.userID, metadata.plan
	column   string
	key      string // ids: the id type; metadata: the key
	accept   typeSet
	required bool
	col      *schemas.Column
}

// Mapper maps the raw batches of one ingestion. It is not safe for
// concurrent use: it keeps per-batch scratch buffers. Use one per goroutine.
type Mapper struct {
	typ     string
	unit    string
	idTypes []string
	refs    []ref

	// Indexes into refs; -1 when the field is not mapped.
	eventName, timestamp, eventValue, metadataJSON          int
	unitID, idType, date, metricName, metricValue, num, den int
	ids, metadata                                           []int

	day     dayInfo
	counts  [numReasons]int64
	scratch []byte // JSON validation copy, number text
	arena   []byte // metadata keys and values of the current row
	pairs   []pair
	json    []byte // the current row's metadata JSON
}

// dayInfo is the run's day, parsed once per batch.
type dayInfo struct {
	str   string
	known bool
	days  int64 // since 1970-01-01
	maxMs int64 // exclusive upper bound of event times
}

// New compiles ing's mapping. idTypes are the project's unit id types.
func New(ing config.Ingestion, idTypes []string) (*Mapper, error) {
	mp := ing.Mapping
	m := &Mapper{
		typ:       ing.Type,
		idTypes:   slices.Clone(idTypes),
		eventName: -1, timestamp: -1, eventValue: -1, metadataJSON: -1,
		unitID: -1, idType: -1, date: -1, metricName: -1, metricValue: -1, num: -1, den: -1,
	}
	add := func(field, column, key string, accept typeSet, required bool) int {
		if column == "" {
			return -1
		}
		m.refs = append(m.refs, ref{field: field, column: column, key: key, accept: accept, required: required})
		return len(m.refs) - 1
	}
	var missing []string
	need := func(field, column string) {
		if column == "" {
			missing = append(missing, field)
		}
	}
	switch ing.Type {
	case config.TypeEvents:
		need("event_name", mp.EventName)
		need("timestamp", mp.Timestamp)
		if len(mp.IDs) == 0 {
			missing = append(missing, "ids")
		}
		m.unit = mp.TimestampUnit
		switch m.unit {
		case "":
			m.unit = UnitSeconds
		case UnitSeconds, UnitMilliseconds, UnitMicroseconds, UnitAuto:
		default:
			return nil, fmt.Errorf("mapping of ingestion %s: timestamp_unit %q: want seconds, milliseconds, microseconds or auto", ing.Name, m.unit)
		}
		m.eventName = add("event_name", mp.EventName, "", tString, true)
		m.timestamp = add("timestamp", mp.Timestamp, "", tTimeLike, true)
		for _, idType := range sortedKeys(mp.IDs) {
			if k := add("ids."+idType, mp.IDs[idType], idType, tIDs, false); k >= 0 {
				m.ids = append(m.ids, k)
			}
		}
		m.eventValue = add("event_value", mp.EventValue, "", tNumber|tBoolean, false)
		for _, key := range sortedKeys(mp.Metadata) {
			if k := add("metadata."+key, mp.Metadata[key], key, tAnyType, false); k >= 0 {
				m.metadata = append(m.metadata, k)
			}
		}
		m.metadataJSON = add("metadata_json", mp.MetadataJSON, "", tString|tJSON, false)
	case config.TypeMetrics:
		need("unit_id", mp.UnitID)
		need("id_type", mp.IDType)
		need("date", mp.Date)
		need("metric_name", mp.MetricName)
		if mp.MetricValue == "" && (mp.Numerator == "" || mp.Denominator == "") {
			missing = append(missing, "metric_value (or numerator and denominator)")
		}
		if (mp.Numerator == "") != (mp.Denominator == "") {
			return nil, fmt.Errorf("mapping of ingestion %s: numerator and denominator go together", ing.Name)
		}
		m.unitID = add("unit_id", mp.UnitID, "", tIDs, true)
		m.idType = add("id_type", mp.IDType, "", tString, true)
		m.date = add("date", mp.Date, "", tDate|tString, true)
		m.metricName = add("metric_name", mp.MetricName, "", tString, true)
		m.metricValue = add("metric_value", mp.MetricValue, "", tNumber, false)
		m.num = add("numerator", mp.Numerator, "", tNumber, false)
		m.den = add("denominator", mp.Denominator, "", tNumber, false)
	default:
		return nil, fmt.Errorf("mapping of ingestion %s: type %q: want events or metrics", ing.Name, ing.Type)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("mapping of ingestion %s: %s required for %s", ing.Name, strings.Join(missing, ", "), ing.Type)
	}
	return m, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Rejection is one row that could not be mapped.
type Rejection struct {
	Position int64  // the row's position in the query result
	Reason   string // a stable reason code, one of vocab.RowReasons
	Detail   string // what is wrong, for a person
	Field    string // the mapping field at fault ("" when none is)
	Column   string // the column at fault ("" when none is)

	raw *schemas.RawBatch
	row int
}

// Values returns the row's original values as text, keyed by column name;
// null values are absent. It reads the raw batch, so call it before the
// batch is reused.
func (r Rejection) Values() map[string]string {
	if r.raw == nil {
		return nil
	}
	return rowValues(r.raw, r.row)
}

// fail says why a row is rejected; the zero value means it is not.
type fail struct {
	r      reason
	ref    int // index into refs, -1 when no one field is at fault
	detail string
}

func (m *Mapper) failf(r reason, k int, format string, args ...any) fail {
	return fail{r: r, ref: k, detail: fmt.Sprintf(format, args...)}
}

// Map maps one ROWS batch, appending its records to out (whose slices are
// reused: records from an earlier call are overwritten) and calling reject,
// which may be nil, once for each row it rejects. Afterwards
// out.RowCount = raw.RowCount = len(out.Events or out.Metrics) + rejected rows,
// and out.Rejected counts the rejected rows by reason.
func (m *Mapper) Map(raw *schemas.RawBatch, out *schemas.MappedBatch, reject func(Rejection)) {
	rows := int(max(raw.RowCount, 0))
	out.RowCount = int64(rows)
	out.Type = m.typ
	out.Events = out.Events[:0]
	out.Metrics = out.Metrics[:0]
	out.Rejected = out.Rejected[:0]
	m.counts = [numReasons]int64{}
	m.setDay(raw.Date)

	emit := func(i int, f fail) {
		m.counts[f.r]++
		if reject == nil {
			return
		}
		rj := Rejection{Position: raw.FirstRow + int64(i), Reason: f.r.String(), Detail: f.detail, raw: raw, row: i}
		if f.ref >= 0 {
			rj.Field, rj.Column = m.refs[f.ref].field, m.refs[f.ref].column
		}
		reject(rj)
	}

	if f := m.resolve(raw.Columns, rows); f.r != rNone {
		for i := range rows {
			emit(i, f)
		}
		m.finish(out)
		return
	}

	switch m.typ {
	case config.TypeEvents:
		out.Events = growEvents(out.Events, rows)
		for i := range rows {
			n := len(out.Events)
			out.Events = out.Events[:n+1]
			ev := &out.Events[n]
			*ev = schemas.Event{UnitIDs: ev.UnitIDs[:0]}
			if f := m.mapEvent(i, ev); f.r != rNone {
				out.Events = out.Events[:n]
				emit(i, f)
				continue
			}
			ev.Position = raw.FirstRow + int64(i)
		}
	case config.TypeMetrics:
		out.Metrics = slices.Grow(out.Metrics, rows)
		for i := range rows {
			var mt schemas.Metric
			if f := m.mapMetric(i, &mt); f.r != rNone {
				emit(i, f)
				continue
			}
			mt.Position = raw.FirstRow + int64(i)
			out.Metrics = append(out.Metrics, mt)
		}
	}
	m.finish(out)
}

// growEvents makes room for n events, keeping every element's UnitIDs
// capacity (slices.Grow would drop those beyond len).
func growEvents(evs []schemas.Event, n int) []schemas.Event {
	if cap(evs) >= n {
		return evs[:0]
	}
	grown := make([]schemas.Event, 0, n)
	return append(grown, evs[:cap(evs)]...)[:0]
}

func (m *Mapper) finish(out *schemas.MappedBatch) {
	for r := rNone + 1; r < numReasons; r++ {
		if c := m.counts[r]; c > 0 {
			out.Rejected = append(out.Rejected, schemas.ReasonCount{Reason: r.String(), Count: c})
		}
	}
}

func (m *Mapper) setDay(date string) {
	if date == m.day.str && date != "" {
		return
	}
	m.day = dayInfo{str: date}
	d, err := civil.ParseDate(date)
	if err != nil {
		return
	}
	days := int64(d.DaysSince(civil.Date{Year: 1970, Month: 1, Day: 1}))
	m.day = dayInfo{str: date, known: true, days: days, maxMs: (days + 2) * msPerDay}
}

const msPerDay = 86_400_000

// resolve finds every mapped column by name (exactly, else the one column
// whose name matches case-insensitively, as Snowflake upper-cases unquoted
// names) and checks its type and shape. A problem here rejects the batch.
func (m *Mapper) resolve(cols []schemas.Column, rows int) fail {
	var missing []string
	for k := range m.refs {
		r := &m.refs[k]
		r.col = nil
		idx := findColumn(cols, r.column)
		if idx < 0 {
			missing = append(missing, fmt.Sprintf("%q (%s)", r.column, r.field))
			continue
		}
		r.col = &cols[idx]
	}
	if len(missing) > 0 {
		names := make([]string, len(cols))
		for i := range cols {
			names[i] = cols[i].Name
		}
		ref := -1
		if len(missing) == 1 {
			for k := range m.refs {
				if m.refs[k].col == nil {
					ref = k
				}
			}
		}
		return fail{r: rMissingColumn, ref: ref, detail: fmt.Sprintf("mapped column %s not in the query result; its columns are: %s",
			strings.Join(missing, ", "), strings.Join(names, ", "))}
	}
	for k := range m.refs {
		r := &m.refs[k]
		if typeBit(r.col.Type)&r.accept == 0 {
			return m.failf(rTypeMismatch, k, "column %q mapped to %s is %s (%s); %s needs %s",
				r.col.Name, r.field, r.col.Type, r.col.DBType, r.field, r.accept)
		}
		if !complete(r.col, rows) {
			return m.failf(rMalformedBatch, k, "column %q has fewer values than the batch's %d rows", r.col.Name, rows)
		}
	}
	return fail{}
}

func findColumn(cols []schemas.Column, name string) int {
	for i := range cols {
		if cols[i].Name == name {
			return i
		}
	}
	found := -1
	for i := range cols {
		if strings.EqualFold(cols[i].Name, name) {
			if found >= 0 {
				return -1 // ambiguous
			}
			found = i
		}
	}
	return found
}

// complete reports whether c has a null flag and a value for every row.
func complete(c *schemas.Column, rows int) bool {
	if len(c.Nulls) < rows {
		return false
	}
	switch c.Type {
	case schemas.TypeBoolean:
		return len(c.Bools) >= rows
	case schemas.TypeLong, schemas.TypeDate, schemas.TypeTimestamp:
		return len(c.Longs) >= rows
	case schemas.TypeDouble:
		return len(c.Doubles) >= rows
	default:
		return len(c.Strings) >= rows
	}
}
