package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/store"
)

// transact is the store's store.Transact.
func (s *Store) transact(ctx context.Context, fn func(store.SwapTx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return fn(swapTx{s, tx}) })
}

// swapTx is store.SwapTx over one PostgreSQL transaction. Extractions and
// runs are locked by their rows (created on first sight), days by a
// transaction-scoped advisory lock on their key, so a day that does not
// exist yet is locked without writing a row for it.
type swapTx struct {
	s  *Store
	tx pgx.Tx
}

var _ store.SwapTx = swapTx{}

// LockExtraction registers the extraction on first sight and locks its row.
func (t swapTx) LockExtraction(ctx context.Context, end store.RunEnd, at time.Time) (int64, store.ExtractionState, error) {
	return t.s.extraction(ctx, t.tx, end.ExtractID, end.RunID, end.Project, end.Ingestion, end.Date, end.Type, end.Fence, at, "FOR UPDATE")
}

// StagedTally sums the extraction's staged batches.
func (t swapTx) StagedTally(ctx context.Context, xid, batches int64) (store.Tally, error) {
	var tally store.Tally
	rows, err := t.tx.Query(ctx, t.s.q(`SELECT seq, row_count, mapped, rejected::text FROM {s}.batches WHERE xid = $1`), xid)
	if err != nil {
		return tally, fmt.Errorf("count staged batches: %w", err)
	}
	var seq, count, mapped int64
	var rejected []byte
	_, err = pgx.ForEachRow(rows, []any{&seq, &count, &mapped, &rejected}, func() error {
		return tally.AddStaged(seq, batches, count, mapped, rejected)
	})
	if err != nil {
		return tally, fmt.Errorf("count staged batches: %w", err)
	}
	return tally, nil
}

// SetExtractionState moves one extraction to state.
func (t swapTx) SetExtractionState(ctx context.Context, xid int64, state store.ExtractionState) error {
	if _, err := t.tx.Exec(ctx, t.s.q(`UPDATE {s}.extractions SET state = $2 WHERE xid = $1`), xid, string(state)); err != nil {
		return fmt.Errorf("mark extraction %d %s: %w", xid, state, err)
	}
	return nil
}

// RetireAbandoned marks stale the day's older extractions and the run's
// other extractions still staging.
// One that another transaction holds (its own completion, or staging into
// it) is skipped rather than waited for: that transaction may be waiting
// for this one's day lock.
func (t swapTx) RetireAbandoned(ctx context.Context, end store.RunEnd, keep int64) ([]int64, error) {
	rows, err := t.tx.Query(ctx, t.s.q(`UPDATE {s}.extractions SET state = $6
		WHERE xid IN (SELECT xid FROM {s}.extractions
			WHERE project = $1 AND ingestion = $2 AND ds = $3::date AND state = $7 AND xid <> $4
				AND (run_id = $8 OR (xid < $4 AND fence <= $5))
			FOR UPDATE SKIP LOCKED)
		RETURNING xid`), end.Project, end.Ingestion, end.Date, keep, end.Fence,
		string(store.ExtractionStale), string(store.ExtractionStaging), end.RunID)
	if err != nil {
		return nil, fmt.Errorf("retire abandoned extractions: %w", err)
	}
	gone, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("retire abandoned extractions: %w", err)
	}
	return gone, nil
}

