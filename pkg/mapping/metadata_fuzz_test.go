package mapping

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/schemas"
)

// metadataSeeds are cells that probe every corner of the JSON grammar and
// of the unpacking: escapes, surrogates, duplicates, nulls, nesting, number
// syntax, whitespace, non-object roots, invalid UTF-8, NUL, long strings.
func metadataSeeds() []string {
	seeds := []string{
		``, ` `, "\t\r\n ", "\v", "\f", "\u00a0", "\u0085", "\u00a0{}", "{}\u00a0", "{}\v",
		`{}`, ` { } `, `{"a":1}`, ` {"a" : 1 , "b" : "x" } `, "\t{\n\"a\"\r:\t1\n}\r\n",
		`{"a":1,}`, `{,"a":1}`, `{"a":1 "b":2}`, `{"a"}`, `{"a":}`, `{"a"::1}`, `{a:1}`, `{'a':1}`,
		`{"a":1}}`, `{"a":1}{}`, `{"a":1} x`, `{"a":1`, `{"a":[1,2}`, `{"a":{"b":1]}`, `{"a":[1,]}`, `{"a":[,1]}`,
		`{"a":{"b":1,}}`, `{"a":{"b"}}`, `{"a":{1:2}}`, `{"a":[]}`, `{"a":{}}`, `{"a":[ ]}`, `{"a":{ }}`,
		`{"a":[1, 2 ,3 ] , "b" : { "c" : [ { } , [ ] , "x y" ] } }`,
		`{"a":null}`, `{"a":null,"a":1}`, `{"a":1,"a":null}`, `{"a":1,"a":"2","a":[3]}`, `{"plan":"json"}`, `{"country":"json","country":"again"}`,
		`{"a":nul}`, `{"a":nulll}`, `{"a":true}`, `{"a":false}`, `{"a":tru}`, `{"a":True}`, `{"a":truex}`, `{"a":falsey}`,
		`{"n":-0}`, `{"n":0}`, `{"n":1e5}`, `{"n":1E+5}`, `{"n":1e-5}`, `{"n":-1.5e-10}`, `{"n":01}`, `{"n":00}`, `{"n":-}`,
		`{"n":-01}`, `{"n":1.}`, `{"n":.5}`, `{"n":1e}`, `{"n":1e+}`, `{"n":+1}`, `{"n":0x10}`, `{"n":1.5.5}`, `{"n":NaN}`,
		`{"n":Infinity}`, `{"n":-Infinity}`, `{"n":1_000}`, `{"n":12345678901234567890123456789}`, `{"n":0e0}`, `{"n":0.0}`,
		`{"n":1 }`, `{"n":1}`, `{"n":[1e5,-0,0.5]}`,
		`{"s":"\u0000"}`, `{"\u0000":1}`, `{"\u0000":null}`, `{"s":"\ud800"}`, `{"s":"\udc00"}`, `{"s":"\ud800\udc00"}`,
		`{"s":"\ud83d\ude00"}`, `{"s":"\ud800\u0041"}`, `{"s":"\ud800\n"}`, `{"s":"\ud800\ud800\udc00"}`, `{"s":"\udc00\ud800"}`,
		`{"s":"\uD83D\uDE00"}`, `{"s":"\u00e9\u00E9"}`, `{"s":"\u12"}`, `{"s":"\u12g4"}`, `{"s":"\x"}`, `{"s":"\'"}`,
		`{"s":"\"\\\/\b\f\n\r\t"}`, `{"s":"a\"b"}`, `{"\"":"\\"}`, `{"s":"\u001f\u007f\u0080"}`, `{"s":"</script>&"}`,
		"{\"s\":\"tab\there\"}", "{\"s\":\"nl\nhere\"}", "{\"s\":\"nul\x00here\"}", "{\"s\":\"del\x7fok\"}",
		"{\"s\":\"\xff\"}", "{\"\xff\":1}", "{\"\xff\":null}", "{\"s\":[\"\xff\"]}", "{\"s\":\"\xc3\"}", "{\"\xc3\":\"\xa9\"}",
		"{\"k\xc3\":\"\xa9v\"}", "{\"s\":\"\xed\xa0\x80\"}", "{\"s\":\"\xc0\xaf\"}", "{\"s\":\"é\"}", "{\"é\":\"ü\"}",
		"{\"s\":\"\xc3\\u00e9\"}", "\xff", "{\"a\":1}\xff", "\xef\xbb\xbf{}",
		`[]`, `[1]`, `[1,`, `"str"`, `"str`, `1`, `-0`, `1e5`, `01`, `true`, `false`, `null`, `nul`, ` null `, `{`, `}`, `]`, `x`,
		`{"a":{"b":{"c":{"d":[[[[]]]]}}}}`, `{"o":{"x" : 1 , "y" : [ 1 , "a b" , { } ] }}`, `{"o":{"s":"\u0000\ud800 \" "}}`,
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"a":11}`,
		`{"session_id":"s_abc","referrer":"google","utm":{"campaign":"spring","medium":"cpc"},"is_mobile":false,"tags":["web","NZ"],"screen_width":1280}`,
	}
	for _, depth := range []int{2, 100, 9999, 10000, 10001, 20000} {
		seeds = append(seeds,
			`{"d":`+strings.Repeat("[", depth-1)+strings.Repeat("]", depth-1)+`}`,
			strings.Repeat("[", depth)+strings.Repeat("]", depth),
			`{"d":`+strings.Repeat(`{"x":`, depth-1)+"1"+strings.Repeat("}", depth-1)+`}`,
			`{"d":`+strings.Repeat("[", depth-1))
	}
	var many strings.Builder
	many.WriteString("{")
	for j := range 40 {
		if j > 0 {
			many.WriteString(",")
		}
		many.WriteString(`"k` + string(rune('a'+j%26)) + `":` + strings.Repeat("1", j+1))
	}
	many.WriteString("}")
	seeds = append(seeds, many.String(),
		`{"long":"`+strings.Repeat("abcdefghij", 1000)+`"}`,
		`{"long":"`+strings.Repeat(`\u00e9\"`, 500)+`"}`,
		`{"`+strings.Repeat("k", 300)+`":"`+strings.Repeat("\xe2\x82\xac", 300)+`"}`,
		"{\"long\":\""+strings.Repeat("x", 5000)+"\xff\"}")
	return seeds
}

// FuzzMetadataJSON requires metadataJSONOf to give exactly what the
// implementation before the single-pass rewrite gave (unpack_oracle_test.go)
// for any metadata_json cell, next to fixed metadata columns whose keys may
// collide with the cell's: the same JSON, reason, field and detail.
func FuzzMetadataJSON(f *testing.F) {
	for _, s := range metadataSeeds() {
		f.Add(s, `{"plan":"x"}`, "pro", uint8(0))
		f.Add(`{"plan":"x"}`, s, "pro", uint8(1))
	}
	for nulls := range uint8(16) {
		f.Add(`{"plan":"json","a":"\u0000"}`, `{"b":2}`, "pro", nulls)
	}
	f.Fuzz(func(t *testing.T, cell, next, plan string, nulls uint8) {
		country := "NZ"
		if nulls&8 != 0 {
			country = "\xff" // the fixed column rejects the row first
		}
		cols := []schemas.Column{
			fuzzColumn("plan", schemas.TypeString, nulls&1 != 0, plan, plan),
			fuzzColumn("country", schemas.TypeString, nulls&2 != 0, country, "NZ"),
			fuzzColumn("meta", schemas.TypeJSON, nulls&4 != 0, cell, next),
		}
		got, want := newMetadataMapper(t, cols), newMetadataMapper(t, cols)
		old := &oracle{Mapper: want}
		// Two rows through one Mapper: buffers reused from the row before.
		for i := range 2 {
			json, fl := got.metadataJSONOf(i)
			oldJSON, oldFl := oracleMetadataJSONOf(old, i)
			if json != oldJSON || fl != oldFl {
				cell := cols[2].Strings[i]
				t.Fatalf("row %d, cell of %d bytes %s:\n got %s %+v\nwant %s %+v", i, len(cell), quote(cell), quote(json), fl, quote(oldJSON), oldFl)
			}
		}
	})
}

// fuzzColumn is a column of two rows, the first null when null is set.
func fuzzColumn(name, typ string, null bool, a, b string) schemas.Column {
	c := schemas.Column{Name: name, Type: typ, Nulls: []byte{0, 0}, Strings: []string{a, b}}
	if null {
		c.Nulls[0] = 1
	}
	return c
}

func newMetadataMapper(t testing.TB, cols []schemas.Column) *Mapper {
	t.Helper()
	m, err := New(eventsIngestion(), testIDTypes)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range append([]int{m.metadataJSON}, m.metadata...) {
		r := &m.refs[k]
		r.col = &cols[findColumn(cols, r.column)]
	}
	return m
}
