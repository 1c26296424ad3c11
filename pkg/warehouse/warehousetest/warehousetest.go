// Package warehousetest is the conformance suite every warehouse.Source
// runs: types, nulls, an empty day, a large day, the date as a bound
// parameter, fingerprints, error categories and cancellation. A warehouse
// package supplies a Harness that can create tables from the suite's
// portable descriptions and spell the date placeholder. RunResume
// (resume.go) is the suite every warehouse.Resumable also runs.
package warehousetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// Type is a portable column type the suite asks a warehouse to create.
type Type int

// The portable types. A harness names each in its own DDL, or returns ""
// when the warehouse has no such type (its cases are then skipped).
const (
	Int8 Type = iota
	Int16
	Int32
	Int64
	Decimal38x10 // DECIMAL(38,10)
	Decimal10x2  // DECIMAL(10,2)
	Float32
	Float64
	Bool
	String
	Bytes
	Date
	Timestamp   // without time zone
	TimestampTZ // with time zone
	JSON
	IntArray // array of 64-bit integers
	Struct   // {a: 64-bit integer, b: string}
)

// Harness adapts the suite to one warehouse.
type Harness struct {
	// Open returns the source under test and a function that executes
	// DDL/DML, both against a fresh, empty database or schema that is
	// dropped when tb ends.
	Open func(tb testing.TB) (warehouse.Source, func(tb testing.TB, sql string))
	// TypeName is the warehouse's DDL type for t, "" when it has none.
	TypeName func(t Type) string
	// Placeholder is the date parameter as the query spells it: "$1", "?", "@date".
	Placeholder string
	// Literal renders a value of t as a SQL expression when a plain
	// CAST('text' AS type) does not do (arrays, structs, bytes); nil or
	// "" falls back to the cast.
	Literal func(t Type, v any) string
	// SpecialFloats says NaN and ±Infinity can be stored in Float64.
	SpecialFloats bool
	// NoFingerprint says Fingerprint returns warehouse.ErrUnsupported.
	NoFingerprint bool
}

var (
	theDay   = civil.Date{Year: 2024, Month: 1, Day: 2}
	otherDay = civil.Date{Year: 2024, Month: 1, Day: 3}
	emptyDay = civil.Date{Year: 2024, Month: 1, Day: 4}
)

// Run runs every case of the suite against h. Column names compare
// case-insensitively: Snowflake folds unquoted identifiers to upper case.
func Run(t *testing.T, h Harness) {
	src, exec := h.Open(t)
	t.Run("types and nulls", func(t *testing.T) { testTypes(t, h, src, exec) })
	t.Run("large day", func(t *testing.T) { testLargeDay(t, h, src, exec) })
	t.Run("empty day", func(t *testing.T) { testEmptyDay(t, h, src, exec) })
	t.Run("fingerprint", func(t *testing.T) { testFingerprint(t, h, src, exec) })
	t.Run("errors", func(t *testing.T) { testErrors(t, h, src, exec) })
	t.Run("cancellation", func(t *testing.T) { testCancel(t, h, src, exec) })
}

type typeCase struct {
	name   string
	typ    Type
	raw    string // raw-rows type
	values []any  // Go values given to the literal renderer
	want   []any  // expected raw-rows values: int64, float64, bool, string
}

