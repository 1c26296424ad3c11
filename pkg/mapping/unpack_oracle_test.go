package mapping

// The metadata JSON path as it was before issue #7's single-pass rewrite,
// kept verbatim (functions renamed oracle*) so FuzzMetadataJSON can require
// the rewrite to give byte-identical results: output JSON, reason, detail.

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// oracle is a Mapper with buffers of its own, so it can map the same row as
// the Mapper under test without sharing state with it.
type oracle struct {
	*Mapper
	scratch, arena, json []byte
	pairs                []oraclePair
}

type oraclePair struct {
	k0, k1, v1 int
	fromJSON   bool
	order      int
}

// metadataJSONOf builds the event's metadata: fixed columns, then the JSON
// column unpacked one level, as a compact JSON object of string values with
// sorted keys. A fixed column wins over a JSON key of the same name.
func oracleMetadataJSONOf(o *oracle, i int) (string, fail) {
	if len(o.metadata) == 0 && o.metadataJSON < 0 {
		return emptyObject, fail{}
	}
	o.arena = o.arena[:0]
	o.pairs = o.pairs[:0]
	for _, k := range o.metadata {
		r := &o.refs[k]
		if r.col.IsNull(i) {
			continue
		}
		k0 := len(o.arena)
		o.arena = append(o.arena, r.key...)
		k1 := len(o.arena)
		o.arena = appendText(o.arena, r.col, i)
		if !oracleValidTextBytes(o.arena[k1:]) {
			return "", o.failf(rInvalidText, k, "%s (column %q) is not valid UTF-8 text or holds a NUL byte: %s", r.field, r.column, quote(string(o.arena[k1:])))
		}
		o.pairs = append(o.pairs, oraclePair{k0: k0, k1: k1, v1: len(o.arena)})
	}
	if k := o.metadataJSON; k >= 0 && !o.refs[k].col.IsNull(i) {
		if f := oracleUnpack(o, k, o.refs[k].col.Strings[i]); f.r != rNone {
			return "", f
		}
	}
	if len(o.pairs) == 0 {
		return emptyObject, fail{}
	}
	oracleSortPairs(o)
	out := append(o.json[:0], '{')
	var last []byte
	for j, p := range o.pairs {
		key := o.arena[p.k0:p.k1]
		if j > 0 && bytes.Equal(key, last) {
			continue // the sort put the winner first
		}
		if j > 0 {
			out = append(out, ',')
		}
		out = oracleAppendJSONString(out, key)
		out = append(out, ':')
		out = oracleAppendJSONString(out, o.arena[p.k1:p.v1])
		last = key
	}
	out = append(out, '}')
	o.json = out
	return string(out), fail{}
}

// less orders pairs by key, then fixed columns before JSON keys, then later
// JSON duplicates first: the first pair of each key is the one kept.
func oracleLess(o *oracle, a, b *oraclePair) bool {
	if c := bytes.Compare(o.arena[a.k0:a.k1], o.arena[b.k0:b.k1]); c != 0 {
		return c < 0
	}
	if a.fromJSON != b.fromJSON {
		return !a.fromJSON
	}
	return a.order > b.order
}

// sortPairs is an insertion sort: rows carry a handful of keys, and a
// closure for slices.SortFunc would cost an allocation per row.
func oracleSortPairs(o *oracle) {
	p := o.pairs
	if len(p) > 32 {
		slices.SortFunc(p, func(a, b oraclePair) int {
			if oracleLess(o, &a, &b) {
				return -1
			}
			if oracleLess(o, &b, &a) {
				return 1
			}
			return 0
		})
		return
	}
	for j := 1; j < len(p); j++ {
		for x := j; x > 0 && oracleLess(o, &p[x], &p[x-1]); x-- {
			p[x], p[x-1] = p[x-1], p[x]
		}
	}
}

