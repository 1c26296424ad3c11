package sftest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/civil"
)

// Column is a table column with its Snowflake type, written as in DDL:
// NUMBER(p,s), INTEGER (NUMBER(38,0)), FLOAT, TEXT/VARCHAR, BOOLEAN, DATE,
// TIME, TIMESTAMP_NTZ[(s)], TIMESTAMP_LTZ[(s)], TIMESTAMP_TZ[(s)],
// VARIANT, OBJECT, ARRAY, BINARY.
type Column struct {
	Name string
	Type string
}

// Table holds rows. Values per type: NUMBER int64, int, *big.Int or
// decimal text; FLOAT float64; TEXT, VARIANT, OBJECT, ARRAY string;
// BOOLEAN bool; DATE civil.Date or time.Time; TIME and TIMESTAMP_*
// time.Time (TIMESTAMP_TZ keeps the value's offset); BINARY []byte;
// nil is NULL.
type Table struct {
	Name    string
	Columns []Column
	Rows    [][]any
}

// column is a parsed Column: the rowtype Snowflake reports.
type column struct {
	name      string
	kind      string // rowtype type, lower case: fixed, real, text, ...
	precision int
	scale     int
}

var typePattern = regexp.MustCompile(`^([A-Z_]+)(?:\((\d+)(?:,\s*(\d+))?\))?$`)

func parseColumn(c Column) (column, error) {
	m := typePattern.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(c.Type)))
	if m == nil {
		return column{}, fmt.Errorf("column %s: type %q not understood", c.Name, c.Type)
	}
	a, _ := strconv.Atoi(m[2])
	b, _ := strconv.Atoi(m[3])
	col := column{name: strings.ToUpper(c.Name)}
	switch m[1] {
	case "NUMBER", "DECIMAL", "NUMERIC":
		col.kind, col.precision, col.scale = "fixed", 38, b
		if m[2] != "" {
			col.precision = a
		}
	case "INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "BYTEINT":
		col.kind, col.precision = "fixed", 38
	case "FLOAT", "DOUBLE", "REAL", "FLOAT8":
		col.kind = "real"
	case "TEXT", "VARCHAR", "STRING", "CHAR":
		col.kind = "text"
	case "BOOLEAN":
		col.kind = "boolean"
	case "DATE":
		col.kind = "date"
	case "TIME":
		col.kind, col.scale = "time", 9
	case "TIMESTAMP_NTZ", "TIMESTAMP", "DATETIME":
		col.kind, col.scale = "timestamp_ntz", 9
	case "TIMESTAMP_LTZ":
		col.kind, col.scale = "timestamp_ltz", 9
	case "TIMESTAMP_TZ":
		col.kind, col.scale = "timestamp_tz", 9
	case "VARIANT":
		col.kind = "variant"
	case "OBJECT":
		col.kind = "object"
	case "ARRAY":
		col.kind = "array"
	case "BINARY", "VARBINARY":
		col.kind = "binary"
	default:
		return column{}, fmt.Errorf("column %s: type %q not supported", c.Name, c.Type)
	}
	if strings.HasPrefix(col.kind, "timestamp") || col.kind == "time" {
		if m[2] != "" {
			col.scale = a
		}
	}
	return col, nil
}

func (c column) rowType() map[string]any {
	return map[string]any{
		"name": c.name, "type": c.kind, "precision": c.precision, "scale": c.scale,
		"nullable": true, "length": 16777216, "byteLength": 16777216, "database": "DB", "schema": "PUBLIC", "table": "T",
	}
}

var epochDate = civil.Date{Year: 1970, Month: 1, Day: 1}

