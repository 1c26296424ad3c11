package mapping

import (
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/schemas"
)

// minTimeMs is the earliest event time accepted: 2000-01-01T00:00:00Z.
// Anything earlier is a unit or a default-value mistake (0, 1970), not data.
const minTimeMs = 946_684_800_000

// Magnitude bounds that tell epoch units apart. Epoch seconds stay below
// 1e11 until the year 5138; milliseconds of any time after 1973 are above
// it, microseconds above 1e14 and nanoseconds above 1e17.
const (
	maxSeconds = 1e11
	maxMillis  = 1e14
	maxMicros  = 1e17
)

func (m *Mapper) mapEvent(i int, ev *schemas.Event) fail {
	name, f := m.name(m.eventName, i, rEventNameMissing, rEventNameTooLong)
	if f.r != rNone {
		return f
	}
	ms, f := m.timeMs(i)
	if f.r != rNone {
		return f
	}
	ids := ev.UnitIDs[:0]
	for _, k := range m.ids {
		s, ok, f := m.idText(k, i)
		if f.r != rNone {
			ev.UnitIDs = ids
			return f
		}
		if ok {
			ids = append(ids, schemas.UnitID{IDType: m.refs[k].key, Value: s})
		}
	}
	ev.UnitIDs = ids
	if len(ids) == 0 {
		return m.failf(rUnitIDMissing, -1, "no unit id: %s empty or null", m.idColumns())
	}
	value, f := m.value(i)
	if f.r != rNone {
		return f
	}
	meta, f := m.metadataJSONOf(i)
	if f.r != rNone {
		return f
	}
	ev.EventName, ev.TimeMs, ev.EventValue, ev.MetadataJSON = name, ms, value, meta
	return fail{}
}

func (m *Mapper) idColumns() string {
	cols := make([]string, len(m.ids))
	for j, k := range m.ids {
		cols[j] = strconv.Quote(m.refs[k].column)
	}
	if len(cols) == 1 {
		return "column " + cols[0] + " is"
	}
	return "columns " + strings.Join(cols, ", ") + " are all"
}

// name reads a required name (event_name, metric_name): non-blank text of
// at most MaxNameChars characters.
func (m *Mapper) name(k, i int, missing, tooLong reason) (string, fail) {
	r := &m.refs[k]
	if r.col.IsNull(i) {
		return "", m.failf(missing, k, "%s (column %q) is null", r.field, r.column)
	}
	s := r.col.Strings[i]
	if strings.TrimSpace(s) == "" {
		return "", m.failf(missing, k, "%s (column %q) is empty", r.field, r.column)
	}
	if !validText(s) {
		return "", m.failf(rInvalidText, k, "%s (column %q) is not valid UTF-8 text or holds a NUL byte: %s", r.field, r.column, quote(s))
	}
	if n := charCount(s); n > MaxNameChars {
		return "", m.failf(tooLong, k, "%s (column %q) has %d characters, more than %d: %s", r.field, r.column, n, MaxNameChars, quote(s))
	}
	return s, fail{}
}

func charCount(s string) int {
	if len(s) <= MaxNameChars {
		return len(s) // fewer bytes than the limit: fewer characters too
	}
	return utf8.RuneCountInString(s)
}

// timeMs reads the event time as epoch milliseconds. A TIMESTAMP column is
// taken as is; a number is epoch seconds unless timestamp_unit says
// otherwise, and a number whose magnitude says another unit is rejected
// (never loaded off by a factor of 1000), or, with unit auto, converted.
func (m *Mapper) timeMs(i int) (int64, fail) {
	k := m.timestamp
	r := &m.refs[k]
	if r.col.IsNull(i) {
		return 0, m.failf(rTimestampMissing, k, "timestamp (column %q) is null", r.column)
	}
	var ms int64
	switch r.col.Type {
	case schemas.TypeTimestamp:
		us := r.col.Longs[i]
		ms = us / 1000
		if us%1000 < 0 {
			ms-- // floor, also before 1970
		}
	case schemas.TypeLong:
		var f fail
		if ms, f = m.intToMs(r.col.Longs[i]); f.r != rNone {
			return 0, f
		}
	case schemas.TypeDouble:
		var f fail
		if ms, f = m.floatToMs(r.col.Doubles[i]); f.r != rNone {
			return 0, f
		}
	default: // DECIMAL, STRING
		s := strings.TrimSpace(r.col.Strings[i])
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			var f fail
			if ms, f = m.intToMs(v); f.r != rNone {
				return 0, f
			}
		} else if v, ok := parseNumber(s); ok {
			var f fail
			if ms, f = m.floatToMs(v); f.r != rNone {
				return 0, f
			}
		} else if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			ms = t.UnixMilli()
		} else {
			return 0, m.failf(rTimestampUnparseable, k, "timestamp (column %q) %s is neither a number of epoch %s nor an RFC 3339 time", r.column, quote(r.col.Strings[i]), m.unitName())
		}
	}
	return m.checkRange(ms)
}

func (m *Mapper) unitName() string {
	if m.unit == UnitAuto {
		return "seconds, milliseconds or microseconds"
	}
	return m.unit
}

// detectUnit names the epoch unit a non-negative number's magnitude says.
func detectUnit(a float64) string {
	switch {
	case a < maxSeconds:
		return UnitSeconds
	case a < maxMillis:
		return UnitMilliseconds
	case a < maxMicros:
		return UnitMicroseconds
	default:
		return "nanoseconds"
	}
}

