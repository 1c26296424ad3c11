package bqtest

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
)

// The query matcher understands exactly the shapes Sluice's BigQuery source
// sends, and nothing more; it is a protocol fake, not a SQL engine:
//
//	SELECT <* | col [AS alias], ...> FROM `[project.]dataset.table`
//	    [WHERE col = @date | WHERE DATE(col) = @date] [ORDER BY col [ASC|DESC]] [LIMIT n]
//	SELECT COUNT(*) FROM (<inner>)
//	SELECT COUNT(*), BIT_XOR(FARM_FINGERPRINT(TO_JSON_STRING(q))) FROM (<inner>) q
//	SELECT * FROM (<inner>) LIMIT n
//
// An unqualified table is looked up in the request's default dataset.
// Keywords are case-insensitive and whitespace is free. Anything else is an
// invalidQuery error, as a syntax error would be in BigQuery. A name that is
// not a column is "Unrecognized name", a missing table is notFound. The
// fingerprint is the XOR of FNV-64a hashes of each row's JSON: order
// independent like BigQuery's, but not the same numbers.
var (
	fingerprintQuery = regexp.MustCompile(`(?is)^SELECT\s+COUNT\(\*\)\s*,\s*BIT_XOR\(\s*FARM_FINGERPRINT\(\s*TO_JSON_STRING\(\s*(\w+)\s*\)\s*\)\s*\)\s+FROM\s*\((.*)\)\s*(?:AS\s+)?(\w+)$`)
	countQuery       = regexp.MustCompile(`(?is)^SELECT\s+COUNT\(\*\)\s+FROM\s*\((.*)\)\s*(?:(?:AS\s+)?\w+)?$`)
	limitQuery       = regexp.MustCompile(`(?is)^SELECT\s+\*\s+FROM\s*\((.*)\)\s*(?:(?:AS\s+)?\w+\s+)?LIMIT\s+(\d+)$`)
	baseQuery        = regexp.MustCompile("(?is)^SELECT\\s+(.+?)\\s+FROM\\s+`?([\\w.-]+)`?(?:\\s+(?:AS\\s+)?\\w+)??(?:\\s+WHERE\\s+(?:(\\w+)|DATE\\((\\w+)\\))\\s*=\\s*@(\\w+))?(?:\\s+ORDER\\s+BY\\s+(\\w+)(?:\\s+(ASC|DESC))?)?(?:\\s+LIMIT\\s+(\\d+))?$")
	selectItem       = regexp.MustCompile(`(?is)^(\w+)(?:\s+AS\s+(\w+))?$`)
)

// result is what a query produced: a schema and rows in it.
type result struct {
	schema bigquery.Schema
	rows   [][]bigquery.Value
	bytes  int64 // bytes "scanned" (see scannedBytes)
}

// queryError is a failure in BigQuery's terms.
type queryError struct {
	code    int
	reason  string
	message string
}

func (e *queryError) Error() string { return e.message }

func invalidQuery(format string, args ...any) *queryError {
	return &queryError{code: 400, reason: "invalidQuery", message: fmt.Sprintf(format, args...)}
}

// params are the named query parameters, by name.
type params map[string]string