// AddTable registers (or replaces) a table. Names are case-insensitive
// and may be qualified (DB.SCHEMA.T); the last part is what queries match.
func (s *Server) AddTable(t Table) error {
	cols := make([]column, len(t.Columns))
	for i, c := range t.Columns {
		var err error
		if cols[i], err = parseColumn(c); err != nil {
			return fmt.Errorf("table %s: %w", t.Name, err)
		}
	}
	for r, row := range t.Rows {
		if len(row) != len(cols) {
			return fmt.Errorf("table %s row %d: %d values for %d columns", t.Name, r, len(row), len(cols))
		}
		for i, v := range row {
			if _, err := textOf(cols[i], v); err != nil {
				return fmt.Errorf("table %s row %d column %s: %w", t.Name, r, cols[i].name, err)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables[tableKey(t.Name)] = &Table{Name: t.Name, Columns: t.Columns, Rows: t.Rows}
	return nil
}

func tableKey(name string) string {
	name = strings.ToUpper(name)
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		name = name[i+1:]
	}
	return strings.Trim(name, `"`)
}

type queryError struct {
	code, message, sqlState string
}

func syntaxError(near string) *queryError {
	return &queryError{CodeSyntaxError, fmt.Sprintf("SQL compilation error:\nsyntax error line 1 at position 0 unexpected '%s'.", near), "42000"}
}

var (
	space        = regexp.MustCompile(`\s+`)
	countWrap    = regexp.MustCompile(`(?i)^SELECT COUNT\(\*\) FROM \((.*)\)$`)
	hashWrap     = regexp.MustCompile(`(?i)^SELECT COUNT\(\*\), HASH_AGG\(\*\) FROM \((.*)\)$`)
	limitWrap    = regexp.MustCompile(`(?i)^SELECT \* FROM \((.*)\) LIMIT (\d+)$`)
	baseQuery    = regexp.MustCompile(`(?i)^SELECT (.+?) FROM ([A-Za-z_"][\w."]*)(?: WHERE ([A-Za-z_]\w*) = \?)?(?: ORDER BY ([A-Za-z_"][\w"]*)(?: (ASC|DESC))?)?(?: LIMIT (\d+))?$`)
	sessionQuery = regexp.MustCompile(`(?i)^(ALTER SESSION|USE) `)
)

// run answers sql; callers hold s.mu.
func (s *Server) run(sql string, binds map[string]Binding) ([]column, [][]any, *queryError) {
	sql = strings.TrimSpace(space.ReplaceAllString(sql, " "))
	sql = strings.TrimSpace(strings.TrimSuffix(sql, ";"))
	switch {
	case strings.EqualFold(sql, "SELECT 1"):
		return []column{{name: "1", kind: "fixed", precision: 1}}, [][]any{{int64(1)}}, nil
	case sessionQuery.MatchString(sql):
		return []column{{name: "status", kind: "text"}}, [][]any{{"Statement executed successfully."}}, nil
	}
	if m := hashWrap.FindStringSubmatch(sql); m != nil {
		cols, rows, err := s.base(m[1], binds)
		if err != nil {
			return nil, nil, err
		}
		var sum uint64
		for _, row := range rows {
			sum += rowHash(cols, row)
		}
		return []column{{name: "COUNT(*)", kind: "fixed", precision: 18}, {name: "HASH_AGG(*)", kind: "fixed", precision: 19}},
			[][]any{{int64(len(rows)), int64(sum)}}, nil
	}
	if m := countWrap.FindStringSubmatch(sql); m != nil {
		_, rows, err := s.base(m[1], binds)
		if err != nil {
			return nil, nil, err
		}
		return []column{{name: "COUNT(*)", kind: "fixed", precision: 18}}, [][]any{{int64(len(rows))}}, nil
	}
	if m := limitWrap.FindStringSubmatch(sql); m != nil {
		cols, rows, err := s.base(m[1], binds)
		if err != nil {
			return nil, nil, err
		}
		n, _ := strconv.Atoi(m[2])
		return cols, rows[:min(n, len(rows))], nil
	}
	return s.base(sql, binds)
}

func (s *Server) base(sql string, binds map[string]Binding) ([]column, [][]any, *queryError) {
	m := baseQuery.FindStringSubmatch(strings.TrimSpace(sql))
	if m == nil {
		first, _, _ := strings.Cut(sql, " ")
		return nil, nil, syntaxError(first)
	}
	t, ok := s.tables[tableKey(m[2])]
	if !ok {
		return nil, nil, &queryError{CodeObjectNotFound,
			fmt.Sprintf("SQL compilation error:\nObject '%s' does not exist or not authorized.", strings.ToUpper(m[2])), "42S02"}
	}
	all := make([]column, len(t.Columns))
	for i, c := range t.Columns {
		all[i], _ = parseColumn(c)
	}
	var pick []int
	if strings.TrimSpace(m[1]) == "*" {
		for i := range all {
			pick = append(pick, i)
		}
	} else {
		for _, name := range strings.Split(m[1], ",") {
			i := indexOf(all, name)
			if i < 0 {
				return nil, nil, &queryError{"000904", fmt.Sprintf("SQL compilation error: error line 1 at position 7\ninvalid identifier '%s'", strings.ToUpper(strings.TrimSpace(name))), "42000"}
			}
			pick = append(pick, i)
		}
	}
	filter := -1
	var want string
	if m[3] != "" {
		if filter = indexOf(all, m[3]); filter < 0 {
			return nil, nil, &queryError{"000904", fmt.Sprintf("SQL compilation error: error line 1 at position 0\ninvalid identifier '%s'", strings.ToUpper(m[3])), "42000"}
		}
		b, ok := binds["1"]
		if !ok {
			return nil, nil, &queryError{"002049", "SQL compilation error: error line 1 at position 0\nBind variable ? not set.", "42601"}
		}
		want = fmt.Sprint(b.Value)
	}
	order := -1
	if m[4] != "" {
		if order = indexOf(all, m[4]); order < 0 {
			return nil, nil, &queryError{"000904", fmt.Sprintf("SQL compilation error: error line 1 at position 0\ninvalid identifier '%s'", strings.ToUpper(m[4])), "42000"}
		}
	}
	limit := len(t.Rows)
	if m[6] != "" {
		limit, _ = strconv.Atoi(m[6])
	}
	cols := make([]column, len(pick))
	for i, p := range pick {
		cols[i] = all[p]
	}
	source := t.Rows
	if order >= 0 {
		source = sortedRows(all[order], order, t.Rows, strings.EqualFold(m[5], "DESC"))
	}
	var rows [][]any
	for _, row := range source {
		if len(rows) >= limit {
			break
		}
		if filter >= 0 {
			got, _ := textOf(all[filter], row[filter])
			if got == nil || *got != want {
				continue
			}
		}
		out := make([]any, len(pick))
		for i, p := range pick {
			out[i] = row[p]
		}
		rows = append(rows, out)
	}
	return cols, rows, nil
}

// sortedRows orders a copy of rows by column i, NULLs last as Snowflake
// sorts them ascending (first descending); ties keep their stored order.
func sortedRows(c column, i int, rows [][]any, desc bool) [][]any {
	out := slices.Clone(rows)
	slices.SortStableFunc(out, func(a, b []any) int {
		switch {
		case a[i] == nil && b[i] == nil:
			return 0
		case a[i] == nil:
			if desc {
				return -1
			}
			return 1
		case b[i] == nil:
			if desc {
				return 1
			}
			return -1
		}
		r := compareValues(c, a[i], b[i])
		if desc {
			return -r
		}
		return r
	})
	return out
}

// compareValues orders two non-null values of column c.
func compareValues(c column, a, b any) int {
	switch c.kind {
	case "fixed":
		x, _ := unscaled(a, c.scale)
		y, _ := unscaled(b, c.scale)
		if x == nil || y == nil {
			return 0
		}
		return x.Cmp(y)
	case "real":
		x, _ := a.(float64)
		y, _ := b.(float64)
		return cmp.Compare(x, y)
	case "date":
		x, _ := dateOf(a)
		y, _ := dateOf(b)
		return x.Compare(y)
	case "time", "timestamp_ntz", "timestamp_ltz", "timestamp_tz":
		x, _ := a.(time.Time)
		y, _ := b.(time.Time)
		return x.Compare(y)
	case "boolean":
		x, _ := a.(bool)
		y, _ := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	}
	x, _ := textOf(c, a)
	y, _ := textOf(c, b)
	if x == nil || y == nil {
		return 0
	}
	return strings.Compare(*x, *y)
}

func indexOf(cols []column, name string) int {
	name = strings.ToUpper(strings.Trim(strings.TrimSpace(name), `"`))
	for i, c := range cols {
		if c.name == name {
			return i
		}
	}
	return -1
}

func rowHash(cols []column, row []any) uint64 {
	h := fnv.New64a()
	for i, v := range row {
		t, _ := textOf(cols[i], v)
		if t == nil {
			_, _ = h.Write([]byte{0})
			continue
		}
		_, _ = h.Write([]byte{1})
		_, _ = h.Write([]byte(*t))
	}
	return h.Sum64()
}

// textOf renders v the way the WHERE comparison and hashing see it:
// DATE as YYYY-MM-DD, NUMBER as exact decimal text.
func textOf(c column, v any) (*string, error) {
	if v == nil {
		return nil, nil
	}
	var s string
	switch c.kind {
	case "fixed":
		u, err := unscaled(v, c.scale)
		if err != nil {
			return nil, err
		}
		s = decimalText(u, c.scale)
	case "date":
		d, err := dateOf(v)
		if err != nil {
			return nil, err
		}
		s = d.String()
	case "time", "timestamp_ntz", "timestamp_ltz", "timestamp_tz":
		t, ok := v.(time.Time)
		if !ok {
			return nil, fmt.Errorf("%T is not a time.Time", v)
		}
		s = t.Format(time.RFC3339Nano)
	case "real":
		f, ok := v.(float64)
		if !ok {
			return nil, fmt.Errorf("%T is not a float64", v)
		}
		s = strconv.FormatFloat(f, 'g', -1, 64)
	case "boolean":
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%T is not a bool", v)
		}
		s = strconv.FormatBool(b)
	case "binary":
		b, ok := v.([]byte)
		if !ok {
			return nil, fmt.Errorf("%T is not []byte", v)
		}
		s = string(b)
	case "variant", "object", "array":
		str, ok := v.(string)
		if !ok || !json.Valid([]byte(str)) {
			return nil, fmt.Errorf("%v is not JSON text", v)
		}
		s = str
	default:
		str, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%T is not a string", v)
		}
		s = str
	}
	return &s, nil
}

