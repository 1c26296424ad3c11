package snowflake

import (
	"database/sql"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2" // the harness's SQL engine

	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
	"github.com/sluicehq/sluice/pkg/warehouse/warehousetest"
)

// The conformance suite speaks SQL DDL and DML, but sftest is a protocol
// fake without a SQL engine. The harness runs the suite's statements in an
// in-process DuckDB (with Snowflake type names rewritten to DuckDB's) and
// copies each table a statement touched into sftest under the Snowflake
// types the suite declared, so the source reads through gosnowflake,
// login, Arrow chunks and all, exactly what a Snowflake table holds.

// snowflakeTypes are the suite's portable types in Snowflake DDL.
var snowflakeTypes = map[warehousetest.Type]string{
	warehousetest.Int8: "NUMBER(38,0)", warehousetest.Int16: "NUMBER(38,0)", warehousetest.Int32: "NUMBER(38,0)",
	warehousetest.Int64: "NUMBER(38,0)", warehousetest.Decimal38x10: "NUMBER(38,10)", warehousetest.Decimal10x2: "NUMBER(10,2)",
	warehousetest.Float32: "FLOAT", warehousetest.Float64: "FLOAT", warehousetest.Bool: "BOOLEAN",
	warehousetest.String: "TEXT", warehousetest.Bytes: "BINARY", warehousetest.Date: "DATE",
	warehousetest.Timestamp: "TIMESTAMP_NTZ", warehousetest.TimestampTZ: "TIMESTAMP_TZ", warehousetest.JSON: "VARIANT",
	warehousetest.IntArray: "ARRAY", warehousetest.Struct: "OBJECT",
}

