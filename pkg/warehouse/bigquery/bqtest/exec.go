package bqtest

import (
	"encoding/base64"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
)

// Exec changes tables the way a test's fixtures need, with statements in
// BigQuery's dialect; like the query matcher it knows a few shapes only:
//
//	CREATE TABLE t (col TYPE, ...)      -- INT64, FLOAT64, NUMERIC(p,s), BIGNUMERIC(p,s),
//	                                    -- BOOL, STRING, BYTES, DATE, DATETIME, TIMESTAMP, TIME,
//	                                    -- JSON, GEOGRAPHY, ARRAY<T>, STRUCT<a T, ...>
//	INSERT INTO t VALUES (expr, ...)    -- NULL, numbers, true/false, 'strings', CAST(lit AS T),
//	                                    -- FROM_BASE64('...'), [1, 2], ARRAY<INT64>[], JSON '...',
//	                                    -- PARSE_JSON('...'), STRUCT(1 AS a, 'x' AS b)
//	INSERT INTO t SELECT expr, ... FROM generate_series(lo, hi) AS t(i)
//	                                    -- expr also: i, i * 0.5, 'x-' || CAST(i AS STRING)
//	UPDATE t SET col = expr WHERE col = literal
//	DELETE FROM t WHERE col = literal
//
// Unqualified table names live in dataset.
func (s *Server) Exec(dataset, sql string) error {
	sql = strings.TrimRight(strings.TrimSpace(sql), ";")
	var err error
	switch {
	case createStmt.MatchString(sql):
		err = s.execCreate(dataset, createStmt.FindStringSubmatch(sql))
	case insertValuesStmt.MatchString(sql):
		err = s.execInsertValues(dataset, insertValuesStmt.FindStringSubmatch(sql))
	case insertSeriesStmt.MatchString(sql):
		err = s.execInsertSeries(dataset, insertSeriesStmt.FindStringSubmatch(sql))
	case updateStmt.MatchString(sql):
		err = s.execUpdate(dataset, updateStmt.FindStringSubmatch(sql))
	case deleteStmt.MatchString(sql):
		m := deleteStmt.FindStringSubmatch(sql)
		err = s.execUpdate(dataset, []string{m[0], m[1], "", "", m[2], m[3]})
	default:
		err = fmt.Errorf("bqtest: Exec does not understand %q", sql)
	}
	if err != nil {
		return fmt.Errorf("exec %q: %w", sql, err)
	}
	return nil
}

var (
	createStmt       = regexp.MustCompile(`(?is)^CREATE\s+TABLE\s+` + "`?([\\w.-]+)`?" + `\s*\((.*)\)$`)
	insertValuesStmt = regexp.MustCompile(`(?is)^INSERT\s+INTO\s+` + "`?([\\w.-]+)`?" + `\s+VALUES\s*\((.*)\)$`)
	insertSeriesStmt = regexp.MustCompile(`(?is)^INSERT\s+INTO\s+` + "`?([\\w.-]+)`?" + `\s+SELECT\s+(.*)\s+FROM\s+generate_series\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s+AS\s+\w+\((\w+)\)$`)
	updateStmt       = regexp.MustCompile(`(?is)^UPDATE\s+` + "`?([\\w.-]+)`?" + `\s+SET\s+(\w+)\s*=\s*(.*?)\s+WHERE\s+(\w+)\s*=\s*(.*)$`)
	deleteStmt       = regexp.MustCompile(`(?is)^DELETE\s+FROM\s+` + "`?([\\w.-]+)`?" + `\s+WHERE\s+(\w+)\s*=\s*(.*)$`)
	castExpr         = regexp.MustCompile(`(?is)^CAST\((.*)\s+AS\s+[\w<>(), ]+\)$`)
	base64Expr       = regexp.MustCompile(`(?is)^FROM_BASE64\((.*)\)$`)
	structExpr       = regexp.MustCompile(`(?is)^STRUCT\((.*)\)$`)
	jsonExpr         = regexp.MustCompile(`(?is)^(?:JSON\s+|PARSE_JSON\()('.*'|".*")\)?$`)
	mulExpr          = regexp.MustCompile(`(?is)^(\w+)\s*\*\s*([\d.]+)$`)
	asItem           = regexp.MustCompile(`(?is)^(.*?)\s+AS\s+(\w+)$`)
)