func (s *Server) run(project, dataset, sql string, p params) (*result, error) {
	sql = strings.TrimSpace(sql)
	sql = strings.TrimRight(sql, "; \t\n")
	if m := fingerprintQuery.FindStringSubmatch(sql); m != nil {
		if !strings.EqualFold(m[1], m[3]) {
			return nil, invalidQuery("Unrecognized name: %s", m[1])
		}
		inner, err := s.run(project, dataset, m[2], p)
		if err != nil {
			return nil, err
		}
		var xor uint64
		for _, row := range inner.rows {
			h := fnv.New64a()
			b, _ := json.Marshal(jsonRow(inner.schema, row))
			h.Write(b)
			xor ^= h.Sum64()
		}
		var fp bigquery.Value
		if len(inner.rows) > 0 {
			fp = int64(xor)
		}
		return &result{
			schema: bigquery.Schema{{Name: "f0_", Type: bigquery.IntegerFieldType}, {Name: "f1_", Type: bigquery.IntegerFieldType}},
			rows:   [][]bigquery.Value{{int64(len(inner.rows)), fp}},
			bytes:  inner.bytes,
		}, nil
	}
	if m := countQuery.FindStringSubmatch(sql); m != nil {
		inner, err := s.run(project, dataset, m[1], p)
		if err != nil {
			return nil, err
		}
		return &result{
			schema: bigquery.Schema{{Name: "f0_", Type: bigquery.IntegerFieldType}},
			rows:   [][]bigquery.Value{{int64(len(inner.rows))}},
			bytes:  inner.bytes,
		}, nil
	}
	if m := limitQuery.FindStringSubmatch(sql); m != nil {
		inner, err := s.run(project, dataset, m[1], p)
		if err != nil {
			return nil, err
		}
		n, _ := strconv.Atoi(m[2])
		if n < len(inner.rows) {
			inner.rows = inner.rows[:n]
		}
		return inner, nil
	}
	m := baseQuery.FindStringSubmatch(sql)
	if m == nil {
		return nil, invalidQuery("Syntax error: the bqtest fake does not understand %q", sql)
	}
	t, err := s.lookup(project, dataset, m[2])
	if err != nil {
		return nil, err
	}
	var cols []int
	var schema bigquery.Schema
	if strings.TrimSpace(m[1]) == "*" {
		for i, f := range t.schema {
			cols = append(cols, i)
			schema = append(schema, f)
		}
	} else {
		for _, item := range strings.Split(m[1], ",") {
			im := selectItem.FindStringSubmatch(strings.TrimSpace(item))
			if im == nil {
				return nil, invalidQuery("Syntax error: the bqtest fake selects only plain columns, not %q", strings.TrimSpace(item))
			}
			i := t.column(im[1])
			if i < 0 {
				return nil, invalidQuery("Unrecognized name: %s", im[1])
			}
			f := *t.schema[i]
			if im[2] != "" {
				f.Name = im[2]
			}
			cols = append(cols, i)
			schema = append(schema, &f)
		}
	}
	filterCol := -1
	var day civil.Date
	if name := m[3] + m[4]; name != "" {
		filterCol = t.column(name)
		if filterCol < 0 {
			return nil, invalidQuery("Unrecognized name: %s", name)
		}
		v, ok := p[strings.ToLower(m[5])]
		if !ok {
			return nil, invalidQuery("Query parameter '%s' not found", m[5])
		}
		if day, err = civil.ParseDate(v); err != nil {
			return nil, invalidQuery("Invalid DATE parameter %q", v)
		}
		if m[4] == "" && t.schema[filterCol].Type != bigquery.DateFieldType {
			return nil, invalidQuery("No matching signature for operator = for argument types: %s, DATE", t.schema[filterCol].Type)
		}
	}
	limit := -1
	if m[8] != "" {
		limit, _ = strconv.Atoi(m[8])
	}
	sortCol := -1
	if m[6] != "" {
		if sortCol = t.column(m[6]); sortCol < 0 {
			return nil, invalidQuery("Unrecognized name: %s", m[6])
		}
	}
	scanned := append([]int(nil), cols...)
	if filterCol >= 0 {
		scanned = append(scanned, filterCol)
	}
	res := &result{schema: schema, bytes: t.scannedBytes(scanned)}
	rows := t.rows
	if sortCol >= 0 {
		rows = sortedRows(rows, sortCol, strings.EqualFold(m[7], "DESC"))
	}
	for _, row := range rows {
		if limit >= 0 && len(res.rows) >= limit {
			break
		}
		if filterCol >= 0 && !dayMatches(row[filterCol], day) {
			continue
		}
		out := make([]bigquery.Value, len(cols))
		for j, c := range cols {
			out[j] = row[c]
		}
		res.rows = append(res.rows, out)
	}
	return res, nil
}

// sortedRows orders rows by one column of INT64, FLOAT64, STRING, DATE or
// TIMESTAMP values, nulls first.
func sortedRows(rows [][]bigquery.Value, col int, desc bool) [][]bigquery.Value {
	out := append([][]bigquery.Value(nil), rows...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i][col], out[j][col]
		if desc {
			a, b = b, a
		}
		if a == nil || b == nil {
			return a == nil && b != nil
		}
		switch a := a.(type) {
		case int64:
			return a < b.(int64)
		case float64:
			return a < b.(float64)
		case string:
			return a < b.(string)
		case civil.Date:
			return a.Before(b.(civil.Date))
		case time.Time:
			return a.Before(b.(time.Time))
		}
		return false
	})
	return out
}

func dayMatches(v bigquery.Value, day civil.Date) bool {
	switch v := v.(type) {
	case civil.Date:
		return v == day
	case time.Time:
		return civil.DateOf(v.UTC()) == day
	case civil.DateTime:
		return v.Date == day
	}
	return false
}

// scannedBytes follows BigQuery's data size rules per column over the whole
// table (the fake has no partitions): 8 bytes for INT64, FLOAT64, DATE,
// TIMESTAMP, DATETIME, TIME; 1 for BOOL; 16 for NUMERIC; 32 for BIGNUMERIC;
// 2 + length for STRING, BYTES, JSON, GEOGRAPHY; the sum of the parts for
// RECORD and REPEATED; 0 for NULL.
func (t *table) scannedBytes(cols []int) int64 {
	seen := map[int]bool{}
	var n int64
	for _, c := range cols {
		if seen[c] {
			continue
		}
		seen[c] = true
		for _, row := range t.rows {
			n += valueBytes(t.schema[c], row[c], t.schema[c].Repeated)
		}
	}
	return n
}

func valueBytes(f *bigquery.FieldSchema, v bigquery.Value, repeated bool) int64 {
	if v == nil {
		return 0
	}
	if repeated {
		var n int64
		for _, e := range v.([]bigquery.Value) {
			n += valueBytes(f, e, false)
		}
		return n
	}
	switch f.Type {
	case bigquery.BooleanFieldType:
		return 1
	case bigquery.NumericFieldType:
		return 16
	case bigquery.BigNumericFieldType:
		return 32
	case bigquery.StringFieldType, bigquery.JSONFieldType, bigquery.GeographyFieldType:
		return 2 + int64(len(v.(string)))
	case bigquery.BytesFieldType:
		return 2 + int64(len(v.([]byte)))
	case bigquery.RecordFieldType:
		var n int64
		for i, e := range v.([]bigquery.Value) {
			n += valueBytes(f.Schema[i], e, f.Schema[i].Repeated)
		}
		return n
	}
	return 8
}

// jsonRow renders a row as TO_JSON_STRING would, close enough for hashing.
func jsonRow(schema bigquery.Schema, row []bigquery.Value) map[string]any {
	out := make(map[string]any, len(schema))
	for i, f := range schema {
		out[f.Name] = fmt.Sprint(row[i])
	}
	return out
}
