package mapping

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// pair is one metadata entry; key and value are ranges of Mapper.arena.
type pair struct {
	k0, k1, v1 int // key arena[k0:k1], value arena[k1:v1]
	fromJSON   bool
	plainKey   bool   // the key needs no escaping in JSON output
	plainValue bool   // nor does the value
	order      int    // position in the JSON object, for "last duplicate wins"
	prefix     uint64 // the key's first 8 bytes, big-endian, zero-padded
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
		out = appendQuoted(out, key, p.plainKey)
		out = append(out, ':')
		out = appendQuoted(out, m.arena[p.k1:p.v1], p.plainValue)
		last = key
	}
	out = append(out, '}')
	m.json = out
	return string(out), fail{}
}

// less orders pairs by key, then fixed columns before JSON keys, then later
// JSON duplicates first: the first pair of each key is the one kept.
func (m *Mapper) less(a, b *pair) bool {
	if a.prefix != b.prefix {
		return a.prefix < b.prefix // most keys differ in their first 8 bytes
	}
	return m.lessTie(a, b)
}

// lessTie is less for keys with equal prefixes; kept apart so that less
// inlines.
func (m *Mapper) lessTie(a, b *pair) bool {
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
	for j := range p {
		p[j].prefix = keyPrefix(m.arena[p[j].k0:p[j].k1])
	}
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
		x, at := p[j], j
		for ; at > 0 && m.less(&x, &p[at-1]); at-- {
			p[at] = p[at-1]
		}
		p[at] = x
	}
}

// keyPrefix packs k's first 8 bytes so that comparing prefixes orders
// keys as bytes.Compare does, but for keys equal in those bytes.
func keyPrefix(k []byte) uint64 {
	if len(k) >= 8 {
		return binary.BigEndian.Uint64(k)
	}
	var x uint64
	for j := range 8 {
		x <<= 8
		if j < len(k) {
			x |= uint64(k[j])
		}
	}
	return x
}

// textFlags say what a decoded key or value still needs.
type textFlags uint8

const (
	// mustCheck: it holds a byte >= 0x80 or a NUL, so only validTextBytes
	// can tell whether it is storable text. Pure ASCII without NUL is.
	mustCheck textFlags = 1 << iota
	// mustEscape: it may hold '"', '\\' or a control character. A JSON
	// string without escapes cannot: the grammar forbids them raw.
	mustEscape
)

// unpack adds the keys of a JSON object one level deep: strings unescaped,
// numbers and booleans as their JSON text, objects and arrays as compact
// JSON, nulls dropped. One pass validates the cell as strictly as
// encoding/json.Valid while it unpacks, and invalid JSON wins over invalid
// text, wherever in the cell each is.
func (m *Mapper) unpack(k int, s string) fail {
	r := &m.refs[k]
	if strings.TrimSpace(s) == "" {
		return fail{} // an empty cell means no metadata, as null does
	}
	// Read the cell in place rather than copy it: b is never written.
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	p := skipSpace(b, 0)
	if p == len(b) || b[p] != '{' {
		if !validJSON(b, m.scratch) {
			return m.failf(rMetadataJSONInvalid, k, "metadata_json (column %q) is not valid JSON: %s", r.column, quote(s))
		}
		return m.failf(rMetadataJSONInvalid, k, "metadata_json (column %q) is a JSON %s, not an object: %s", r.column, jsonKind(b[p]), quote(s))
	}
	end, bad := m.unpackObject(b, p)
	if end < 0 || skipSpace(b, end) != len(b) {
		return m.failf(rMetadataJSONInvalid, k, "metadata_json (column %q) is not valid JSON: %s", r.column, quote(s))
	}
	if bad >= 0 {
		key := m.arena[m.pairs[bad].k0:m.pairs[bad].k1]
		return m.failf(rInvalidText, k, "metadata_json (column %q) key %s holds invalid UTF-8 or a NUL character", r.column, quote(string(key)))
	}
	return fail{}
}

