package mapping

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/schemas"
)

// rowValues renders every non-null value of row i as text. It is the
// dead-letter copy of a rejected row, so it tolerates malformed columns.
func rowValues(raw *schemas.RawBatch, i int) map[string]string {
	vals := make(map[string]string, len(raw.Columns))
	var buf []byte
	for c := range raw.Columns {
		col := &raw.Columns[c]
		if i >= len(col.Nulls) || col.IsNull(i) || !complete(col, i+1) {
			continue
		}
		buf = appendText(buf[:0], col, i)
		vals[col.Name] = string(buf)
	}
	return vals
}

// appendText appends row i of c as text: numbers canonically (see
// appendFloat, canonicalDecimal), DATE as YYYY-MM-DD, TIMESTAMP as RFC 3339
// in UTC, strings, JSON and base64 BYTES verbatim.
func appendText(dst []byte, c *schemas.Column, i int) []byte {
	switch c.Type {
	case schemas.TypeBoolean:
		return strconv.AppendBool(dst, c.Bools[i])
	case schemas.TypeLong:
		return strconv.AppendInt(dst, c.Longs[i], 10)
	case schemas.TypeDouble:
		return appendFloat(dst, c.Doubles[i])
	case schemas.TypeDecimal:
		s, _ := canonicalDecimal(c.Strings[i])
		return append(dst, s...)
	case schemas.TypeDate:
		return appendDate(dst, c.Longs[i])
	case schemas.TypeTimestamp:
		return time.UnixMicro(c.Longs[i]).UTC().AppendFormat(dst, "2006-01-02T15:04:05.999999Z07:00")
	default:
		return append(dst, c.Strings[i]...)
	}
}

func appendDate(dst []byte, days int64) []byte {
	return time.Unix(days*86400, 0).UTC().AppendFormat(dst, time.DateOnly)
}

// appendFloat renders a double the way JavaScript prints a number, so a
// value reads the same as an SDK would send it: integer-valued doubles
// without a fraction ("5", not "5.0"), the shortest round-tripping digits,
// exponent form only below 1e-6 or from 1e21.
func appendFloat(dst []byte, v float64) []byte {
	if v == 0 {
		return append(dst, '0') // also -0
	}
	if a := math.Abs(v); a >= 1e-6 && a < 1e21 {
		return strconv.AppendFloat(dst, v, 'f', -1, 64)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, 64)
}

// canonicalDecimal renders exact decimal text canonically without going
// through a double: no leading zeros, no trailing fractional zeros, no "-0"
// ("007.50" -> "7.5", "12.000" -> "12"). Exponent forms go through a double.
// It returns s itself, without allocating, when s is already canonical, and
// ok=false (with s unchanged) when s is not a number.
func canonicalDecimal(s string) (string, bool) {
	t := strings.TrimSpace(s)
	body := t
	neg := false
	if len(body) > 0 && (body[0] == '-' || body[0] == '+') {
		neg = body[0] == '-'
		body = body[1:]
	}
	intPart, frac, _ := strings.Cut(body, ".")
	if !allDigits(intPart) || !allDigits(frac) || intPart == "" && frac == "" {
		v, ok := parseNumber(t)
		if !ok {
			return s, false
		}
		return string(appendFloat(nil, v)), true
	}
	intPart = strings.TrimLeft(intPart, "0")
	frac = strings.TrimRight(frac, "0")
	if intPart == "" {
		intPart = "0"
	}
	zero := intPart == "0" && frac == ""
	if spells(s, neg && !zero, intPart, frac) {
		return s, true // already canonical: no allocation
	}
	var b strings.Builder
	b.Grow(len(t))
	if neg && !zero {
		b.WriteByte('-')
	}
	b.WriteString(intPart)
	if frac != "" {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	return b.String(), true
}

// spells reports whether s is exactly [-]intPart[.frac].
func spells(s string, neg bool, intPart, frac string) bool {
	if neg {
		if !strings.HasPrefix(s, "-") {
			return false
		}
		s = s[1:]
	}
	if !strings.HasPrefix(s, intPart) {
		return false
	}
	s = s[len(intPart):]
	if frac == "" {
		return s == ""
	}
	return len(s) == len(frac)+1 && s[0] == '.' && s[1:] == frac
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseNumber parses decimal number text (optional sign, digits, fraction,
// exponent; surrounding spaces ignored) into a finite double. Unlike
// strconv.ParseFloat it refuses "NaN", "Inf", hex floats and underscores,
// which no warehouse means as a number.
func parseNumber(s string) (float64, bool) {
	t := strings.TrimSpace(s)
	if !isDecimalSyntax(t) {
		return 0, false
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

func isDecimalSyntax(t string) bool {
	i := 0
	if i < len(t) && (t[i] == '-' || t[i] == '+') {
		i++
	}
	digits := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
		digits++
	}
	if i < len(t) && t[i] == '.' {
		i++
		for i < len(t) && t[i] >= '0' && t[i] <= '9' {
			i++
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(t) && (t[i] == 'e' || t[i] == 'E') {
		i++
		if i < len(t) && (t[i] == '-' || t[i] == '+') {
			i++
		}
		exp := 0
		for i < len(t) && t[i] >= '0' && t[i] <= '9' {
			i++
			exp++
		}
		if exp == 0 {
			return false
		}
	}
	return i == len(t)
}

// validText reports whether s can be stored as text anywhere: valid UTF-8
// and no NUL byte (PostgreSQL refuses both).
func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

func validTextBytes(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}

// quote quotes a value for a detail message, cut to a readable length.
func quote(s string) string {
	const maxLen = 80
	if len(s) > maxLen {
		cut := maxLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}