func typeCases(h Harness) []typeCase {
	floats := []any{3.141592653589793, -1e308, 2.2250738585072014e-308}
	wantFloats := []any{3.141592653589793, -1e308, 2.2250738585072014e-308}
	if h.SpecialFloats {
		floats = append(floats, "NaN", "Infinity", "-Infinity")
		wantFloats = append(wantFloats, math.NaN(), math.Inf(1), math.Inf(-1))
	}
	return []typeCase{
		{"int8", Int8, schemas.TypeLong, []any{-128, 127}, []any{int64(-128), int64(127)}},
		{"int16", Int16, schemas.TypeLong, []any{-32768, 32767}, []any{int64(-32768), int64(32767)}},
		{"int32", Int32, schemas.TypeLong, []any{-2147483648, 2147483647}, []any{int64(math.MinInt32), int64(math.MaxInt32)}},
		{"int64", Int64, schemas.TypeLong, []any{"-9223372036854775808", "9223372036854775807", 0}, []any{int64(math.MinInt64), int64(math.MaxInt64), int64(0)}},
		{"dec38", Decimal38x10, schemas.TypeDecimal,
			[]any{"1234567890123456789012345678.0123456789", "-0.0000000001", "1"},
			[]any{"1234567890123456789012345678.0123456789", "-0.0000000001", "1.0000000000"}},
		{"dec10", Decimal10x2, schemas.TypeDecimal, []any{"-1.5", "99999999.99"}, []any{"-1.50", "99999999.99"}},
		{"float32", Float32, schemas.TypeDouble, []any{1.5, -0.25}, []any{1.5, -0.25}},
		{"float64", Float64, schemas.TypeDouble, floats, wantFloats},
		{"bool", Bool, schemas.TypeBoolean, []any{true, false}, []any{true, false}},
		{"string", String, schemas.TypeString,
			[]any{"héllo 🌍 日本", `it's "quoted"`, "line1\nline2\ttab\\", ""},
			[]any{"héllo 🌍 日本", `it's "quoted"`, "line1\nline2\ttab\\", ""}},
		{"bytes", Bytes, schemas.TypeBytes, []any{[]byte{0, 1, 255}, []byte{}}, []any{"AAH/", ""}},
		{"date", Date, schemas.TypeDate, []any{"2024-02-29", "1969-12-31", "0001-01-01"}, []any{int64(19782), int64(-1), int64(-719162)}},
		{"ts", Timestamp, schemas.TypeTimestamp,
			[]any{"2024-03-05 06:07:08.123456", "1960-01-01 00:00:00"},
			[]any{time.Date(2024, 3, 5, 6, 7, 8, 123456000, time.UTC).UnixMicro(), time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()}},
		{"tstz", TimestampTZ, schemas.TypeTimestamp,
			[]any{"2024-03-05 06:07:08.123456+02:00", "2024-07-01 00:00:00+00:00"},
			[]any{time.Date(2024, 3, 5, 4, 7, 8, 123456000, time.UTC).UnixMicro(), time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC).UnixMicro()}},
		{"json", JSON, schemas.TypeJSON,
			[]any{`{"a": 1, "b": [true, null], "c": "x\"y é"}`, `[]`, `"str"`},
			[]any{`{"a": 1, "b": [true, null], "c": "x\"y é"}`, `[]`, `"str"`}},
		{"intarray", IntArray, schemas.TypeJSON, []any{[]int64{1, -2, 9223372036854775807}, []int64{}}, []any{`[1, -2, 9223372036854775807]`, `[]`}},
		{"struct", Struct, schemas.TypeJSON, []any{StructValue{A: 1, B: "x'y"}}, []any{`{"a": 1, "b": "x'y"}`}},
	}
}

// StructValue is the value of a Struct column: {a: A, b: B}.
type StructValue struct {
	A int64
	B string
}

// Quote renders s as a SQL string literal.
func Quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func literal(h Harness, t Type, v any) string {
	if h.Literal != nil {
		if l := h.Literal(t, v); l != "" {
			return l
		}
	}
	var text string
	switch v := v.(type) {
	case string:
		text = v
	case bool:
		text = strconv.FormatBool(v)
	case int:
		text = strconv.Itoa(v)
	case float64:
		text = strconv.FormatFloat(v, 'g', -1, 64)
	default:
		text = fmt.Sprint(v)
	}
	return "CAST(" + Quote(text) + " AS " + h.TypeName(t) + ")"
}

func dateLit(h Harness, d civil.Date) string {
	return "CAST(" + Quote(d.String()) + " AS " + h.TypeName(Date) + ")"
}