// unpackObject unpacks the object at b[p] into the arena and pairs. It
// returns the index after the object, or -1 when the object is not valid
// JSON, and the index in m.pairs of the first pair that is not valid text
// (key and value together), or -1.
func (m *Mapper) unpackObject(b []byte, p int) (end, bad int) {
	bad = -1
	p = skipSpace(b, p+1)
	if p < len(b) && b[p] == '}' {
		return p + 1, bad
	}
	for order := 0; ; order++ {
		var keyFlags, valueFlags textFlags
		var keep bool
		k0 := len(m.arena)
		if p, keyFlags = m.appendString(b, p); p < 0 {
			return -1, bad
		}
		k1 := len(m.arena)
		if p = skipSpace(b, p); p >= len(b) || b[p] != ':' {
			return -1, bad
		}
		if p, valueFlags, keep = m.appendValue(b, skipSpace(b, p+1)); p < 0 {
			return -1, bad
		}
		if !keep {
			m.arena = m.arena[:k0]
		} else {
			if bad < 0 && (keyFlags|valueFlags)&mustCheck != 0 && !validTextBytes(m.arena[k0:]) {
				bad = len(m.pairs)
			}
			m.pairs = append(m.pairs, pair{k0: k0, k1: k1, v1: len(m.arena), fromJSON: true, order: order,
				plainKey: keyFlags&mustEscape == 0, plainValue: valueFlags&mustEscape == 0})
		}
		if p = skipSpace(b, p); p >= len(b) {
			return -1, bad
		}
		switch b[p] {
		case ',':
			p = skipSpace(b, p+1)
		case '}':
			return p + 1, bad
		default:
			return -1, bad
		}
	}
}

// appendValue appends the value at b[p] of a top-level key to the arena and
// returns the index after it (-1 when it is not valid JSON), what the
// appended text needs, and keep=false for null, which adds no key.
func (m *Mapper) appendValue(b []byte, p int) (end int, flags textFlags, keep bool) {
	if p >= len(b) {
		return -1, 0, false
	}
	switch b[p] {
	case '"':
		end, flags = m.appendString(b, p)
		return end, flags, true
	case 'n':
		return skipLiteral(b, p, "null"), 0, false
	default:
		// Other values are kept as compact JSON text; numbers, true and
		// false are plain ASCII, nested values hold quotes at least.
		var high bool
		m.arena, end, high = appendCompact(m.arena, b, p, 1)
		if b[p] == '{' || b[p] == '[' {
			flags |= mustEscape
		}
		if high {
			flags |= mustCheck
		}
		return end, flags, true
	}
}

// appendString decodes the JSON string at b[p] into the arena and returns
// the index after its closing quote, or -1 when there is no valid JSON
// string at p. Unescaped runs are copied whole.
func (m *Mapper) appendString(b []byte, p int) (int, textFlags) {
	if p >= len(b) || b[p] != '"' {
		return -1, 0
	}
	var flags textFlags
	start := p + 1
	for p = start; p < len(b); {
		c := b[p]
		switch {
		case plainStringByte[c]:
			p++
		case c == '"':
			m.arena = append(m.arena, b[start:p]...)
			return p + 1, flags
		case c == '\\':
			m.arena = append(m.arena, b[start:p]...)
			n, nul := m.appendEscape(b, p)
			if n == 0 {
				return -1, 0
			}
			if nul {
				flags |= mustCheck
			}
			flags |= mustEscape
			p += n
			start = p
		case c < 0x20:
			return -1, 0 // control characters must be escaped
		default: // >= 0x80: UTF-8, valid or not
			flags |= mustCheck
			p++
		}
	}
	return -1, 0 // unterminated
}

// appendEscape decodes the escape at b[p] into the arena and returns its
// length in b, 0 when it is not a valid escape, and whether it decoded to
// NUL. Lone surrogates become U+FFFD, as encoding/json decodes them.
func (m *Mapper) appendEscape(b []byte, p int) (n int, nul bool) {
	n = escapeLen(b, p)
	if n == 0 {
		return 0, false
	}
	if n == 2 {
		m.arena = append(m.arena, unescape(b[p+1]))
		return n, false
	}
	r := hexRune(b[p+2 : p+6])
	if utf16.IsSurrogate(r) {
		r2 := utf8.RuneError
		if escapeLen(b, p+6) == 6 {
			r2 = hexRune(b[p+8 : p+12])
		}
		if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
			r, n = dec, 12
		} else {
			r = utf8.RuneError
		}
	}
	m.arena = utf8.AppendRune(m.arena, r)
	return n, r == 0
}

// hexRune decodes four hex digits that escapeLen has checked.
func hexRune(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		r = r<<4 | rune(hexValue(c))
	}
	return r
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

// appendQuoted appends s, valid UTF-8, as a JSON string literal; plain
// says s holds nothing to escape.
func appendQuoted(dst, s []byte, plain bool) []byte {
	if !plain {
		return appendJSONString(dst, s)
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// jsonSafe marks the bytes a JSON string literal holds unescaped.
var jsonSafe = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString appends s, valid UTF-8, as a JSON string literal.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for p := 0; p < len(s); p++ {
		c := s[p]
		if jsonSafe[c] {
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
