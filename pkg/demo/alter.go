package demo

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/civil"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Alteration changes one seeded day the way late or corrected data does.
// Shares are of the day's rows before the change. Only good rows are
// deleted or changed and added rows are good, so the day's bad rows, and
// Expected's rejected counts, stay as they were.
type Alteration struct {
	Table       string // TableEvents or TableMetrics
	Day         civil.Date
	AddShare    float64 // add this share of new rows
	DeleteShare float64 // delete this share of rows
	ChangeShare float64 // change values in this share of rows, keeping the count
	Round       int     // 0-199; distinct rounds of one day add distinct rows
}

const maxRounds = 200

// AlterDuckDB applies a to the DuckDB warehouse seeded with s and returns
// the day's counts afterwards.
func AlterDuckDB(ctx context.Context, db *sql.DB, s Spec, a Alteration) (TableCounts, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return TableCounts{}, fmt.Errorf("alter %s of %s: %w", a.Day, a.Table, err)
	}
	defer conn.Close()
	return alterDay(ctx, &duckAlter{conn: conn}, "", s, a)
}

// AlterPostgres applies a, in one transaction, to the PostgreSQL warehouse
// seeded with s in schema and returns the day's counts afterwards.
func AlterPostgres(ctx context.Context, pool *pgxpool.Pool, schema string, s Spec, a Alteration) (TableCounts, error) {
	if schema == "" {
		schema = "public"
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return TableCounts{}, fmt.Errorf("alter %s of %s: %w", a.Day, a.Table, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	c, err := alterDay(ctx, &pgAlter{tx: tx}, schema, s, a)
	if err != nil {
		return c, err
	}
	if err := tx.Commit(ctx); err != nil {
		return TableCounts{}, fmt.Errorf("commit alteration of %s: %w", a.Day, err)
	}
	return c, nil
}

// alterSQL is what alterDay needs from a database.
type alterSQL interface {
	exec(ctx context.Context, q string, args ...any) error
	count(ctx context.Context, q string, args ...any) (int64, error)
	// appendRows writes the rows next returns, until it returns nil.
	appendRows(ctx context.Context, schema, table string, cols []string, next func() []any) error
}

func alterDay(ctx context.Context, db alterSQL, schema string, s Spec, a Alteration) (TableCounts, error) {
	s = s.WithDefaults()
	if a.Round < 0 || a.Round >= maxRounds {
		return TableCounts{}, fmt.Errorf("alter %s: round must be 0-%d, got %d", a.Day, maxRounds-1, a.Round)
	}
	for _, share := range []float64{a.AddShare, a.DeleteShare, a.ChangeShare} {
		if share < 0 || share > 1 || math.IsNaN(share) {
			return TableCounts{}, fmt.Errorf("alter %s: shares must be between 0 and 1", a.Day)
		}
	}
	var (
		table, key, change string
		cols               []string
		rejected           TableCounts
	)
	exp := Expected(Spec{Days: 1, LastDay: a.Day, EventsPerDay: s.EventsPerDay, MetricsPerDay: s.MetricsPerDay, BadRowEvery: s.BadRowEvery, Seed: s.Seed})[a.Day]
	switch a.Table {
	case TableEvents:
		table, cols, key, rejected = s.EventsTable, eventColumns, "event_id", exp.Events
		change = `event_value = 'corrected_' || substr(md5(event_id), 1, 8)`
	case TableMetrics:
		table, cols, key, rejected = s.MetricsTable, metricColumns, `unit_id || '|' || id_type || '|' || metric_name`, exp.Metrics
		change = `metric_value = coalesce(metric_value, 0) + 1, numerator = numerator + 1`
	default:
		return TableCounts{}, fmt.Errorf("alter %s: unknown table kind %q", a.Day, a.Table)
	}
	name := qualified(schema, table)
	day := a.Day.In(time.UTC)
	what := fmt.Sprintf("alter %s of %s", a.Day, name)

	before, err := db.count(ctx, `SELECT count(*) FROM `+name+` WHERE ds = $1`, day)
	if err != nil {
		return TableCounts{}, fmt.Errorf("%s: count rows: %w", what, err)
	}
	share := func(f float64) int { return int(math.Round(float64(before) * f)) }

	// The day's bad rows are kept out of deletes and changes.
	if err := db.exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS sluice_demo_protected (k VARCHAR)`); err != nil {
		return TableCounts{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := db.exec(ctx, `DELETE FROM sluice_demo_protected`); err != nil {
		return TableCounts{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := protectBadRows(ctx, db, s, a); err != nil {
		return TableCounts{}, fmt.Errorf("%s: protect bad rows: %w", what, err)
	}

	pick := func(salt string, n int) string {
		return key + ` IN (SELECT ` + key + ` FROM ` + name + ` WHERE ds = $1 AND ` + key +
			` NOT IN (SELECT k FROM sluice_demo_protected) ORDER BY md5(` + key + ` || '` + salt + `') LIMIT ` + strconv.Itoa(n) + `)`
	}
	if n := share(a.DeleteShare); n > 0 {
		if err := db.exec(ctx, `DELETE FROM `+name+` WHERE ds = $1 AND `+pick("delete", n), day); err != nil {
			return TableCounts{}, fmt.Errorf("%s: delete rows: %w", what, err)
		}
	}
	if n := share(a.ChangeShare); n > 0 {
		if err := db.exec(ctx, `UPDATE `+name+` SET `+change+` WHERE ds = $1 AND `+pick("change", n), day); err != nil {
			return TableCounts{}, fmt.Errorf("%s: change rows: %w", what, err)
		}
	}
	if n := share(a.AddShare); n > 0 {
		if err := db.appendRows(ctx, schema, table, cols, addedRows(s, a, n)); err != nil {
			return TableCounts{}, fmt.Errorf("%s: add rows: %w", what, err)
		}
	}
	if err := db.exec(ctx, `DROP TABLE IF EXISTS sluice_demo_protected`); err != nil {
		return TableCounts{}, fmt.Errorf("%s: %w", what, err)
	}
	after, err := db.count(ctx, `SELECT count(*) FROM `+name+` WHERE ds = $1`, day)
	if err != nil {
		return TableCounts{}, fmt.Errorf("%s: count rows: %w", what, err)
	}
	return TableCounts{Rows: after, Rejected: rejected.Rejected}, nil
}

// addedRows returns an iterator over n new good rows for a's day: fresh
// event ids, and metric units outside the range the day was seeded with.
func addedRows(s Spec, a Alteration, n int) func() []any {
	stream := uint64(16 + a.Round)
	var row []any
	if a.Table == TableEvents {
		g := newEventGen(s, a.Day, n, 0, stream, 0)
		return func() []any {
			ev := g.next()
			if ev == nil {
				return nil
			}
			row = ev.values(row)
			return row
		}
	}
	g := newMetricGen(s, a.Day, n, 0, stream, (a.Round+1)*100_000_000)
	return func() []any {
		m := g.next()
		if m == nil {
			return nil
		}
		row = m.values(row)
		return row
	}
}

// protectBadRows writes the keys of the day's generated bad rows into the
// sluice_demo_protected temp table.
func protectBadRows(ctx context.Context, db alterSQL, s Spec, a Alteration) error {
	const chunk = 500
	var keys []any
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		var q strings.Builder
		q.WriteString(`INSERT INTO sluice_demo_protected (k) VALUES `)
		for i := range keys {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("($" + strconv.Itoa(i+1) + ")")
		}
		err := db.exec(ctx, q.String(), keys...)
		keys = keys[:0]
		return err
	}
	add := func(k string) error {
		keys = append(keys, k)
		if len(keys) == chunk {
			return flush()
		}
		return nil
	}
	var err error
	if a.Table == TableEvents {
		err = Events(s, a.Day, func(ev *Event) error {
			if ev.Reason == "" {
				return nil
			}
			return add(ev.EventID)
		})
	} else {
		err = Metrics(s, a.Day, func(m *Metric) error {
			if m.Reason == "" {
				return nil
			}
			return add(m.UnitID + "|" + m.IDType + "|" + m.Name)
		})
	}
	if err != nil {
		return err
	}
	return flush()
}

type duckAlter struct{ conn *sql.Conn }

func (d *duckAlter) exec(ctx context.Context, q string, args ...any) error {
	_, err := d.conn.ExecContext(ctx, q, args...)
	return err
}

func (d *duckAlter) count(ctx context.Context, q string, args ...any) (int64, error) {
	var n int64
	err := d.conn.QueryRowContext(ctx, q, args...).Scan(&n)
	return n, err
}

func (d *duckAlter) appendRows(ctx context.Context, _, table string, _ []string, next func() []any) error {
	_, err := appendDuckDB(ctx, d.conn, table, func(emit func([]any) error) error {
		for row := next(); row != nil; row = next() {
			if err := emit(row); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

type pgAlter struct{ tx pgx.Tx }

func (p *pgAlter) exec(ctx context.Context, q string, args ...any) error {
	_, err := p.tx.Exec(ctx, q, args...)
	return err
}

func (p *pgAlter) count(ctx context.Context, q string, args ...any) (int64, error) {
	var n int64
	err := p.tx.QueryRow(ctx, q, args...).Scan(&n)
	return n, err
}

func (p *pgAlter) appendRows(ctx context.Context, schema, table string, cols []string, next func() []any) error {
	_, err := p.tx.CopyFrom(ctx, pgx.Identifier{schema, table}, cols, &funcCopy{next: next})
	return err
}

// funcCopy adapts a row iterator to pgx.CopyFromSource.
type funcCopy struct {
	next func() []any
	row  []any
}

func (f *funcCopy) Next() bool             { f.row = f.next(); return f.row != nil }
func (f *funcCopy) Values() ([]any, error) { return f.row, nil }
func (f *funcCopy) Err() error             { return nil }