// Purge deletes the records staged under xids.
func (t swapTx) Purge(ctx context.Context, xids []int64) error {
	if len(xids) == 0 {
		return nil
	}
	for _, table := range []string{"events", "metrics"} {
		if _, err := t.tx.Exec(ctx, t.s.q(`DELETE FROM {s}.`+table+` WHERE xid = ANY($1)`), xids); err != nil {
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
	if _, err := t.tx.Exec(ctx, t.s.q(`DELETE FROM {s}.rejected_rows r USING {s}.extractions x
		WHERE x.xid = ANY($1) AND r.project = x.project AND r.extract_id = x.extract_id`), xids); err != nil {
		return fmt.Errorf("delete rejected rows of extractions %v: %w", xids, err)
	}
	return nil
}

// RecordUsage adds the run's line to the usage ledger, once per run.
func (t swapTx) RecordUsage(ctx context.Context, u store.Usage) error {
	if _, err := t.tx.Exec(ctx, t.s.q(`INSERT INTO {s}.usage (xid, project, ingestion, ds, trigger, run_id, rows_loaded, loaded_at)
		VALUES ($1, $2, $3, $4::date, $5, $6, $7, $8) ON CONFLICT (project, run_id) DO NOTHING`),
		u.XID, u.Project, u.Ingestion, u.Date, string(u.Trigger), u.RunID, u.Rows, u.At); err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	return nil
}

// SaveDay upserts the day.
func (t swapTx) SaveDay(ctx context.Context, l store.LockedDay) error {
	d := l.Day
	_, err := t.tx.Exec(ctx, t.s.q(`INSERT INTO {s}.days (project, ingestion, ds, type, status, message,
		error_category, error_message, visible_run_id, visible_xid, fence, extracted, rows_loaded, rejected,
		first_loaded_at, last_loaded_at, warehouse_count, warehouse_at, fingerprint, warehouse_fingerprint)
		VALUES ($1, $2, $3::date, $4, $5, $6, $7, $8, $9, NULLIF($10::bigint, 0), $11, $12, $13, $14::jsonb,
			$15, $16, $17, $18, $19, $20)
		ON CONFLICT (project, ingestion, ds) DO UPDATE SET type = $4, status = $5, message = $6,
		error_category = $7, error_message = $8, visible_run_id = $9, visible_xid = NULLIF($10::bigint, 0),
		fence = $11, extracted = $12, rows_loaded = $13, rejected = $14::jsonb, first_loaded_at = $15,
		last_loaded_at = $16, warehouse_count = $17, warehouse_at = $18, fingerprint = $19,
		warehouse_fingerprint = $20`),
		d.Project, d.Ingestion, d.Date, d.Type, string(d.Status), d.Message, string(d.ErrorCategory),
		d.ErrorMessage, d.VisibleRunID, l.Visible, d.Fence, d.Extracted,
		d.RowsLoaded, store.EncodeRejected(d.Rejected), d.FirstLoadedAt, d.LastLoadedAt,
		d.WarehouseCount, d.WarehouseAt, d.Fingerprint, d.WarehouseFinger)
	if err != nil {
		return fmt.Errorf("save day %s %s: %w", d.Ingestion, d.Date, err)
	}
	return nil
}

// LockDay takes the day's advisory lock, then reads it.
func (t swapTx) LockDay(ctx context.Context, project, ingestion, date string) (store.LockedDay, error) {
	key := t.s.schema + "\x1f" + project + "\x1f" + ingestion + "\x1f" + date
	if _, err := t.tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, key); err != nil {
		return store.LockedDay{}, fmt.Errorf("lock day %s %s: %w", ingestion, date, err)
	}
	l, err := scanDay(t.tx.QueryRow(ctx, t.s.q(`SELECT `+dayColumns+` FROM {s}.days
		WHERE project = $1 AND ingestion = $2 AND ds = $3::date FOR UPDATE`), project, ingestion, date))
	if isNoRows(err) {
		return store.LockedDay{}, nil
	}
	if err != nil {
		return l, fmt.Errorf("load day %s %s: %w", ingestion, date, err)
	}
	return l, nil
}

// LockRun locks the run's row, creating an empty one (no status, which
// readers skip) on first sight so concurrent first updates serialise too.
func (t swapTx) LockRun(ctx context.Context, project, runID string, at time.Time) (store.Run, bool, error) {
	if _, err := t.tx.Exec(ctx, t.s.q(`INSERT INTO {s}.runs (project, run_id, ingestion, type, ds, trigger, fence,
		status, extract_id, extracted, mapped, rejected, error_category, error_message, message, history,
		created_at, updated_at)
		VALUES ($1, $2, '', '', '', '', 0, '', '', 0, 0, '{}', '', '', '', '[]', $3, $3)
		ON CONFLICT DO NOTHING`), project, runID, at); err != nil {
		return store.Run{}, false, fmt.Errorf("create run %s: %w", runID, err)
	}
	r, err := scanRun(t.tx.QueryRow(ctx, t.s.q(`SELECT `+runColumns+` FROM {s}.runs WHERE project = $1 AND run_id = $2 FOR UPDATE`), project, runID))
	if err != nil {
		return r, false, fmt.Errorf("lock run %s: %w", runID, err)
	}
	if r.Status == "" {
		return store.Run{}, false, nil
	}
	return r, true, nil
}

// SaveRun writes the run over the row LockRun holds.
func (t swapTx) SaveRun(ctx context.Context, r store.Run, _ bool) error {
	rejected, history, err := store.EncodeRun(r)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(ctx, t.s.q(`UPDATE {s}.runs SET ingestion = $3, type = $4, ds = $5, trigger = $6, fence = $7,
		status = $8, extract_id = $9, extracted = $10, mapped = $11, rejected = $12::jsonb,
		error_category = $13, error_message = $14, message = $15, history = $16::jsonb,
		created_at = $17, updated_at = $18, notify_state = CASE WHEN $19 THEN 'due' ELSE notify_state END,
		dead_letters_state = CASE WHEN $20 THEN 'due' ELSE dead_letters_state END
		WHERE project = $1 AND run_id = $2`),
		r.Project, r.RunID, r.Ingestion, r.Type, r.Date, string(r.Trigger), r.Fence,
		string(r.Status), r.ExtractID, r.Extracted, r.Mapped, rejected,
		string(r.ErrorCategory), r.ErrorMessage, r.Message, history, r.CreatedAt, r.UpdatedAt, r.NotificationDue,
		r.DeadLettersDue)
	if err != nil {
		return fmt.Errorf("save run %s: %w", r.RunID, err)
	}
	return nil
}

// dayColumns scan into scanDay; a day with no visible extraction has
// visible_xid NULL, read as 0.
const dayColumns = `project, ingestion, to_char(ds, 'YYYY-MM-DD'), type, status, message, error_category,
	error_message, visible_run_id, COALESCE(visible_xid, 0), fence, extracted, rows_loaded, rejected::text,
	first_loaded_at, last_loaded_at, warehouse_count, warehouse_at, fingerprint, warehouse_fingerprint`

func scanDay(row pgx.Row) (store.LockedDay, error) {
	l := store.LockedDay{Exists: true}
	d := &l.Day
	var rejected []byte
	err := row.Scan(&d.Project, &d.Ingestion, &d.Date, &d.Type, &d.Status, &d.Message, &d.ErrorCategory,
		&d.ErrorMessage, &d.VisibleRunID, &l.Visible, &d.Fence, &d.Extracted, &d.RowsLoaded, &rejected,
		&d.FirstLoadedAt, &d.LastLoadedAt, &d.WarehouseCount, &d.WarehouseAt, &d.Fingerprint, &d.WarehouseFinger)
	if err != nil {
		return l, err
	}
	return l, store.DecodeDay(d, rejected)
}

const runColumns = `project, run_id, ingestion, type, ds, trigger, fence, status, extract_id, extracted,
	mapped, rejected::text, error_category, error_message, message, history::text, created_at, updated_at`

func scanRun(row pgx.Row) (store.Run, error) {
	var r store.Run
	var rejected, history []byte
	err := row.Scan(&r.Project, &r.RunID, &r.Ingestion, &r.Type, &r.Date, &r.Trigger, &r.Fence, &r.Status,
		&r.ExtractID, &r.Extracted, &r.Mapped, &rejected, &r.ErrorCategory, &r.ErrorMessage, &r.Message,
		&history, &r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return r, err
	}
	return r, store.DecodeRun(&r, rejected, history)
}