// duckTypes rewrites Snowflake type names (upper case, whole words; the
// suite's identifiers are lower case) into DuckDB's for the engine.
var duckTypes = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\bNUMBER\(`), "DECIMAL("},
	{regexp.MustCompile(`\bFLOAT\b`), "DOUBLE"},
	{regexp.MustCompile(`\bTEXT\b`), "VARCHAR"},
	{regexp.MustCompile(`\bBINARY\b`), "BLOB"},
	{regexp.MustCompile(`\bTIMESTAMP_NTZ\b`), "TIMESTAMP"},
	{regexp.MustCompile(`\bTIMESTAMP_TZ\b`), "TIMESTAMPTZ"},
	{regexp.MustCompile(`\b(VARIANT|ARRAY|OBJECT)\b`), "JSON"},
}

var (
	createTable = regexp.MustCompile(`^CREATE TABLE (\w+) \((.*)\)$`)
	columnDecl  = regexp.MustCompile(`(\w+) ([A-Z_]+(?:\(\d+(?:,\s*\d+)?\))?)`)
	touched     = regexp.MustCompile(`^(?:INSERT INTO|UPDATE|DELETE FROM) (\w+)`)
)

// mirror is the DuckDB engine behind one sftest server.
type mirror struct {
	db     *sql.DB
	srv    *sftest.Server
	tables map[string][]sftest.Column // declared Snowflake columns by table
}

func (m *mirror) exec(tb testing.TB, stmt string) {
	tb.Helper()
	var table string
	if c := createTable.FindStringSubmatch(stmt); c != nil {
		table = c[1]
		var cols []sftest.Column
		for _, d := range columnDecl.FindAllStringSubmatch(c[2], -1) {
			cols = append(cols, sftest.Column{Name: d[1], Type: d[2]})
		}
		m.tables[table] = cols
	} else if c := touched.FindStringSubmatch(stmt); c != nil {
		table = c[1]
	} else {
		tb.Fatalf("harness: statement touches no table it knows: %s", stmt)
	}
	duck := stmt
	for _, r := range duckTypes {
		duck = r.re.ReplaceAllString(duck, r.with)
	}
	if _, err := m.db.Exec(duck); err != nil {
		tb.Fatalf("duckdb: %s: %v", duck, err)
	}
	m.copy(tb, table)
}

// copy replaces sftest's table with DuckDB's rows, each value in the Go
// form sftest takes for its Snowflake type.
func (m *mirror) copy(tb testing.TB, table string) {
	tb.Helper()
	cols := m.tables[table]
	exprs := make([]string, len(cols))
	for i, c := range cols {
		switch {
		case strings.HasPrefix(c.Type, "NUMBER"):
			exprs[i] = "CAST(" + c.Name + " AS VARCHAR)" // exact decimal text
		case c.Type == "BINARY":
			exprs[i] = "hex(" + c.Name + ")"
		case c.Type == "VARIANT" || c.Type == "ARRAY" || c.Type == "OBJECT":
			exprs[i] = "CAST(" + c.Name + " AS VARCHAR)"
		default:
			exprs[i] = c.Name
		}
	}
	rows, err := m.db.Query("SELECT " + strings.Join(exprs, ", ") + " FROM " + table)
	if err != nil {
		tb.Fatalf("read %s from duckdb: %v", table, err)
	}
	defer rows.Close()
	var data [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			tb.Fatalf("scan %s: %v", table, err)
		}
		for i, c := range cols {
			if vals[i] == nil {
				continue
			}
			switch c.Type {
			case "BINARY":
				b, err := hex.DecodeString(vals[i].(string))
				if err != nil {
					tb.Fatalf("%s.%s: %v", table, c.Name, err)
				}
				vals[i] = b
			case "TIMESTAMP_NTZ", "TIMESTAMP_TZ":
				vals[i] = vals[i].(time.Time).UTC()
			}
		}
		data = append(data, vals)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("read %s: %v", table, err)
	}
	if err := m.srv.AddTable(sftest.Table{Name: "DB.PUBLIC." + table, Columns: cols, Rows: data}); err != nil {
		tb.Fatalf("copy %s into sftest: %v", table, err)
	}
}

func conformanceHarness() warehousetest.Harness {
	return warehousetest.Harness{
		Open: func(tb testing.TB) (warehouse.Source, func(testing.TB, string)) {
			srv, cfg := newServer(tb)
			srv.SetChunkRows(700) // the large day spans many chunks
			db, err := sql.Open("duckdb", filepath.Join(tb.TempDir(), "engine.duckdb"))
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { db.Close() })
			m := &mirror{db: db, srv: srv, tables: map[string][]sftest.Column{}}
			return open(tb, cfg), m.exec
		},
		TypeName:    func(t warehousetest.Type) string { return snowflakeTypes[t] },
		Placeholder: "?",
		Literal: func(t warehousetest.Type, v any) string {
			switch v := v.(type) {
			case []int64:
				return "CAST(" + warehousetest.Quote(strings.ReplaceAll(fmt.Sprint(v), " ", ",")) + " AS ARRAY)"
			case warehousetest.StructValue:
				return fmt.Sprintf("CAST(%s AS OBJECT)", warehousetest.Quote(fmt.Sprintf(`{"a": %d, "b": %q}`, v.A, v.B)))
			case []byte:
				return "from_hex(" + warehousetest.Quote(hex.EncodeToString(v)) + ")"
			}
			return ""
		},
		SpecialFloats: true,
	}
}

func TestConformance(t *testing.T) {
	warehousetest.Run(t, conformanceHarness())
}

func TestOrderBy(t *testing.T) {
	srv, cfg := newServer(t)
	addTable(t, srv, sftest.Table{
		Name:    "T",
		Columns: []sftest.Column{{Name: "DAY", Type: "DATE"}, {Name: "ID", Type: "NUMBER(38,0)"}},
		Rows:    [][]any{{day, 2}, {day, nil}, {day, 10}, {day, 1}, {day.AddDays(1), 0}},
	})
	src := open(t, cfg)
	tests := []struct {
		order string
		want  []string // "" is NULL
	}{
		// Snowflake's defaults: NULLS LAST ascending, NULLS FIRST descending.
		{"ORDER BY id", []string{"1", "2", "10", ""}},
		{"ORDER BY ID ASC", []string{"1", "2", "10", ""}},
		{"ORDER BY id DESC", []string{"", "10", "2", "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.order, func(t *testing.T) {
			var got []string
			_, err := src.Stream(t.Context(), "SELECT id FROM t WHERE day = ? "+tt.order, day, 10, func(b *warehouse.Batch) error {
				c := b.Columns[0]
				for r := 0; r < b.Rows; r++ {
					if c.IsNull(r) {
						got = append(got, "")
					} else {
						got = append(got, fmt.Sprint(c.Longs[r]))
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("rows %q, want %q", got, tt.want)
			}
		})
	}
}
