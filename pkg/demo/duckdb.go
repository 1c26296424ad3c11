package demo

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/duckdb/duckdb-go/v2"
	"golang.org/x/sync/errgroup"
)

// SeedDuckDB creates s's tables in db (the main schema) if needed, replaces
// the rows of s's days with generated ones and returns the number of rows
// written. Rows go through DuckDB Appenders on several connections, so
// millions seed in seconds. The days are replaced statement by statement,
// not atomically: seed before anything reads them.
func SeedDuckDB(ctx context.Context, db *sql.DB, s Spec) (int64, error) {
	s = s.WithDefaults()
	if err := s.Validate(); err != nil {
		return 0, err
	}
	events, metrics := quoteIdent(s.EventsTable), quoteIdent(s.MetricsTable)
	first, last := s.FirstDay().In(time.UTC), s.LastDay.In(time.UTC)
	for _, stmt := range []string{eventsDDL(events), metricsDDL(metrics)} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return 0, fmt.Errorf("create demo tables in duckdb: %w", err)
		}
	}
	// Seeding again replaces the days instead of doubling them.
	for _, t := range []string{events, metrics} {
		if _, err := db.ExecContext(ctx, `DELETE FROM `+t+` WHERE ds BETWEEN $1 AND $2`, first, last); err != nil {
			return 0, fmt.Errorf("clear demo days of %s: %w", t, err)
		}
	}
	var total int64
	for _, day := range s.Dates() {
		n, err := appendParallel(ctx, db, s.EventsTable, s.EventsPerDay, func(from, to int, emit func([]any) error) error {
			g := newEventGen(s, day, to, s.BadRowEvery, streamEvents, 0).from(from)
			var row []any
			for ev := g.next(); ev != nil; ev = g.next() {
				row = ev.values(row)
				if err := emit(row); err != nil {
					return err
				}
			}
			return nil
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("seed events of %s in duckdb: %w", day, err)
		}
		n, err = appendParallel(ctx, db, s.MetricsTable, s.MetricsPerDay, func(from, to int, emit func([]any) error) error {
			g := newMetricGen(s, day, to, s.BadRowEvery, streamMetrics, 0).from(from)
			var row []any
			for m := g.next(); m != nil; m = g.next() {
				row = m.values(row)
				if err := emit(row); err != nil {
					return err
				}
			}
			return nil
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("seed metrics of %s in duckdb: %w", day, err)
		}
	}
	return total, nil
}

// appendParallel appends rows [0, rows) of a table, generated block by block
// by gen, through one Appender per worker connection: DuckDB compresses and
// writes each appender's row groups on its own thread, which is most of
// the cost of a big day.
func appendParallel(ctx context.Context, db *sql.DB, table string, rows int, gen func(from, to int, emit func([]any) error) error) (int64, error) {
	blocks := (rows + blockRows - 1) / blockRows
	workers := min(runtime.GOMAXPROCS(0), maxSeedWorkers, blocks)
	var next, total atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			conn, err := db.Conn(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			n, err := appendDuckDB(ctx, conn, table, func(emit func([]any) error) error {
				for {
					b := int(next.Add(1) - 1)
					if b >= blocks {
						return nil
					}
					if err := gen(b*blockRows, min((b+1)*blockRows, rows), emit); err != nil {
						return err
					}
				}
			})
			total.Add(n)
			return err
		})
	}
	err := g.Wait()
	return total.Load(), err
}

// maxSeedWorkers bounds the appenders of one table.
const maxSeedWorkers = 4

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