func testTypes(t *testing.T, h Harness, src warehouse.Source, exec func(testing.TB, string)) {
	var cases []typeCase
	for _, c := range typeCases(h) {
		if h.TypeName(c.typ) != "" {
			cases = append(cases, c)
		}
	}
	rows := 0
	cols := []string{"id " + h.TypeName(Int64), "day " + h.TypeName(Date)}
	var names []string
	for _, c := range cases {
		rows = max(rows, len(c.values))
		cols = append(cols, "c_"+c.name+" "+h.TypeName(c.typ))
		names = append(names, "c_"+c.name)
	}
	exec(t, "CREATE TABLE types ("+strings.Join(cols, ", ")+")")
	insert := func(id int, day civil.Date, row int) {
		vals := []string{literal(h, Int64, id), dateLit(h, day)}
		for _, c := range cases {
			if row < len(c.values) {
				vals = append(vals, literal(h, c.typ, c.values[row]))
			} else {
				vals = append(vals, "NULL")
			}
		}
		exec(t, "INSERT INTO types VALUES ("+strings.Join(vals, ", ")+")")
	}
	// Rows 0..rows-1 carry values (NULL past a case's last value), the
	// last row is null in every column; one row sits on another day.
	for r := 0; r <= rows; r++ {
		insert(r, theDay, r)
	}
	insert(99, otherDay, 0)

	query := "SELECT " + strings.Join(names, ", ") + " FROM types WHERE day = " + h.Placeholder + " ORDER BY id"
	got, batches := collect(t, src, query, theDay, 2)
	for _, n := range batches {
		if n > 2 {
			t.Errorf("a batch has %d rows, more than batchRows 2", n)
		}
	}
	if got.Rows != rows+1 {
		t.Fatalf("streamed %d rows, want %d", got.Rows, rows+1)
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			col := got.Columns[i]
			if !strings.EqualFold(col.Name, names[i]) || col.Type != c.raw {
				t.Fatalf("column %q type %s (db %s), want %q type %s", col.Name, col.Type, col.DBType, names[i], c.raw)
			}
			if col.DBType == "" {
				t.Errorf("column %s has no db_type", col.Name)
			}
			for r := 0; r <= rows; r++ {
				if r >= len(c.want) {
					if !col.IsNull(r) {
						t.Errorf("row %d: not null, want null", r)
					}
					checkZero(t, col, r)
					continue
				}
				if col.IsNull(r) {
					t.Errorf("row %d: null, want %v", r, c.want[r])
					continue
				}
				checkValue(t, col, r, c.want[r])
			}
		})
	}

	t.Run("date is a bound parameter", func(t *testing.T) {
		n, err := src.Count(context.Background(), query, otherDay)
		if err != nil || n != 1 {
			t.Fatalf("Count(other day) = %d, %v; want 1", n, err)
		}
		n, err = src.Count(context.Background(), query, theDay)
		if err != nil || n != int64(rows+1) {
			t.Fatalf("Count(day) = %d, %v; want %d", n, err, rows+1)
		}
	})

	t.Run("sample", func(t *testing.T) {
		b, err := src.Sample(context.Background(), query, theDay, 2)
		if err != nil {
			t.Fatalf("Sample: %v", err)
		}
		if b.Rows != 2 || len(b.Columns) != len(cases) {
			t.Fatalf("Sample rows=%d cols=%d, want 2 rows, %d columns", b.Rows, len(b.Columns), len(cases))
		}
		for i, c := range cases {
			col := b.Columns[i]
			if col.Type != c.raw || len(col.Nulls) != 2 {
				t.Errorf("sample column %s: type %s, %d nulls; want %s, 2", col.Name, col.Type, len(col.Nulls), c.raw)
			}
		}
	})
}

func checkZero(tb testing.TB, col schemas.Column, r int) {
	tb.Helper()
	var zero bool
	switch col.Type {
	case schemas.TypeBoolean:
		zero = r < len(col.Bools) && !col.Bools[r]
	case schemas.TypeLong, schemas.TypeDate, schemas.TypeTimestamp:
		zero = r < len(col.Longs) && col.Longs[r] == 0
	case schemas.TypeDouble:
		zero = r < len(col.Doubles) && col.Doubles[r] == 0
	default:
		zero = r < len(col.Strings) && col.Strings[r] == ""
	}
	if !zero {
		tb.Errorf("column %s row %d: null row does not hold a zero value at its index", col.Name, r)
	}
}