func tableKey(dataset, name string) string {
	if strings.Contains(name, ".") {
		parts := strings.Split(name, ".")
		return parts[len(parts)-2] + "." + parts[len(parts)-1]
	}
	return dataset + "." + name
}

func (s *Server) execCreate(dataset string, m []string) error {
	var schema bigquery.Schema
	for _, col := range splitTop(m[2], ',') {
		name, typ, ok := strings.Cut(strings.TrimSpace(col), " ")
		if !ok {
			return fmt.Errorf("column %q has no type", col)
		}
		f, err := parseType(strings.TrimSpace(typ))
		if err != nil {
			return err
		}
		f.Name = name
		schema = append(schema, f)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables[tableKey(dataset, m[1])] = &table{schema: schema}
	return nil
}

func parseType(t string) (*bigquery.FieldSchema, error) {
	up := strings.ToUpper(t)
	switch {
	case strings.HasPrefix(up, "ARRAY<") && strings.HasSuffix(up, ">"):
		f, err := parseType(t[6 : len(t)-1])
		if err != nil {
			return nil, err
		}
		f.Repeated = true
		return f, nil
	case strings.HasPrefix(up, "STRUCT<") && strings.HasSuffix(up, ">"):
		f := &bigquery.FieldSchema{Type: bigquery.RecordFieldType}
		for _, sub := range splitTop(t[7:len(t)-1], ',') {
			name, typ, _ := strings.Cut(strings.TrimSpace(sub), " ")
			sf, err := parseType(strings.TrimSpace(typ))
			if err != nil {
				return nil, err
			}
			sf.Name = name
			f.Schema = append(f.Schema, sf)
		}
		return f, nil
	}
	base, args, _ := strings.Cut(up, "(")
	f := &bigquery.FieldSchema{}
	switch base {
	case "INT64", "INTEGER", "INT", "BIGINT", "SMALLINT", "TINYINT", "BYTEINT":
		f.Type = bigquery.IntegerFieldType
	case "FLOAT64", "FLOAT":
		f.Type = bigquery.FloatFieldType
	case "NUMERIC", "DECIMAL":
		f.Type = bigquery.NumericFieldType
	case "BIGNUMERIC", "BIGDECIMAL":
		f.Type = bigquery.BigNumericFieldType
	case "BOOL", "BOOLEAN":
		f.Type = bigquery.BooleanFieldType
	case "STRING":
		f.Type = bigquery.StringFieldType
	case "BYTES":
		f.Type = bigquery.BytesFieldType
	case "DATE":
		f.Type = bigquery.DateFieldType
	case "DATETIME":
		f.Type = bigquery.DateTimeFieldType
	case "TIMESTAMP":
		f.Type = bigquery.TimestampFieldType
	case "TIME":
		f.Type = bigquery.TimeFieldType
	case "JSON":
		f.Type = bigquery.JSONFieldType
	case "GEOGRAPHY":
		f.Type = bigquery.GeographyFieldType
	default:
		return nil, fmt.Errorf("unknown type %q", t)
	}
	if args != "" {
		p, sc, _ := strings.Cut(strings.TrimSuffix(args, ")"), ",")
		f.Precision, _ = strconv.ParseInt(strings.TrimSpace(p), 10, 64)
		f.Scale, _ = strconv.ParseInt(strings.TrimSpace(sc), 10, 64)
	}
	return f, nil
}

func (s *Server) table(dataset, name string) (*table, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tables[tableKey(dataset, name)]
	if !ok {
		return nil, fmt.Errorf("no table %s", tableKey(dataset, name))
	}
	return t, nil
}

func (s *Server) execInsertValues(dataset string, m []string) error {
	t, err := s.table(dataset, m[1])
	if err != nil {
		return err
	}
	exprs := splitTop(m[2], ',')
	if len(exprs) != len(t.schema) {
		return fmt.Errorf("%d values for %d columns", len(exprs), len(t.schema))
	}
	row := make([]bigquery.Value, len(exprs))
	for i, e := range exprs {
		if row[i], err = eval(e, t.schema[i], t.schema[i].Repeated, nil); err != nil {
			return fmt.Errorf("column %s: %w", t.schema[i].Name, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.rows = append(t.rows, row)
	return nil
}

func (s *Server) execInsertSeries(dataset string, m []string) error {
	t, err := s.table(dataset, m[1])
	if err != nil {
		return err
	}
	exprs := splitTop(m[2], ',')
	if len(exprs) != len(t.schema) {
		return fmt.Errorf("%d values for %d columns", len(exprs), len(t.schema))
	}
	lo, _ := strconv.ParseInt(m[3], 10, 64)
	hi, _ := strconv.ParseInt(m[4], 10, 64)
	v := &series{name: m[5]}
	var rows [][]bigquery.Value
	for v.i = lo; v.i <= hi; v.i++ {
		row := make([]bigquery.Value, len(exprs))
		for c, e := range exprs {
			if row[c], err = eval(e, t.schema[c], t.schema[c].Repeated, v); err != nil {
				return fmt.Errorf("column %s: %w", t.schema[c].Name, err)
			}
		}
		rows = append(rows, row)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.rows = append(t.rows, rows...)
	return nil
}

func (s *Server) execUpdate(dataset string, m []string) error {
	t, err := s.table(dataset, m[1])
	if err != nil {
		return err
	}
	key := t.column(m[4])
	if key < 0 {
		return fmt.Errorf("no column %s", m[4])
	}
	want, err := eval(m[5], t.schema[key], false, nil)
	if err != nil {
		return err
	}
	set := -1
	var val bigquery.Value
	if m[2] != "" {
		if set = t.column(m[2]); set < 0 {
			return fmt.Errorf("no column %s", m[2])
		}
		if val, err = eval(m[3], t.schema[set], t.schema[set].Repeated, nil); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := t.rows[:0:0]
	for _, row := range t.rows {
		if fmt.Sprint(row[key]) != fmt.Sprint(want) {
			kept = append(kept, row)
			continue
		}
		if set >= 0 {
			row = append([]bigquery.Value(nil), row...)
			row[set] = val
			kept = append(kept, row)
		}
	}
	t.rows = kept
	return nil
}

// series is the generate_series variable while rows are generated.
type series struct {
	name string
	i    int64
}

// eval computes expr as a value of field f.
func eval(expr string, f *bigquery.FieldSchema, repeated bool, v *series) (bigquery.Value, error) {
	expr = strings.TrimSpace(expr)
	if strings.EqualFold(expr, "NULL") {
		return nil, nil
	}
	if repeated {
		if strings.HasPrefix(strings.ToUpper(expr), "ARRAY<") {
			expr = expr[strings.Index(expr, "["):]
		}
		if !strings.HasPrefix(expr, "[") || !strings.HasSuffix(expr, "]") {
			return nil, fmt.Errorf("array literal %q", expr)
		}
		out := []bigquery.Value{}
		for _, e := range splitTop(expr[1:len(expr)-1], ',') {
			if strings.TrimSpace(e) == "" {
				continue
			}
			ev, err := eval(e, f, false, v)
			if err != nil {
				return nil, err
			}
			out = append(out, ev)
		}
		return out, nil
	}
	if m := structExpr.FindStringSubmatch(expr); m != nil && f.Type == bigquery.RecordFieldType {
		items := splitTop(m[1], ',')
		if len(items) != len(f.Schema) {
			return nil, fmt.Errorf("struct literal %q for %d fields", expr, len(f.Schema))
		}
		out := make([]bigquery.Value, len(items))
		for i, it := range items {
			if am := asItem.FindStringSubmatch(strings.TrimSpace(it)); am != nil {
				it = am[1]
			}
			ev, err := eval(it, f.Schema[i], f.Schema[i].Repeated, v)
			if err != nil {
				return nil, err
			}
			out[i] = ev
		}
		return out, nil
	}
	if m := base64Expr.FindStringSubmatch(expr); m != nil {
		text, err := stringLiteral(m[1])
		if err != nil {
			return nil, err
		}
		return base64.StdEncoding.DecodeString(text)
	}
	text, err := evalText(expr, v)
	if err != nil {
		return nil, err
	}
	return fromText(text, f)
}

// evalText computes a scalar expression as text.
func evalText(expr string, v *series) (string, error) {
	expr = strings.TrimSpace(expr)
	if m := castExpr.FindStringSubmatch(expr); m != nil {
		return evalText(m[1], v)
	}
	if parts := splitTopString(expr, "||"); len(parts) > 1 {
		var sb strings.Builder
		for _, p := range parts {
			t, err := evalText(p, v)
			if err != nil {
				return "", err
			}
			sb.WriteString(t)
		}
		return sb.String(), nil
	}
	if v != nil {
		if expr == v.name {
			return strconv.FormatInt(v.i, 10), nil
		}
		if m := mulExpr.FindStringSubmatch(expr); m != nil && m[1] == v.name {
			k, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				return "", err
			}
			return strconv.FormatFloat(float64(v.i)*k, 'g', -1, 64), nil
		}
	}
	if strings.HasPrefix(expr, "'") || strings.HasPrefix(expr, `"`) {
		return stringLiteral(expr)
	}
	if m := jsonExpr.FindStringSubmatch(expr); m != nil {
		return stringLiteral(m[1])
	}
	return expr, nil
}

func fromText(text string, f *bigquery.FieldSchema) (bigquery.Value, error) {
	switch f.Type {
	case bigquery.IntegerFieldType:
		return strconv.ParseInt(text, 10, 64)
	case bigquery.FloatFieldType:
		return strconv.ParseFloat(text, 64)
	case bigquery.NumericFieldType, bigquery.BigNumericFieldType:
		r, ok := new(big.Rat).SetString(text)
		if !ok {
			return nil, fmt.Errorf("bad numeric %q", text)
		}
		return r, nil
	case bigquery.BooleanFieldType:
		return strconv.ParseBool(strings.ToLower(text))
	case bigquery.BytesFieldType:
		return []byte(text), nil
	case bigquery.DateFieldType:
		return civil.ParseDate(text)
	case bigquery.DateTimeFieldType:
		return civil.ParseDateTime(strings.Replace(text, " ", "T", 1))
	case bigquery.TimeFieldType:
		return civil.ParseTime(text)
	case bigquery.TimestampFieldType:
		for _, layout := range []string{"2006-01-02 15:04:05.999999999Z07:00", "2006-01-02T15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999 MST", "2006-01-02 15:04:05.999999999"} {
			if ts, err := time.Parse(layout, text); err == nil {
				return ts.UTC(), nil
			}
		}
		return nil, fmt.Errorf("bad timestamp %q", text)
	}
	return text, nil
}

// stringLiteral decodes a BigQuery string literal: '...' or "..." with
// backslash escapes (\n \t \\ \' \") and, leniently, doubled quotes.
func stringLiteral(lit string) (string, error) {
	lit = strings.TrimSpace(lit)
	if len(lit) < 2 || (lit[0] != '\'' && lit[0] != '"') || lit[len(lit)-1] != lit[0] {
		return "", fmt.Errorf("bad string literal %s", lit)
	}
	q := lit[0]
	body := lit[1 : len(lit)-1]
	var sb strings.Builder
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '\\' && i+1 < len(body):
			i++
			switch body[i] {
			case 'n':
				sb.WriteByte('\n')
			case 't':
				sb.WriteByte('\t')
			case 'r':
				sb.WriteByte('\r')
			default:
				sb.WriteByte(body[i])
			}
		case c == q && i+1 < len(body) && body[i+1] == q:
			sb.WriteByte(q)
			i++
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String(), nil
}

// splitTop splits s at sep outside quotes, parentheses, brackets and <>.
func splitTop(s string, sep byte) []string {
	var out []string
	depth, start := 0, 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '(' || c == '[' || c == '<':
			depth++
		case c == ')' || c == ']' || c == '>':
			depth--
		case c == sep && depth == 0:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// splitTopString splits s at the operator sep outside quotes and parentheses.
func splitTopString(s, sep string) []string {
	var out []string
	depth, start := 0, 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
		case depth == 0 && strings.HasPrefix(s[i:], sep):
			out = append(out, s[start:i])
			start = i + len(sep)
			i += len(sep) - 1
		}
	}
	return append(out, s[start:])
}
