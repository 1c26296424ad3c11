package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// where builds a conjunction of conditions with numbered parameters.
type where struct {
	conds []string
	args  []any
}

// add renders c with numbered parameters; a date argument is cast.
func (w *where) add(cs ...store.Cond) *where {
	for _, c := range cs {
		w.args = append(w.args, c.Arg)
		mark := fmt.Sprintf("$%d", len(w.args))
		if c.Date {
			mark += "::date"
		}
		w.conds = append(w.conds, c.Column+" "+c.Op+" "+mark)
	}
	return w
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// Days lists days matching f.
func (s *Store) Days(ctx context.Context, f store.DayFilter) ([]store.Day, error) {
	w := new(where).add(f.Conds()...)
	rows, err := s.pool.Query(ctx, s.q(`SELECT `+dayColumns+` FROM {s}.days`+w.String()+` ORDER BY ingestion, ds, project`), w.args...)
	if err != nil {
		return nil, fmt.Errorf("list days: %w", err)
	}
	defer rows.Close()
	var days []store.Day
	for rows.Next() {
		d, err := scanDay(rows)
		if err != nil {
			return nil, fmt.Errorf("list days: %w", err)
		}
		days = append(days, d.Day)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list days: %w", err)
	}
	return days, nil
}

// Runs lists runs, newest first; Limit 0 means all.
func (s *Store) Runs(ctx context.Context, f store.RunFilter) ([]store.Run, error) {
	// Runs without a status are the placeholders LockRun creates.
	w := new(where).add(store.Cond{Column: "status", Op: "<>", Arg: ""}).add(f.Conds()...)
	sql := `SELECT ` + runColumns + ` FROM {s}.runs` + w.String() + ` ORDER BY created_at DESC, run_id DESC`
	if f.Limit > 0 {
		sql += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.pool.Query(ctx, s.q(sql), w.args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var runs []store.Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return runs, nil
}

// Run returns one run of project.
func (s *Store) Run(ctx context.Context, project, runID string) (store.Run, error) {
	r, err := scanRun(s.pool.QueryRow(ctx, s.q(`SELECT `+runColumns+` FROM {s}.runs
		WHERE project = $1 AND run_id = $2 AND status <> ''`), project, runID))
	if isNoRows(err) {
		return r, fmt.Errorf("run %s of %s: %w", runID, project, store.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("get run %s: %w", runID, err)
	}
	return r, nil
}

// VisibleEvents reads the day's visible events in one statement, so it sees
// one extraction whatever swaps run meanwhile.
func (s *Store) VisibleEvents(ctx context.Context, project, ingestion, date string) ([]schemas.Event, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT position, event_name, event_value, time, unit_ids::text, metadata::text
		FROM {s}.visible_events WHERE project = $1 AND ingestion = $2 AND ds = $3::date ORDER BY position`),
		project, ingestion, date)
	if err != nil {
		return nil, fmt.Errorf("read events of %s %s: %w", ingestion, date, err)
	}
	var (
		e       schemas.Event
		t       time.Time
		ids     []byte
		events  []schemas.Event
		scanned = []any{&e.Position, &e.EventName, &e.EventValue, &t, &ids, &e.MetadataJSON}
	)
	_, err = pgx.ForEachRow(rows, scanned, func() error {
		var err error
		if e.UnitIDs, err = store.DecodeUnitIDs(ids); err != nil {
			return err
		}
		e.TimeMs = t.UnixMilli()
		events = append(events, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read events of %s %s: %w", ingestion, date, err)
	}
	return events, nil
}

// VisibleMetrics reads the day's visible metrics in one statement.
func (s *Store) VisibleMetrics(ctx context.Context, project, ingestion, date string) ([]schemas.Metric, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT position, unit_id, id_type, to_char(ds, 'YYYY-MM-DD'), metric_name,
		metric_value, is_ratio, numerator, denominator
		FROM {s}.visible_metrics WHERE project = $1 AND ingestion = $2 AND ds = $3::date ORDER BY position`),
		project, ingestion, date)
	if err != nil {
		return nil, fmt.Errorf("read metrics of %s %s: %w", ingestion, date, err)
	}
	var (
		m       schemas.Metric
		metrics []schemas.Metric
	)
	_, err = pgx.ForEachRow(rows, []any{&m.Position, &m.UnitID, &m.IDType, &m.Date, &m.MetricName,
		&m.MetricValue, &m.IsRatio, &m.Numerator, &m.Denominator}, func() error {
		metrics = append(metrics, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read metrics of %s %s: %w", ingestion, date, err)
	}
	return metrics, nil
}

// Usage sums rows loaded per data date, ingestion and trigger; every swap
// counts, so reloads and backfills are billed. from and to are inclusive
// and optional.
func (s *Store) Usage(ctx context.Context, project, from, to string) ([]store.UsageRow, error) {
	w := new(where).add(store.UsageConds(project, from, to)...)
	rows, err := s.pool.Query(ctx, s.q(`SELECT project, to_char(ds, 'YYYY-MM-DD'), ingestion, trigger, sum(rows_loaded)::bigint
		FROM {s}.usage`+w.String()+` GROUP BY project, ds, ingestion, trigger ORDER BY ds, ingestion, trigger`), w.args...)
	if err != nil {
		return nil, fmt.Errorf("read usage of %s: %w", project, err)
	}
	var (
		u   store.UsageRow
		out []store.UsageRow
	)
	_, err = pgx.ForEachRow(rows, []any{&u.Project, &u.Date, &u.Ingestion, &u.Trigger, &u.RowsLoaded}, func() error {
		out = append(out, u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read usage of %s: %w", project, err)
	}
	return out, nil
}