func checkValue(tb testing.TB, col schemas.Column, r int, want any) {
	tb.Helper()
	switch w := want.(type) {
	case int64:
		if col.Longs[r] != w {
			tb.Errorf("row %d = %d, want %d", r, col.Longs[r], w)
		}
	case float64:
		g := col.Doubles[r]
		if g != w && !(math.IsNaN(g) && math.IsNaN(w)) {
			tb.Errorf("row %d = %v, want %v", r, g, w)
		}
	case bool:
		if col.Bools[r] != w {
			tb.Errorf("row %d = %v, want %v", r, col.Bools[r], w)
		}
	case string:
		g := col.Strings[r]
		if col.Type == schemas.TypeJSON {
			if !sameJSON(g, w) {
				tb.Errorf("row %d = %s, want JSON %s", r, g, w)
			}
		} else if g != w {
			tb.Errorf("row %d = %q, want %q", r, g, w)
		}
	default:
		tb.Fatalf("unexpected want type %T", want)
	}
}

func sameJSON(a, b string) bool {
	var x, y any
	da, db := json.NewDecoder(strings.NewReader(a)), json.NewDecoder(strings.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&x) != nil || db.Decode(&y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// collect streams query for day and returns every row, merged, and the
// size of each batch.
func collect(tb testing.TB, src warehouse.Source, query string, day civil.Date, batchRows int) (*warehouse.Batch, []int) {
	tb.Helper()
	var all warehouse.Batch
	var sizes []int
	n, err := src.Stream(context.Background(), query, day, batchRows, func(b *warehouse.Batch) error {
		sizes = append(sizes, b.Rows)
		if all.Columns == nil {
			all.Columns = make([]schemas.Column, len(b.Columns))
		}
		for i, c := range b.Columns {
			a := &all.Columns[i]
			a.Name, a.Type, a.DBType = c.Name, c.Type, c.DBType
			if len(c.Nulls) != b.Rows {
				return fmt.Errorf("column %s has %d nulls for %d rows", c.Name, len(c.Nulls), b.Rows)
			}
			a.Nulls = append(a.Nulls, c.Nulls...)
			a.Bools = append(a.Bools, c.Bools...)
			a.Longs = append(a.Longs, c.Longs...)
			a.Doubles = append(a.Doubles, c.Doubles...)
			a.Strings = append(a.Strings, c.Strings...)
		}
		all.Rows += b.Rows
		return nil
	})
	if err != nil {
		tb.Fatalf("Stream(%s): %v", day, err)
	}
	if n != int64(all.Rows) {
		tb.Fatalf("Stream returned %d rows but emitted %d", n, all.Rows)
	}
	return &all, sizes
}

const largeRows = 50000

func createLarge(tb testing.TB, h Harness, exec func(testing.TB, string), table string) {
	exec(tb, "CREATE TABLE "+table+" (id "+h.TypeName(Int64)+", day "+h.TypeName(Date)+", name "+h.TypeName(String)+", v "+h.TypeName(Float64)+")")
	exec(tb, fmt.Sprintf("INSERT INTO %s SELECT i, %s, 'name-' || CAST(i AS %s), i * 0.5 FROM generate_series(0, %d) AS t(i)",
		table, dateLit(h, theDay), h.TypeName(String), largeRows-1))
	exec(tb, fmt.Sprintf("INSERT INTO %s SELECT i, %s, 'other', 0 FROM generate_series(1, 7) AS t(i)", table, dateLit(h, otherDay)))
}

func testLargeDay(t *testing.T, h Harness, src warehouse.Source, exec func(testing.TB, string)) {
	createLarge(t, h, exec, "big")
	query := "SELECT id, name, v FROM big WHERE day = " + h.Placeholder
	const batchRows = 1000
	seen := make([]bool, largeRows)
	batches := 0
	n, err := src.Stream(context.Background(), query, theDay, batchRows, func(b *warehouse.Batch) error {
		batches++
		if b.Rows > batchRows || b.Rows == 0 {
			return fmt.Errorf("batch of %d rows, want 1..%d", b.Rows, batchRows)
		}
		id, name, v := b.Columns[0], b.Columns[1], b.Columns[2]
		if id.Type != schemas.TypeLong || name.Type != schemas.TypeString || v.Type != schemas.TypeDouble {
			return fmt.Errorf("column types %s %s %s", id.Type, name.Type, v.Type)
		}
		for r := 0; r < b.Rows; r++ {
			i := id.Longs[r]
			if i < 0 || i >= largeRows || seen[i] {
				return fmt.Errorf("row id %d out of range or seen twice", i)
			}
			seen[i] = true
			if want := "name-" + strconv.FormatInt(i, 10); name.Strings[r] != want {
				return fmt.Errorf("row %d name %q, want %q", i, name.Strings[r], want)
			}
			if v.Doubles[r] != float64(i)*0.5 {
				return fmt.Errorf("row %d v %v, want %v", i, v.Doubles[r], float64(i)*0.5)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if n != largeRows {
		t.Fatalf("Stream returned %d, want %d", n, largeRows)
	}
	for i, ok := range seen {
		if !ok {
			t.Fatalf("row %d never arrived", i)
		}
	}
	if batches < largeRows/batchRows {
		t.Errorf("%d batches, want at least %d", batches, largeRows/batchRows)
	}
	for _, tt := range []struct {
		day  civil.Date
		want int64
	}{{theDay, largeRows}, {otherDay, 7}, {emptyDay, 0}} {
		if got, err := src.Count(context.Background(), query, tt.day); err != nil || got != tt.want {
			t.Errorf("Count(%s) = %d, %v; want %d", tt.day, got, err, tt.want)
		}
	}
	b, err := src.Sample(context.Background(), query, theDay, 5)
	if err != nil || b.Rows != 5 || len(b.Columns) != 3 || !strings.EqualFold(b.Columns[1].Name, "name") {
		t.Errorf("Sample(5) = %+v, %v; want 5 rows of id, name, v", b, err)
	}
}

func testEmptyDay(t *testing.T, h Harness, src warehouse.Source, exec func(testing.TB, string)) {
	exec(t, "CREATE TABLE empty_day (id "+h.TypeName(Int64)+", day "+h.TypeName(Date)+")")
	exec(t, "INSERT INTO empty_day VALUES (1, "+dateLit(h, theDay)+")")
	query := "SELECT id FROM empty_day WHERE day = " + h.Placeholder
	emitted := 0
	n, err := src.Stream(context.Background(), query, emptyDay, 100, func(b *warehouse.Batch) error {
		emitted++
		return nil
	})
	if err != nil || n != 0 || emitted != 0 {
		t.Fatalf("Stream(empty day) = %d rows, %d batches, %v; want 0, 0, nil", n, emitted, err)
	}
	if c, err := src.Count(context.Background(), query, emptyDay); err != nil || c != 0 {
		t.Fatalf("Count(empty day) = %d, %v; want 0", c, err)
	}
	b, err := src.Sample(context.Background(), query, emptyDay, 10)
	if err != nil || b.Rows != 0 || len(b.Columns) != 1 || !strings.EqualFold(b.Columns[0].Name, "id") {
		t.Fatalf("Sample(empty day) = %+v, %v; want 0 rows with column id", b, err)
	}
}

func testFingerprint(t *testing.T, h Harness, src warehouse.Source, exec func(testing.TB, string)) {
	for _, table := range []string{"fp_a", "fp_b"} {
		exec(t, "CREATE TABLE "+table+" (id "+h.TypeName(Int64)+", day "+h.TypeName(Date)+", v "+h.TypeName(String)+", x "+h.TypeName(Float64)+")")
	}
	const n = 20
	for i := 0; i < n; i++ {
		// The same rows, in opposite insertion order.
		exec(t, fmt.Sprintf("INSERT INTO fp_a VALUES (%d, %s, 'v%d', %d.5)", i, dateLit(h, theDay), i, i))
		j := n - 1 - i
		exec(t, fmt.Sprintf("INSERT INTO fp_b VALUES (%d, %s, 'v%d', %d.5)", j, dateLit(h, theDay), j, j))
	}
	exec(t, "INSERT INTO fp_b VALUES (0, "+dateLit(h, otherDay)+", NULL, NULL)")
	q := func(table string) string {
		return "SELECT id, v, x FROM " + table + " WHERE day = " + h.Placeholder
	}
	fp := func(table string) string {
		t.Helper()
		s, err := src.Fingerprint(context.Background(), q(table), theDay)
		if err != nil {
			t.Fatalf("Fingerprint(%s): %v", table, err)
		}
		return s
	}
	if h.NoFingerprint {
		if _, err := src.Fingerprint(context.Background(), q("fp_a"), theDay); !errors.Is(err, warehouse.ErrUnsupported) {
			t.Fatalf("Fingerprint = %v, want ErrUnsupported", err)
		}
		return
	}
	a, b := fp("fp_a"), fp("fp_b")
	if a == "" || a != b {
		t.Fatalf("fingerprints of the same rows in another order differ: %q vs %q", a, b)
	}
	exec(t, "UPDATE fp_b SET v = 'changed' WHERE id = 7")
	if c := fp("fp_b"); c == a {
		t.Fatalf("fingerprint %q did not change when a value did", c)
	}
	exec(t, "UPDATE fp_b SET v = 'v7' WHERE id = 7")
	exec(t, "UPDATE fp_b SET x = NULL WHERE id = 3")
	if c := fp("fp_b"); c == a {
		t.Fatalf("fingerprint %q did not change when a value became null", c)
	}
	exec(t, "DELETE FROM fp_b WHERE id = 3")
	exec(t, "INSERT INTO fp_b VALUES (3, "+dateLit(h, theDay)+", 'v3', 3.5)")
	if c := fp("fp_b"); c != a {
		t.Fatalf("fingerprint %q, want %q after restoring the rows", c, a)
	}
	if c, err := src.Fingerprint(context.Background(), q("fp_b"), emptyDay); err != nil || c == a {
		t.Fatalf("Fingerprint(empty day) = %q, %v; want a different digest", c, err)
	}
}

func testErrors(t *testing.T, h Harness, src warehouse.Source, exec func(testing.TB, string)) {
	exec(t, "CREATE TABLE errs (id "+h.TypeName(Int64)+", day "+h.TypeName(Date)+")")
	tests := []struct {
		name  string
		query string
	}{
		{"missing table", "SELECT id FROM no_such_table WHERE day = " + h.Placeholder},
		{"missing column", "SELECT no_such_column FROM errs WHERE day = " + h.Placeholder},
		{"syntax error", "SELEC id FROM errs WHERE day = " + h.Placeholder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops := map[string]func() error{
				"stream": func() error {
					_, err := src.Stream(context.Background(), tt.query, theDay, 10, func(*warehouse.Batch) error { return nil })
					return err
				},
				"count": func() error { _, err := src.Count(context.Background(), tt.query, theDay); return err },
				"sample": func() error {
					_, err := src.Sample(context.Background(), tt.query, theDay, 1)
					return err
				},
			}
			for op, run := range ops {
				err := run()
				var we *warehouse.Error
				if !errors.As(err, &we) {
					t.Fatalf("%s: error %v is not a *warehouse.Error", op, err)
				}
				if cat, transient := warehouse.Categorize(err); cat != vocab.CategoryQuery || transient {
					t.Errorf("%s: category %s transient %v, want %s not transient (%v)", op, cat, transient, vocab.CategoryQuery, err)
				}
			}
		})
	}
	t.Run("emit error stops the stream", func(t *testing.T) {
		createLarge(t, h, exec, "errs_big")
		stop := errors.New("stop")
		calls := 0
		_, err := src.Stream(context.Background(), "SELECT id FROM errs_big WHERE day = "+h.Placeholder, theDay, 100, func(*warehouse.Batch) error {
			calls++
			return stop
		})
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("Stream = %v after %d emits, want the emit error after 1", err, calls)
		}
	})
}

func testCancel(t *testing.T, h Harness, src warehouse.Source, exec func(testing.TB, string)) {
	createLarge(t, h, exec, "cancel_big")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	n, err := src.Stream(ctx, "SELECT id, name FROM cancel_big WHERE day = "+h.Placeholder, theDay, 100, func(*warehouse.Batch) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Stream after cancel = %d rows, %v; want context.Canceled", n, err)
	}
	if n >= largeRows || calls > 1 {
		t.Fatalf("Stream kept going after cancel: %d rows, %d emits", n, calls)
	}
}
