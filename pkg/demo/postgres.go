package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SeedPostgres creates schema and s's tables in it if needed, replaces the
// rows of s's days with generated ones through COPY, and returns the number
// of rows written. It all happens in one transaction: a reader sees the old
// days or the new ones.
func SeedPostgres(ctx context.Context, pool *pgxpool.Pool, schema string, s Spec) (int64, error) {
	s = s.WithDefaults()
	if err := s.Validate(); err != nil {
		return 0, err
	}
	if schema == "" {
		schema = "public"
	}
	events, metrics := qualified(schema, s.EventsTable), qualified(schema, s.MetricsTable)
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("seed postgres: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	first, last := s.FirstDay().In(time.UTC), s.LastDay.In(time.UTC)
	for _, stmt := range []string{
		`CREATE SCHEMA IF NOT EXISTS ` + quoteIdent(schema),
		eventsDDL(events),
		metricsDDL(metrics),
		`CREATE INDEX IF NOT EXISTS ` + quoteIdent(s.EventsTable+"_ds") + ` ON ` + events + ` (ds)`,
		`CREATE INDEX IF NOT EXISTS ` + quoteIdent(s.MetricsTable+"_ds") + ` ON ` + metrics + ` (ds)`,
	} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return 0, fmt.Errorf("prepare demo tables in postgres: %w", err)
		}
	}
	for _, t := range []string{events, metrics} {
		if _, err := tx.Exec(ctx, `DELETE FROM `+t+` WHERE ds BETWEEN $1 AND $2`, first, last); err != nil {
			return 0, fmt.Errorf("clear demo days of %s: %w", t, err)
		}
	}
	var total int64
	for _, day := range s.Dates() {
		eg := newEventGen(s, day, s.EventsPerDay, s.BadRowEvery, streamEvents, 0)
		n, err := tx.CopyFrom(ctx, pgx.Identifier{schema, s.EventsTable}, eventColumns, &eventCopy{g: eg})
		total += n
		if err != nil {
			return 0, fmt.Errorf("copy events of %s into postgres: %w", day, err)
		}
		mg := newMetricGen(s, day, s.MetricsPerDay, s.BadRowEvery, streamMetrics, 0)
		n, err = tx.CopyFrom(ctx, pgx.Identifier{schema, s.MetricsTable}, metricColumns, &metricCopy{g: mg})
		total += n
		if err != nil {
			return 0, fmt.Errorf("copy metrics of %s into postgres: %w", day, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit demo seed: %w", err)
	}
	return total, nil
}

// eventCopy feeds an event generator to pgx's CopyFrom, reusing one row.
type eventCopy struct {
	g   *eventGen
	cur *Event
	row []any
}

func (c *eventCopy) Next() bool             { c.cur = c.g.next(); return c.cur != nil }
func (c *eventCopy) Values() ([]any, error) { c.row = c.cur.values(c.row); return c.row, nil }
func (c *eventCopy) Err() error             { return nil }

// metricCopy feeds a metric generator to pgx's CopyFrom, reusing one row.
type metricCopy struct {
	g   *metricGen
	cur *Metric
	row []any
}

func (c *metricCopy) Next() bool             { c.cur = c.g.next(); return c.cur != nil }
func (c *metricCopy) Values() ([]any, error) { c.row = c.cur.values(c.row); return c.row, nil }
func (c *metricCopy) Err() error             { return nil }
