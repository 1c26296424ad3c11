package mapping

// A strict JSON scanner (RFC 8259, exactly what encoding/json.Valid accepts)
// over a byte slice. Each skip function and compactor method takes the
// index where a token starts and returns the index after it, or -1 when the
// JSON is invalid there.

// maxNestingDepth is encoding/json's limit on nested arrays and objects:
// json.Valid refuses deeper values, so the scanner does too.
const maxNestingDepth = 10000

// compactor validates JSON values and appends them to dst without
// insignificant whitespace. It copies runs of b between whitespace, so a
// value written compactly costs one append.
type compactor struct {
	b     []byte // the input, read only
	dst   []byte
	start int  // b[start:] up to the current position is not copied yet
	high  bool // a string held a byte >= 0x80 (UTF-8, valid or not)
}

// appendCompact validates the value at b[p], inside depth arrays and
// objects, appends it compactly to dst and returns the index after it (-1 when it
// is not valid JSON) and whether it holds bytes >= 0x80.
func appendCompact(dst, b []byte, p, depth int) ([]byte, int, bool) {
	c := compactor{b: b, dst: dst, start: p}
	end := c.value(p, depth)
	if end >= 0 {
		c.dst = append(c.dst, b[c.start:end]...)
	}
	return c.dst, end, c.high
}

// validJSON reports whether b is one valid JSON value, as json.Valid does;
// the compact copy goes to scratch.
func validJSON(b, scratch []byte) bool {
	p := skipSpace(b, 0)
	_, end, _ := appendCompact(scratch[:0], b, p, 0)
	return end >= 0 && skipSpace(b, end) == len(b)
}

// space skips whitespace at p, copying what comes before it.
func (c *compactor) space(p int) int {
	q := skipSpace(c.b, p)
	if q > p {
		c.dst = append(c.dst, c.b[c.start:p]...)
		c.start = q
	}
	return q
}

// value skips the value at b[p]; depth counts the arrays and objects
// around it.
func (c *compactor) value(p, depth int) int {
	b := c.b
	if p >= len(b) {
		return -1
	}
	switch b[p] {
	case '"':
		end, high := skipString(b, p)
		c.high = c.high || high
		return end
	case '{':
		return c.object(p, depth+1)
	case '[':
		return c.array(p, depth+1)
	case 't':
		return skipLiteral(b, p, "true")
	case 'f':
		return skipLiteral(b, p, "false")
	case 'n':
		return skipLiteral(b, p, "null")
	default:
		return skipNumber(b, p)
	}
}

// object skips the object at b[p], the depth-th nested value.
func (c *compactor) object(p, depth int) int {
	b := c.b
	if depth > maxNestingDepth {
		return -1
	}
	if p = c.space(p + 1); p < len(b) && b[p] == '}' {
		return p + 1
	}
	for {
		var high bool
		if p, high = skipString(b, p); p < 0 {
			return -1
		}
		c.high = c.high || high
		if p = c.space(p); p >= len(b) || b[p] != ':' {
			return -1
		}
		if p = c.value(c.space(p+1), depth); p < 0 {
			return -1
		}
		if p = c.space(p); p >= len(b) {
			return -1
		}
		switch b[p] {
		case ',':
			p = c.space(p + 1)
		case '}':
			return p + 1
		default:
			return -1
		}
	}
}

// array skips the array at b[p], the depth-th nested value.
func (c *compactor) array(p, depth int) int {
	b := c.b
	if depth > maxNestingDepth {
		return -1
	}
	if p = c.space(p + 1); p < len(b) && b[p] == ']' {
		return p + 1
	}
	for {
		if p = c.value(p, depth); p < 0 {
			return -1
		}
		if p = c.space(p); p >= len(b) {
			return -1
		}
		switch b[p] {
		case ',':
			p = c.space(p + 1)
		case ']':
			return p + 1
		default:
			return -1
		}
	}
}

// skipString skips the string at b[p], checking its escapes, and says
// whether it holds a byte >= 0x80: such bytes pass whether or not they are
// valid UTF-8, as in json.Valid.
func skipString(b []byte, p int) (end int, high bool) {
	if p >= len(b) || b[p] != '"' {
		return -1, false
	}
	for p++; p < len(b); {
		c := b[p]
		switch {
		case plainStringByte[c]:
			p++
		case c == '"':
			return p + 1, high
		case c == '\\':
			n := escapeLen(b, p)
			if n == 0 {
				return -1, false
			}
			p += n
		case c >= 0x80:
			high = true
			p++
		default: // a control character: it must be escaped
			return -1, false
		}
	}
	return -1, false
}

// plainStringByte marks the ASCII bytes a JSON string holds as they are:
// printable ones and DEL, but not '"' or '\\'.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// escapeLen returns the length of the escape at b[p], '\\': 2, or 6 for
// \uXXXX; 0 when it is not a valid escape.
func escapeLen(b []byte, p int) int {
	if p+1 >= len(b) || b[p] != '\\' {
		return 0
	}
	switch b[p+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if p+6 > len(b) {
			return 0
		}
		for _, c := range b[p+2 : p+6] {
			if hexValue(c) < 0 {
				return 0
			}
		}
		return 6
	}
	return 0
}

// hexValue is the value of hex digit c, -1 when c is not one.
func hexValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// skipNumber skips the number at b[p]: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, p int) int {
	if p < len(b) && b[p] == '-' {
		p++
	}
	switch {
	case p < len(b) && b[p] == '0':
		p++ // no more digits: JSON has no leading zeros
	case p < len(b) && isDigit(b[p]):
		p = skipDigits(b, p)
	default:
		return -1
	}
	if p < len(b) && b[p] == '.' {
		if p = skipDigits(b, p+1); p < 0 {
			return -1
		}
	}
	if p < len(b) && (b[p] == 'e' || b[p] == 'E') {
		p++
		if p < len(b) && (b[p] == '+' || b[p] == '-') {
			p++
		}
		if p = skipDigits(b, p); p < 0 {
			return -1
		}
	}
	return p
}

// skipDigits skips one or more digits.
func skipDigits(b []byte, p int) int {
	start := p
	for p < len(b) && isDigit(b[p]) {
		p++
	}
	if p == start {
		return -1
	}
	return p
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// skipLiteral skips lit (true, false or null) at b[p].
func skipLiteral(b []byte, p int, lit string) int {
	if len(b)-p < len(lit) || string(b[p:p+len(lit)]) != lit {
		return -1
	}
	return p + len(lit)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, p int) int {
	for p < len(b) && isSpace(b[p]) {
		p++
	}
	return p
}

// jsonKind names the kind of the valid JSON value starting with c.
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
