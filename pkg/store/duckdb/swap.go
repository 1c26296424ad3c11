package duckdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// transact is the store's store.Transact: one write transaction at a time.
func (s *Store) transact(ctx context.Context, fn func(store.SwapTx) error) error {
	return s.write(ctx, func(c *sql.Conn) error { return fn(swapTx{s, c}) })
}

// swapTx is store.SwapTx over one DuckDB write transaction. The store runs
// one write transaction at a time (Store.write), so every Lock method
// only reads.
type swapTx struct {
	s *Store
	c *sql.Conn
}

var _ store.SwapTx = swapTx{}

// LockExtraction registers the extraction on first sight.
func (t swapTx) LockExtraction(ctx context.Context, end store.RunEnd, at time.Time) (int64, store.ExtractionState, error) {
	return t.s.extraction(ctx, t.c, end.ExtractID, end.RunID, end.Project, end.Ingestion, end.Date, end.Type, end.Fence, at)
}

// StagedTally sums the extraction's staged batches.
func (t swapTx) StagedTally(ctx context.Context, xid, batches int64) (store.Tally, error) {
	var tally store.Tally
	rows, err := t.c.QueryContext(ctx, `SELECT seq, row_count, mapped, rejected FROM batches WHERE xid = ?`, xid)
	if err != nil {
		return tally, fmt.Errorf("count staged batches: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq, count, mapped int64
		var rejected string
		if err := rows.Scan(&seq, &count, &mapped, &rejected); err != nil {
			return tally, fmt.Errorf("count staged batches: %w", err)
		}
		if err := tally.AddStaged(seq, batches, count, mapped, []byte(rejected)); err != nil {
			return tally, err
		}
	}
	return tally, rows.Err()
}

// SetExtractionState moves one extraction to state.
func (t swapTx) SetExtractionState(ctx context.Context, xid int64, state store.ExtractionState) error {
	if _, err := t.c.ExecContext(ctx, `UPDATE extractions SET state = ? WHERE xid = ?`, state, xid); err != nil {
		return fmt.Errorf("mark extraction %d %s: %w", xid, state, err)
	}
	return nil
}

// RetireAbandoned marks stale the day's older extractions and the run's
// other extractions still staging.
func (t swapTx) RetireAbandoned(ctx context.Context, end store.RunEnd, keep int64) ([]int64, error) {
	rows, err := t.c.QueryContext(ctx, `UPDATE extractions SET state = ?
		WHERE project = ? AND ingestion = ? AND ds = CAST(? AS DATE) AND state = ? AND xid <> ?
			AND (run_id = ? OR (xid < ? AND fence <= ?))
		RETURNING xid`, store.ExtractionStale, end.Project, end.Ingestion, end.Date, store.ExtractionStaging, keep,
		end.RunID, keep, end.Fence)
	if err != nil {
		return nil, fmt.Errorf("retire abandoned extractions: %w", err)
	}
	defer rows.Close()
	var gone []int64
	for rows.Next() {
		var x int64
		if err := rows.Scan(&x); err != nil {
			return nil, fmt.Errorf("retire abandoned extractions: %w", err)
		}
		gone = append(gone, x)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("retire abandoned extractions: %w", err)
	}
	return gone, nil
}

// xidList is the placeholders and arguments of an IN list of xids.
func xidList(xids []int64) (string, []any) {
	args := make([]any, len(xids))
	for i, x := range xids {
		args[i] = x
	}
	return strings.TrimSuffix(strings.Repeat("?,", len(xids)), ","), args
}

// Purge deletes the records staged under xids.
func (t swapTx) Purge(ctx context.Context, xids []int64) error {
	if len(xids) == 0 {
		return nil
	}
	marks, args := xidList(xids)
	for _, table := range []string{"events", "metrics"} {
		if _, err := t.c.ExecContext(ctx, `DELETE FROM `+table+` WHERE xid IN (`+marks+`)`, args...); err != nil {
			return fmt.Errorf("delete %s of extractions %v: %w", table, xids, err)
		}
	}
	return nil
}

// DropRejects deletes the rejected rows staged under xids.
func (t swapTx) DropRejects(ctx context.Context, xids []int64) error {
	if len(xids) == 0 {
		return nil
	}
	marks, args := xidList(xids)
	if _, err := t.c.ExecContext(ctx, `DELETE FROM rejected_rows WHERE (project, extract_id) IN
		(SELECT project, extract_id FROM extractions WHERE xid IN (`+marks+`))`, args...); err != nil {
		return fmt.Errorf("delete rejected rows of extractions %v: %w", xids, err)
	}
	return nil
}

// RecordUsage adds the run's line to the usage ledger, once per run.
func (t swapTx) RecordUsage(ctx context.Context, u store.Usage) error {
	if _, err := t.c.ExecContext(ctx, `INSERT INTO usage
		SELECT ?, ?, ?, CAST(? AS DATE), ?, ?, ?, ?
		WHERE NOT EXISTS (SELECT 1 FROM usage WHERE project = ? AND run_id = ?)`,
		u.XID, u.Project, u.Ingestion, u.Date, string(u.Trigger), u.RunID, u.Rows, u.At, u.Project, u.RunID); err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	return nil
}

// dayColumns scan into scanDay; a day with no visible extraction has
// visible_xid NULL, read as 0.
const dayColumns = `project, ingestion, CAST(ds AS VARCHAR), type, status, message, error_category,
	error_message, visible_run_id, COALESCE(visible_xid, 0), fence, extracted, rows_loaded, rejected,
	first_loaded_at, last_loaded_at, warehouse_count, warehouse_at, fingerprint, warehouse_fingerprint`

type scanner interface{ Scan(dest ...any) error }

func scanDay(row scanner) (store.LockedDay, error) {
	l := store.LockedDay{Exists: true}
	d := &l.Day
	var rejected string
	err := row.Scan(&d.Project, &d.Ingestion, &d.Date, &d.Type, &d.Status, &d.Message, &d.ErrorCategory,
		&d.ErrorMessage, &d.VisibleRunID, &l.Visible, &d.Fence, &d.Extracted, &d.RowsLoaded, &rejected,
		&d.FirstLoadedAt, &d.LastLoadedAt, &d.WarehouseCount, &d.WarehouseAt, &d.Fingerprint, &d.WarehouseFinger)
	if err != nil {
		return l, err
	}
	return l, store.DecodeDay(d, []byte(rejected))
}

// LockDay reads the day; the store's one write transaction at a time is
// the lock.
func (t swapTx) LockDay(ctx context.Context, project, ingestion, date string) (store.LockedDay, error) {
	l, err := scanDay(t.c.QueryRowContext(ctx, `SELECT `+dayColumns+` FROM days
		WHERE project = ? AND ingestion = ? AND ds = CAST(? AS DATE)`, project, ingestion, date))
	if errors.Is(err, sql.ErrNoRows) {
		return store.LockedDay{}, nil
	}
	if err != nil {
		return l, fmt.Errorf("load day %s %s: %w", ingestion, date, err)
	}
	return l, nil
}

// SaveDay writes the day, inserting it when it is new.
func (t swapTx) SaveDay(ctx context.Context, l store.LockedDay) error {
	d := l.Day
	args := []any{d.Type, string(d.Status), d.Message, string(d.ErrorCategory), d.ErrorMessage, d.VisibleRunID, l.Visible,
		d.Fence, d.Extracted, d.RowsLoaded, store.EncodeRejected(d.Rejected), d.FirstLoadedAt, d.LastLoadedAt,
		d.WarehouseCount, d.WarehouseAt, d.Fingerprint, d.WarehouseFinger, d.Project, d.Ingestion, d.Date}
	var err error
	if l.Exists {
		_, err = t.c.ExecContext(ctx, `UPDATE days SET type = ?, status = ?, message = ?, error_category = ?,
			error_message = ?, visible_run_id = ?, visible_xid = NULLIF(CAST(? AS BIGINT), 0), fence = ?,
			extracted = ?, rows_loaded = ?, rejected = ?, first_loaded_at = ?, last_loaded_at = ?,
			warehouse_count = ?, warehouse_at = ?, fingerprint = ?, warehouse_fingerprint = ?
			WHERE project = ? AND ingestion = ? AND ds = CAST(? AS DATE)`, args...)
	} else {
		_, err = t.c.ExecContext(ctx, `INSERT INTO days (type, status, message, error_category, error_message,
			visible_run_id, visible_xid, fence, extracted, rows_loaded, rejected, first_loaded_at,
			last_loaded_at, warehouse_count, warehouse_at, fingerprint, warehouse_fingerprint,
			project, ingestion, ds)
			VALUES (?, ?, ?, ?, ?, ?, NULLIF(CAST(? AS BIGINT), 0), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS DATE))`, args...)
	}
	if err != nil {
		return fmt.Errorf("save day %s %s: %w", d.Ingestion, d.Date, err)
	}
	return nil
}

const runColumns = `project, run_id, ingestion, type, ds, trigger, fence, status, extract_id, extracted,
	mapped, rejected, error_category, error_message, message, history, created_at, updated_at`

func scanRun(row scanner) (store.Run, error) {
	var r store.Run
	var rejected, history string
	err := row.Scan(&r.Project, &r.RunID, &r.Ingestion, &r.Type, &r.Date, &r.Trigger, &r.Fence, &r.Status,
		&r.ExtractID, &r.Extracted, &r.Mapped, &rejected, &r.ErrorCategory, &r.ErrorMessage, &r.Message,
		&history, &r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return r, err
	}
	return r, store.DecodeRun(&r, []byte(rejected), []byte(history))
}

// LockRun reads the run; the store's one write transaction at a time is
// the lock.
func (t swapTx) LockRun(ctx context.Context, project, runID string, _ time.Time) (store.Run, bool, error) {
	r, err := scanRun(t.c.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE project = ? AND run_id = ?`, project, runID))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Run{}, false, nil
	case err != nil:
		return r, false, fmt.Errorf("load run %s: %w", runID, err)
	}
	return r, true, nil
}

// SaveRun writes the run, inserting it when it is new.
func (t swapTx) SaveRun(ctx context.Context, r store.Run, exists bool) error {
	rejected, history, err := store.EncodeRun(r)
	if err != nil {
		return err
	}
	args := []any{r.Ingestion, r.Type, r.Date, string(r.Trigger), r.Fence, string(r.Status), r.ExtractID, r.Extracted,
		r.Mapped, rejected, string(r.ErrorCategory), r.ErrorMessage, r.Message, history,
		r.CreatedAt, r.UpdatedAt, r.NotificationDue, r.DeadLettersDue, r.Project, r.RunID}
	if exists {
		_, err = t.c.ExecContext(ctx, `UPDATE runs SET ingestion = ?, type = ?, ds = ?, trigger = ?, fence = ?,
			status = ?, extract_id = ?, extracted = ?, mapped = ?, rejected = ?, error_category = ?,
			error_message = ?, message = ?, history = ?, created_at = ?, updated_at = ?,
			notify_state = CASE WHEN ? THEN 'due' ELSE notify_state END,
			dead_letters_state = CASE WHEN ? THEN 'due' ELSE dead_letters_state END
			WHERE project = ? AND run_id = ?`, args...)
	} else {
		_, err = t.c.ExecContext(ctx, `INSERT INTO runs (ingestion, type, ds, trigger, fence, status, extract_id,
			extracted, mapped, rejected, error_category, error_message, message, history, created_at,
			updated_at, notify_state, dead_letters_state, project, run_id)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CASE WHEN ? THEN 'due' ELSE '' END,
				CASE WHEN ? THEN 'due' ELSE '' END, ?, ?)`, args...)
	}
	if err != nil {
		return fmt.Errorf("save run %s: %w", r.RunID, err)
	}
	return nil
}