// unpack adds the keys of a JSON object one level deep: strings unescaped,
// numbers and booleans as their JSON text, objects and arrays as compact
// JSON, nulls dropped.
func oracleUnpack(o *oracle, k int, s string) fail {
	r := &o.refs[k]
	if strings.TrimSpace(s) == "" {
		return fail{} // an empty cell means no metadata, as null does
	}
	o.scratch = append(o.scratch[:0], s...)
	b := o.scratch
	if !json.Valid(b) {
		return o.failf(rMetadataJSONInvalid, k, "metadata_json (column %q) is not valid JSON: %s", r.column, quote(s))
	}
	p := oracleSkipSpace(b, 0)
	if b[p] != '{' {
		return o.failf(rMetadataJSONInvalid, k, "metadata_json (column %q) is a JSON %s, not an object: %s", r.column, oracleJsonKind(b[p]), quote(s))
	}
	p++
	for order := 0; ; order++ {
		p = oracleSkipSpace(b, p)
		if p >= len(b) || b[p] == '}' {
			return fail{}
		}
		k0 := len(o.arena)
		p = oracleAppendUnquoted(o, b, p)
		k1 := len(o.arena)
		p = oracleSkipSpace(b, p) + 1 // ':'
		p = oracleSkipSpace(b, p)
		keep := true
		switch c := b[p]; {
		case c == '"':
			p = oracleAppendUnquoted(o, b, p)
		case c == '{' || c == '[':
			end := oracleSkipComposite(b, p)
			o.arena = oracleAppendCompact(o.arena, b[p:end])
			p = end
		case c == 'n':
			keep = false
			p += len("null")
		default: // number, true, false: their JSON text
			end := p
			for end < len(b) && !oracleIsDelim(b[end]) {
				end++
			}
			o.arena = append(o.arena, b[p:end]...)
			p = end
		}
		if !keep {
			o.arena = o.arena[:k0]
		} else {
			if !oracleValidTextBytes(o.arena[k0:]) {
				return o.failf(rInvalidText, k, "metadata_json (column %q) key %s holds invalid UTF-8 or a NUL character", r.column, quote(string(o.arena[k0:k1])))
			}
			o.pairs = append(o.pairs, oraclePair{k0: k0, k1: k1, v1: len(o.arena), fromJSON: true, order: order})
		}
		p = oracleSkipSpace(b, p)
		if p < len(b) && b[p] == ',' {
			p++
		}
	}
}

func oracleJsonKind(c byte) string {
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

func oracleIsSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func oracleIsDelim(c byte) bool { return c == ',' || c == '}' || c == ']' || oracleIsSpace(c) }

func oracleSkipSpace(b []byte, p int) int {
	for p < len(b) && oracleIsSpace(b[p]) {
		p++
	}
	return p
}

// skipComposite returns the index after the object or array at b[p]; b is
// valid JSON.
func oracleSkipComposite(b []byte, p int) int {
	depth := 0
	for ; p < len(b); p++ {
		switch b[p] {
		case '"':
			p = oracleSkipString(b, p) - 1
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
func oracleSkipString(b []byte, p int) int {
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
func oracleAppendCompact(dst, src []byte) []byte {
	for p := 0; p < len(src); {
		c := src[p]
		switch {
		case c == '"':
			end := oracleSkipString(src, p)
			dst = append(dst, src[p:end]...)
			p = end
		case oracleIsSpace(c):
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
func oracleAppendUnquoted(o *oracle, b []byte, p int) int {
	for p++; p < len(b); p++ {
		c := b[p]
		switch {
		case c == '"':
			return p + 1
		case c != '\\':
			o.arena = append(o.arena, c)
		case p+1 < len(b) && b[p+1] == 'u':
			r, n := oracleDecodeEscape(b[p:])
			if utf16.IsSurrogate(r) {
				r2, n2 := oracleDecodeEscape(b[p+n:])
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					r, n = dec, n+n2
				} else {
					r = utf8.RuneError
				}
			}
			o.arena = utf8.AppendRune(o.arena, r)
			p += n - 1
		case p+1 < len(b):
			p++
			o.arena = append(o.arena, oracleUnescape(b[p]))
		}
	}
	return p
}

// decodeEscape decodes a \uXXXX escape at the start of b; n is 0 when b
// does not start with one.
func oracleDecodeEscape(b []byte) (r rune, n int) {
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

func oracleUnescape(c byte) byte {
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

const oracleHexDigits = "0123456789abcdef"

// appendJSONString appends s, valid UTF-8, as a JSON string literal.
func oracleAppendJSONString(dst, s []byte) []byte {
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
			dst = append(dst, '\\', 'u', '0', '0', oracleHexDigits[c>>4], oracleHexDigits[c&0xf])
		}
		start = p + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func oracleValidTextBytes(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}