// unitFor returns the unit to read v in; ok is false when v is negative or
// the configured unit contradicts v's magnitude. It does not allocate: the
// happy path runs for every row.
func (m *Mapper) unitFor(v float64) (unit string, ok bool) {
	if v < 0 {
		return "", false
	}
	got := detectUnit(v)
	if m.unit == UnitAuto || got == m.unit {
		return got, true
	}
	return got, false
}

// unitFail explains why unitFor refused v, whose text is text.
func (m *Mapper) unitFail(v float64, text string) fail {
	col := m.refs[m.timestamp].column
	if v < 0 {
		return m.failf(rTimestampOutOfRange, m.timestamp, "timestamp (column %q) %s is negative", col, text)
	}
	got := detectUnit(v)
	if got == "nanoseconds" {
		return m.failf(rTimestampUnitMismatch, m.timestamp,
			"timestamp (column %q) %s looks like nanoseconds; divide it by 1000 in the query and set timestamp_unit: microseconds (or auto)", col, text)
	}
	return m.failf(rTimestampUnitMismatch, m.timestamp,
		"timestamp (column %q) %s looks like %s, not %s; set timestamp_unit: %s (or auto)", col, text, got, m.unit, got)
}

func (m *Mapper) intToMs(v int64) (int64, fail) {
	unit, ok := m.unitFor(float64(v))
	if !ok {
		return 0, m.unitFail(float64(v), strconv.FormatInt(v, 10))
	}
	switch unit {
	case UnitSeconds:
		return v * 1000, fail{}
	case UnitMilliseconds:
		return v, fail{}
	case UnitMicroseconds:
		return v / 1000, fail{}
	default:
		return v / 1_000_000, fail{}
	}
}

func (m *Mapper) floatToMs(v float64) (int64, fail) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, m.failf(rTimestampUnparseable, m.timestamp, "timestamp (column %q) is %v", m.refs[m.timestamp].column, v)
	}
	unit, ok := m.unitFor(v)
	if !ok {
		return 0, m.unitFail(v, string(appendFloat(nil, v)))
	}
	switch unit {
	case UnitSeconds:
		v *= 1000
	case UnitMicroseconds:
		v /= 1000
	case "nanoseconds":
		v /= 1e6
	}
	if v >= math.MaxInt64 {
		return math.MaxInt64, fail{}
	}
	return int64(math.Round(v)), fail{}
}

// checkRange keeps event times between 2000-01-01 and the end of the day
// after the run's day (a day of slack for time zones and clock skew).
func (m *Mapper) checkRange(ms int64) (int64, fail) {
	col := m.refs[m.timestamp].column
	if ms < minTimeMs {
		return 0, m.failf(rTimestampOutOfRange, m.timestamp, "timestamp (column %q) %s is before 2000-01-01", col, fmtMs(ms))
	}
	if m.day.known && ms >= m.day.maxMs {
		return 0, m.failf(rTimestampOutOfRange, m.timestamp, "timestamp (column %q) %s is more than a day after the run's day %s", col, fmtMs(ms), m.day.str)
	}
	return ms, fail{}
}

func fmtMs(ms int64) string {
	const maxMs = 253402300799999 // 9999-12-31T23:59:59.999Z
	if ms > maxMs || ms < -maxMs {
		return strconv.FormatInt(ms, 10) + " ms"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

// idText reads a unit id as text: strings as they are, integers as decimal
// text, decimals and doubles canonically. ok is false for null or blank.
func (m *Mapper) idText(k, i int) (s string, ok bool, f fail) {
	r := &m.refs[k]
	if r.col.IsNull(i) {
		return "", false, fail{}
	}
	switch r.col.Type {
	case schemas.TypeLong:
		return strconv.FormatInt(r.col.Longs[i], 10), true, fail{}
	case schemas.TypeDouble:
		v := r.col.Doubles[i]
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return "", false, m.failf(rValueNotNumeric, k, "%s (column %q) is %v", r.field, r.column, v)
		}
		m.scratch = appendFloat(m.scratch[:0], v)
		return string(m.scratch), true, fail{}
	case schemas.TypeDecimal:
		s, _ = canonicalDecimal(r.col.Strings[i])
	default:
		s = r.col.Strings[i]
	}
	if strings.TrimSpace(s) == "" {
		return "", false, fail{}
	}
	if !validText(s) {
		return "", false, m.failf(rInvalidText, k, "%s (column %q) is not valid UTF-8 text or holds a NUL byte: %s", r.field, r.column, quote(s))
	}
	return s, true, fail{}
}

// value reads the optional event_value: text of at most MaxNameChars
// characters; numbers rendered canonically, booleans as true/false.
func (m *Mapper) value(i int) (string, fail) {
	k := m.eventValue
	if k < 0 {
		return "", fail{}
	}
	r := &m.refs[k]
	if r.col.IsNull(i) {
		return "", fail{}
	}
	var s string
	switch r.col.Type {
	case schemas.TypeString:
		s = r.col.Strings[i]
	case schemas.TypeDecimal:
		s, _ = canonicalDecimal(r.col.Strings[i])
	case schemas.TypeBoolean:
		s = strconv.FormatBool(r.col.Bools[i])
	case schemas.TypeLong:
		s = strconv.FormatInt(r.col.Longs[i], 10)
	default:
		m.scratch = appendFloat(m.scratch[:0], r.col.Doubles[i])
		s = string(m.scratch)
	}
	if !validText(s) {
		return "", m.failf(rInvalidText, k, "event_value (column %q) is not valid UTF-8 text or holds a NUL byte: %s", r.column, quote(s))
	}
	if n := charCount(s); n > MaxNameChars {
		return "", m.failf(rEventValueTooLong, k, "event_value (column %q) has %d characters, more than %d: %s", r.column, n, MaxNameChars, quote(s))
	}
	return s, fail{}
}