func dateOf(v any) (civil.Date, error) {
	switch d := v.(type) {
	case civil.Date:
		return d, nil
	case time.Time:
		return civil.DateOf(d), nil
	}
	return civil.Date{}, fmt.Errorf("%T is not a date", v)
}

// unscaled returns v * 10^scale as an integer: what Snowflake stores.
func unscaled(v any, scale int) (*big.Int, error) {
	pow := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)
	switch n := v.(type) {
	case int:
		return new(big.Int).Mul(big.NewInt(int64(n)), pow), nil
	case int64:
		return new(big.Int).Mul(big.NewInt(n), pow), nil
	case *big.Int:
		return new(big.Int).Mul(n, pow), nil
	case string:
		neg := strings.HasPrefix(n, "-")
		digits := strings.TrimPrefix(n, "-")
		whole, frac, _ := strings.Cut(digits, ".")
		if len(frac) > scale {
			return nil, fmt.Errorf("%q has more than %d decimals", n, scale)
		}
		frac += strings.Repeat("0", scale-len(frac))
		u, ok := new(big.Int).SetString(whole+frac, 10)
		if !ok {
			return nil, fmt.Errorf("%q is not a decimal", n)
		}
		if neg {
			u.Neg(u)
		}
		return u, nil
	}
	return nil, fmt.Errorf("%T is not a number", v)
}

// decimalText formats an unscaled integer with scale decimals.
func decimalText(u *big.Int, scale int) string {
	s := new(big.Int).Abs(u).String()
	if scale > 0 {
		if len(s) <= scale {
			s = strings.Repeat("0", scale-len(s)+1) + s
		}
		s = s[:len(s)-scale] + "." + s[len(s)-scale:]
	}
	if u.Sign() < 0 {
		s = "-" + s
	}
	return s
}
