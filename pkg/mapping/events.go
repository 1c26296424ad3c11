package mapping

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
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

// pair is one metadata entry; key and value are ranges of Mapper.arena.
type pair struct {
	k0, k1, v1 int // key arena[k0:k1], value arena[k1:v1]
	fromJSON   bool
	order      int // position in the JSON object, for "last duplicate wins"
}

const emptyObject = "{}"

// metadataJSONOf builds the event's metadata: fixed columns, then the JSON
// column unpacked one level, as a compact JSON object of string values with
// sorted keys. A fixed column wins over a JSON key of the same name.
func (m *Mapper) metadataJSONOf(i int) (string, fail) {
	if len(m.metadata) == 0 && m.metadataJSON < 0 {
		return emptyObject, fail{}
	}
	m.arena = m.arena[:0]
	m.pairs = m.pairs[:0]
	for _, k := range m.metadata {
		r := &m.refs[k]
		if r.col.IsNull(i) {
			continue
		}
		k0 := len(m.arena)
		m.arena = append(m.arena, r.key...)
		k1 := len(m.arena)
		m.arena = appendText(m.arena, r.col, i)
		if !validTextBytes(m.arena[k1:]) {
			return "", m.failf(rInvalidText, k, "%s (column %q) is not valid UTF-8 text or holds a NUL byte: %s", r.field, r.column, quote(string(m.arena[k1:])))
		}
		m.pairs = append(m.pairs, pair{k0: k0, k1: k1, v1: len(m.arena)})
	}
	if k := m.metadataJSON; k >= 0 && !m.refs[k].col.IsNull(i) {
		if f := m.unpack(k, m.refs[k].col.Strings[i]); f.r != rNone {
			return "", f
		}
	}
	if len(m.pairs) == 0 {
		return emptyObject, fail{}
	}
	m.sortPairs()
	out := append(m.json[:0], '{')
	var last []byte
	for j, p := range m.pairs {
		key := m.arena[p.k0:p.k1]
		if j > 0 && bytes.Equal(key, last) {
			continue // the sort put the winner first
		}
		if j > 0 {
			out = append(out, ',')
		}
		out = appendJSONString(out, key)
		out = append(out, ':')
		out = appendJSONString(out, m.arena[p.k1:p.v1])
		last = key
	}
	out = append(out, '}')
	m.json = out
	return string(out), fail{}
}

// less orders pairs by key, then fixed columns before JSON keys, then later
// JSON duplicates first: the first pair of each key is the one kept.
func (m *Mapper) less(a, b *pair) bool {
	if c := bytes.Compare(m.arena[a.k0:a.k1], m.arena[b.k0:b.k1]); c != 0 {
		return c < 0
	}
	if a.fromJSON != b.fromJSON {
		return !a.fromJSON
	}
	return a.order > b.order
}

// sortPairs is an insertion sort: rows carry a handful of keys, and a
// closure for slices.SortFunc would cost an allocation per row.
func (m *Mapper) sortPairs() {
	p := m.pairs
	if len(p) > 32 {
		slices.SortFunc(p, func(a, b pair) int {
			if m.less(&a, &b) {
				return -1
			}
			if m.less(&b, &a) {
				return 1
			}
			return 0
		})
		return
	}
	for j := 1; j < len(p); j++ {
		for x := j; x > 0 && m.less(&p[x], &p[x-1]); x-- {
			p[x], p[x-1] = p[x-1], p[x]
		}
	}
}

