package duckdb

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// where builds a conjunction of conditions.
type where struct {
	conds []string
	args  []any
}

// add renders c: a date argument is cast to DATE.
func (w *where) add(cs ...store.Cond) *where {
	for _, c := range cs {
		mark := "?"
		if c.Date {
			mark = "CAST(? AS DATE)"
		}
		w.conds = append(w.conds, c.Column+" "+c.Op+" "+mark)
		w.args = append(w.args, c.Arg)
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
	rows, err := s.db.QueryContext(ctx, `SELECT `+dayColumns+` FROM days`+w.String()+` ORDER BY ingestion, ds, project`, w.args...)
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
	w := new(where).add(f.Conds()...)
	q := `SELECT ` + runColumns + ` FROM runs` + w.String() + ` ORDER BY created_at DESC, run_id DESC`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, w.args...)
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
	runs, err := s.db.QueryContext(ctx, `SELECT `+runColumns+` FROM runs WHERE project = ? AND run_id = ?`, project, runID)
	if err != nil {
		return store.Run{}, fmt.Errorf("get run %s: %w", runID, err)
	}
	defer runs.Close()
	if !runs.Next() {
		if err := runs.Err(); err != nil {
			return store.Run{}, fmt.Errorf("get run %s: %w", runID, err)
		}
		return store.Run{}, fmt.Errorf("run %s of %s: %w", runID, project, store.ErrNotFound)
	}
	r, err := scanRun(runs)
	if err != nil {
		return r, fmt.Errorf("get run %s: %w", runID, err)
	}
	return r, nil
}

// VisibleEvents reads the day's visible events in one statement, so it sees
// one extraction whatever swaps run meanwhile.
func (s *Store) VisibleEvents(ctx context.Context, project, ingestion, date string) ([]schemas.Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT position, event_name, event_value, time, unit_ids, metadata
		FROM visible_events WHERE project = ? AND ingestion = ? AND ds = CAST(? AS DATE) ORDER BY position`,
		project, ingestion, date)
	if err != nil {
		return nil, fmt.Errorf("read events of %s %s: %w", ingestion, date, err)
	}
	defer rows.Close()
	var events []schemas.Event
	for rows.Next() {
		var (
			e   schemas.Event
			t   time.Time
			ids string
		)
		if err := rows.Scan(&e.Position, &e.EventName, &e.EventValue, &t, &ids, &e.MetadataJSON); err != nil {
			return nil, fmt.Errorf("read events of %s %s: %w", ingestion, date, err)
		}
		if e.UnitIDs, err = store.DecodeUnitIDs([]byte(ids)); err != nil {
			return nil, err
		}
		e.TimeMs = t.UnixMilli()
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events of %s %s: %w", ingestion, date, err)
	}
	return events, nil
}

// VisibleMetrics reads the day's visible metrics in one statement.
func (s *Store) VisibleMetrics(ctx context.Context, project, ingestion, date string) ([]schemas.Metric, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT position, unit_id, id_type, CAST(ds AS VARCHAR), metric_name,
		metric_value, is_ratio, numerator, denominator
		FROM visible_metrics WHERE project = ? AND ingestion = ? AND ds = CAST(? AS DATE) ORDER BY position`,
		project, ingestion, date)
	if err != nil {
		return nil, fmt.Errorf("read metrics of %s %s: %w", ingestion, date, err)
	}
	defer rows.Close()
	var metrics []schemas.Metric
	for rows.Next() {
		var m schemas.Metric
		if err := rows.Scan(&m.Position, &m.UnitID, &m.IDType, &m.Date, &m.MetricName,
			&m.MetricValue, &m.IsRatio, &m.Numerator, &m.Denominator); err != nil {
			return nil, fmt.Errorf("read metrics of %s %s: %w", ingestion, date, err)
		}
		metrics = append(metrics, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read metrics of %s %s: %w", ingestion, date, err)
	}
	return metrics, nil
}

// Usage sums rows loaded per data date, ingestion and trigger; every swap
// counts, so reloads and backfills are billed. from and to are inclusive
// and optional.
func (s *Store) Usage(ctx context.Context, project, from, to string) ([]store.UsageRow, error) {
	w := new(where).add(store.UsageConds(project, from, to)...)
	rows, err := s.db.QueryContext(ctx, `SELECT project, CAST(ds AS VARCHAR), ingestion, trigger, CAST(sum(rows_loaded) AS BIGINT)
		FROM usage`+w.String()+` GROUP BY project, ds, ingestion, trigger ORDER BY ds, ingestion, trigger`, w.args...)
	if err != nil {
		return nil, fmt.Errorf("read usage of %s: %w", project, err)
	}
	defer rows.Close()
	var out []store.UsageRow
	for rows.Next() {
		var u store.UsageRow
		if err := rows.Scan(&u.Project, &u.Date, &u.Ingestion, &u.Trigger, &u.RowsLoaded); err != nil {
			return nil, fmt.Errorf("read usage of %s: %w", project, err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read usage of %s: %w", project, err)
	}
	return out, nil
}
