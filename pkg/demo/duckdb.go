package demo

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"time"

	"github.com/duckdb/duckdb-go/v2"
)

// SeedDuckDB creates s's tables in db (the main schema) if needed, replaces
// the rows of s's days with generated ones and returns the number of rows
// written. Rows go through DuckDB's Appender, so millions seed in seconds.
func SeedDuckDB(ctx context.Context, db *sql.DB, s Spec) (int64, error) {
	s = s.WithDefaults()
	if err := s.Validate(); err != nil {
		return 0, err
	}
	events, metrics := quoteIdent(s.EventsTable), quoteIdent(s.MetricsTable)
	for _, stmt := range []string{
		eventsDDL(events),
		metricsDDL(metrics),
		`DELETE FROM ` + events + ` WHERE ds BETWEEN $1 AND $2`,
		`DELETE FROM ` + metrics + ` WHERE ds BETWEEN $1 AND $2`,
	} {
		var args []any
		if stmt[0] == 'D' {
			args = []any{s.FirstDay().In(time.UTC), s.LastDay.In(time.UTC)}
		}
		if _, err := db.ExecContext(ctx, stmt, args...); err != nil {
			return 0, fmt.Errorf("prepare demo tables in duckdb: %w", err)
		}
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("seed duckdb: %w", err)
	}
	defer conn.Close()
	var total int64
	for _, day := range s.Dates() {
		n, err := appendDuckDB(ctx, conn, s.EventsTable, func(emit func([]any) error) error {
			var row []any
			return Events(s, day, func(ev *Event) error {
				row = ev.values(row)
				return emit(row)
			})
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("seed events of %s in duckdb: %w", day, err)
		}
		n, err = appendDuckDB(ctx, conn, s.MetricsTable, func(emit func([]any) error) error {
			var row []any
			return Metrics(s, day, func(m *Metric) error {
				row = m.values(row)
				return emit(row)
			})
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("seed metrics of %s in duckdb: %w", day, err)
		}
	}
	return total, nil
}

// appendDuckDB appends the rows that produce emits to table through one
// Appender on conn and returns how many it appended.
func appendDuckDB(ctx context.Context, conn *sql.Conn, table string, produce func(emit func([]any) error) error) (int64, error) {
	var n int64
	err := conn.Raw(func(dc any) error {
		dconn, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("connection %T is not a database/sql driver connection", dc)
		}
		app, err := duckdb.NewAppender(dconn, "", "", table)
		if err != nil {
			return fmt.Errorf("open appender on %s: %w", table, err)
		}
		vals := make([]driver.Value, 0, len(eventColumns))
		err = produce(func(row []any) error {
			if n%65536 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			vals = vals[:0]
			for _, v := range row {
				vals = append(vals, v)
			}
			n++
			return app.AppendRow(vals...)
		})
		if cerr := app.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// SeedDuckDBFile seeds the DuckDB database file at path and closes it. A
// DuckDB file is opened by one database instance at a time, so seed it
// before the warehouse source opens it.
func SeedDuckDBFile(ctx context.Context, path string, s Spec) (int64, error) {
	db, err := sql.Open("duckdb", path)
	if err != nil {
		return 0, fmt.Errorf("open demo warehouse %s: %w", path, err)
	}
	n, err := SeedDuckDB(ctx, db, s)
	if cerr := db.Close(); err == nil && cerr != nil {
		return n, fmt.Errorf("close demo warehouse %s: %w", path, cerr)
	}
	return n, err
}