// unpack adds the keys of a JSON object one level deep: strings unescaped,
// numbers and booleans as their JSON text, objects and arrays as compact
// JSON, nulls dropped.
func (m *Mapper) unpack(k int, s string) fail {
	r := &m.refs[k]
	if strings.TrimSpace(s) == "" {
		return fail{} // an empty cell means no metadata, as null does
	}
	m.scratch = append(m.scratch[:0], s...)
	b := m.scratch
	if !json.Valid(b) {
		return m.failf(rMetadataJSONInvalid, k, "metadata_json (column %q) is not valid JSON: %s", r.column, quote(s))
	}
	p := skipSpace(b, 0)
	if b[p] != '{' {
		return m.failf(rMetadataJSONInvalid, k, "metadata_json (column %q) is a JSON %s, not an object: %s", r.column, jsonKind(b[p]), quote(s))
	}
	p++
	for order := 0; ; order++ {
		p = skipSpace(b, p)
		if p >= len(b) || b[p] == '}' {
			return fail{}
		}
		k0 := len(m.arena)
		p = m.appendUnquoted(b, p)
		k1 := len(m.arena)
		p = skipSpace(b, p) + 1 // ':'
		p = skipSpace(b, p)
		keep := true
		switch c := b[p]; {
		case c == '"':
			p = m.appendUnquoted(b, p)
		case c == '{' || c == '[':
			end := skipComposite(b, p)
			m.arena = appendCompact(m.arena, b[p:end])
			p = end
		case c == 'n':
			keep = false
			p += len("null")
		default: // number, true, false: their JSON text
			end := p
			for end < len(b) && !isDelim(b[end]) {
				end++
			}
			m.arena = append(m.arena, b[p:end]...)
			p = end
		}
		if !keep {
			m.arena = m.arena[:k0]
		} else {
			if !validTextBytes(m.arena[k0:]) {
				return m.failf(rInvalidText, k, "metadata_json (column %q) key %s holds invalid UTF-8 or a NUL character", r.column, quote(string(m.arena[k0:k1])))
			}
			m.pairs = append(m.pairs, pair{k0: k0, k1: k1, v1: len(m.arena), fromJSON: true, order: order})
		}
		p = skipSpace(b, p)
		if p < len(b) && b[p] == ',' {
			p++
		}
	}
}

func jsonKind(c byte) string {
	switch c {
	case '[':
		return "array"
	case '"':
		return "string"
	case 'n':
		return "null"
	case 't', 'f':
		return "boolean"
	default:
		return "number"
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isDelim(c byte) bool { return c == ',' || c == '}' || c == ']' || isSpace(c) }

func skipSpace(b []byte, p int) int {
	for p < len(b) && isSpace(b[p]) {
		p++
	}
	return p
}

// skipComposite returns the index after the object or array at b[p]; b is
// valid JSON.
func skipComposite(b []byte, p int) int {
	depth := 0
	for ; p < len(b); p++ {
		switch b[p] {
		case '"':
			p = skipString(b, p) - 1
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return p + 1
			}
		}
	}
	return p
}

// skipString returns the index after the string starting at b[p].
func skipString(b []byte, p int) int {
	for p++; p < len(b); p++ {
		switch b[p] {
		case '\\':
			p++
		case '"':
			return p + 1
		}
	}
	return p
}

// appendCompact appends valid JSON without insignificant whitespace.
func appendCompact(dst, src []byte) []byte {
	for p := 0; p < len(src); {
		c := src[p]
		switch {
		case c == '"':
			end := skipString(src, p)
			dst = append(dst, src[p:end]...)
			p = end
		case isSpace(c):
			p++
		default:
			dst = append(dst, c)
			p++
		}
	}
	return dst
}

// appendUnquoted appends the decoded JSON string at b[p] to the arena and
// returns the index after it. Lone surrogates become U+FFFD, as
// encoding/json decodes them.
func (m *Mapper) appendUnquoted(b []byte, p int) int {
	for p++; p < len(b); p++ {
		c := b[p]
		switch {
		case c == '"':
			return p + 1
		case c != '\\':
			m.arena = append(m.arena, c)
		case p+1 < len(b) && b[p+1] == 'u':
			r, n := decodeEscape(b[p:])
			if utf16.IsSurrogate(r) {
				r2, n2 := decodeEscape(b[p+n:])
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					r, n = dec, n+n2
				} else {
					r = utf8.RuneError
				}
			}
			m.arena = utf8.AppendRune(m.arena, r)
			p += n - 1
		case p+1 < len(b):
			p++
			m.arena = append(m.arena, unescape(b[p]))
		}
	}
	return p
}

// decodeEscape decodes a \uXXXX escape at the start of b; n is 0 when b
// does not start with one.
func decodeEscape(b []byte) (r rune, n int) {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return utf8.RuneError, 0
	}
	for _, c := range b[2:6] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return utf8.RuneError, 0
		}
	}
	return r, 6
}

func unescape(c byte) byte {
	switch c {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	default: // " \ /
		return c
	}
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s, valid UTF-8, as a JSON string literal.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for p := 0; p < len(s); p++ {
		c := s[p]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:p]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = p + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
