package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/store"
)

// errNothing rolls back a transaction that must change nothing.
var errNothing = errors.New("nothing to change")

// CompleteRun swaps the day to the extraction's rows when every batch is
// staged; see store.Store. Lock order: the extraction row, then the day row.
func (s *Store) CompleteRun(ctx context.Context, end store.RunEnd) (store.Outcome, error) {
	at := s.at(end.At)
	out := store.Incomplete
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		xid, state, err := s.extraction(ctx, tx, end.ExtractID, end.RunID, end.Project, end.Ingestion, end.Date, end.Type, end.Fence, at, "FOR UPDATE")
		if err != nil {
			return err
		}
		if state != stateStaging {
			out = store.AlreadyDone
			return errNothing
		}
		day, visible, err := s.lockDay(ctx, tx, end.Project, end.Ingestion, end.Date, end.Type)
		if err != nil {
			return err
		}
		if day.Fence > end.Fence {
			out = store.Stale
			return s.discard(ctx, tx, xid, stateStale, end, store.RunUpdate{Status: store.StatusSuperseded,
				Message: fmt.Sprintf("day already loaded by run %s with fence %d", day.VisibleRunID, day.Fence)}, at)
		}
		tally, err := s.tally(ctx, tx, xid, end.Batches)
		if err != nil {
			return err
		}
		complete, err := tally.Check(end)
		if err != nil {
			return err
		}
		if !complete {
			return errNothing
		}
		if tooMany, msg := tally.TooManyRejected(end); tooMany {
			out = store.TooManyRejected
			u := store.RunUpdate{Status: store.StatusFailed, ErrorCategory: store.CategoryTooManyRejected, ErrorMessage: msg}
			if err := s.discard(ctx, tx, xid, stateFailed, end, u, at); err != nil {
				return err
			}
			u.RunID, u.Type, u.Fence = end.RunID, end.Type, end.Fence
			if store.ApplyRunToDay(&day, visible != nil, u) {
				return s.saveDay(ctx, tx, day, visible)
			}
			return nil
		}
		out = store.Swapped
		return s.swap(ctx, tx, xid, visible, day, end, tally, at)
	})
	if errors.Is(err, errNothing) {
		err = nil
	}
	if err != nil {
		return store.Incomplete, fmt.Errorf("complete extraction %s of run %s (%s %s): %w", end.ExtractID, end.RunID, end.Ingestion, end.Date, err)
	}
	return out, nil
}

func (s *Store) swap(ctx context.Context, tx pgx.Tx, xid int64, old *int64, day store.Day, end store.RunEnd, t store.Tally, at time.Time) error {
	store.SwapDay(&day, end, t, at)
	if err := s.saveDay(ctx, tx, day, &xid); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, s.q(`UPDATE {s}.extractions SET state = $2 WHERE xid = $1`), xid, stateVisible); err != nil {
		return fmt.Errorf("mark extraction visible: %w", err)
	}
	// The replaced extraction, and older extractions of the day that never
	// finished (an extractor retried under a new extract_id), go now.
	var gone []int64
	if old != nil && *old != xid {
		gone = append(gone, *old)
		if _, err := tx.Exec(ctx, s.q(`UPDATE {s}.extractions SET state = $2 WHERE xid = $1`), *old, stateReplaced); err != nil {
			return fmt.Errorf("mark extraction replaced: %w", err)
		}
	}
	rows, err := tx.Query(ctx, s.q(`UPDATE {s}.extractions SET state = $6
		WHERE project = $1 AND ingestion = $2 AND ds = $3::date AND state = 'staging' AND xid < $4 AND fence <= $5
		RETURNING xid`), end.Project, end.Ingestion, end.Date, xid, end.Fence, stateStale)
	if err != nil {
		return fmt.Errorf("retire abandoned extractions: %w", err)
	}
	abandoned, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("retire abandoned extractions: %w", err)
	}
	if err := s.purge(ctx, tx, append(gone, abandoned...)); err != nil {
		return err
	}
	run, err := s.lockRun(ctx, tx, end.Project, end.RunID, at)
	if err != nil {
		return err
	}
	store.FinishRun(&run, end, day.Status, t, at)
	if err := s.saveRun(ctx, tx, run); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, s.q(`INSERT INTO {s}.usage (xid, project, ingestion, ds, trigger, run_id, rows_loaded, loaded_at)
		VALUES ($1, $2, $3, $4::date, $5, $6, $7, $8) ON CONFLICT (xid) DO NOTHING`),
		xid, end.Project, end.Ingestion, end.Date, run.Trigger, end.RunID, t.Mapped, at); err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	return nil
}

// discard ends an extraction without swapping: its rows go, its run takes
// u (if that moves it forward) and keeps the extraction's counts.
func (s *Store) discard(ctx context.Context, tx pgx.Tx, xid int64, state string, end store.RunEnd, u store.RunUpdate, at time.Time) error {
	if _, err := tx.Exec(ctx, s.q(`UPDATE {s}.extractions SET state = $2 WHERE xid = $1`), xid, state); err != nil {
		return fmt.Errorf("mark extraction %s: %w", state, err)
	}
	if err := s.purge(ctx, tx, []int64{xid}); err != nil {
		return err
	}
	run, err := s.lockRun(ctx, tx, end.Project, end.RunID, at)
	if err != nil {
		return err
	}
	u.RunID, u.Project, u.Ingestion, u.Type, u.Date, u.Trigger, u.Fence = end.RunID, end.Project, end.Ingestion, end.Type, end.Date, end.Trigger, end.Fence
	if _, err := store.AdvanceRun(&run, u, at); err != nil {
		return err
	}
	if t, err := s.tally(ctx, tx, xid, end.Batches); err == nil {
		store.RecordCounts(&run, end, t)
	}
	return s.saveRun(ctx, tx, run)
}

func (s *Store) purge(ctx context.Context, tx pgx.Tx, xids []int64) error {
	if len(xids) == 0 {
		return nil
	}
	for _, table := range []string{"events", "metrics"} {
		if _, err := tx.Exec(ctx, s.q(`DELETE FROM {s}.`+table+` WHERE xid = ANY($1)`), xids); err != nil {
			return fmt.Errorf("delete %s of extractions %v: %w", table, xids, err)
		}
	}
	return nil
}

func (s *Store) tally(ctx context.Context, tx pgx.Tx, xid, batches int64) (store.Tally, error) {
	var t store.Tally
	rows, err := tx.Query(ctx, s.q(`SELECT seq, row_count, mapped, rejected::text FROM {s}.batches WHERE xid = $1`), xid)
	if err != nil {
		return t, fmt.Errorf("count staged batches: %w", err)
	}
	var seq, count, mapped int64
	var rejected []byte
	_, err = pgx.ForEachRow(rows, []any{&seq, &count, &mapped, &rejected}, func() error {
		rj, err := store.DecodeRejected(rejected)
		if err != nil {
			return err
		}
		t.Add(seq, batches, count, mapped, rj)
		return nil
	})
	if err != nil {
		return t, fmt.Errorf("count staged batches: %w", err)
	}
	return t, nil
}

// UpdateRun moves a run forward and reflects it on its day. A failed run
// of a day that has no loaded rows makes the day FAILED; a failed reload of
// a loaded day keeps its rows and status and records the error on the day.
func (s *Store) UpdateRun(ctx context.Context, u store.RunUpdate) error {
	at := s.at(u.At)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		run, err := s.lockRun(ctx, tx, u.Project, u.RunID, at)
		if err != nil {
			return err
		}
		changed, err := store.AdvanceRun(&run, u, at)
		if err != nil {
			return err
		}
		if !changed {
			return errNothing
		}
		if err := s.saveRun(ctx, tx, run); err != nil {
			return err
		}
		if u.Date == "" || u.Ingestion == "" {
			return nil
		}
		day, visible, err := s.lockDay(ctx, tx, u.Project, u.Ingestion, u.Date, u.Type)
		if err != nil {
			return err
		}
		if !store.ApplyRunToDay(&day, visible != nil, u) {
			if day.Status == "" {
				return s.dropPlaceholder(ctx, tx, day)
			}
			return nil
		}
		return s.saveDay(ctx, tx, day, visible)
	})
	if errors.Is(err, errNothing) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("update run %s to %s: %w", u.RunID, u.Status, err)
	}
	return nil
}

// RecordWarehouseCount keeps the watcher's latest figures on a known day.
func (s *Store) RecordWarehouseCount(ctx context.Context, project, ingestion, date string, count int64, fingerprint string, at time.Time) error {
	at = s.at(at)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		day, visible, err := s.loadDay(ctx, tx, project, ingestion, date, "FOR UPDATE")
		if err != nil {
			return err
		}
		store.RecordWarehouse(&day, count, fingerprint, at)
		return s.saveDay(ctx, tx, day, visible)
	})
	if err != nil {
		return fmt.Errorf("record warehouse count of %s %s: %w", ingestion, date, err)
	}
	return nil
}

const dayColumns = `project, ingestion, to_char(ds, 'YYYY-MM-DD'), type, status, message, error_category,
	error_message, visible_run_id, visible_xid, fence, extracted, rows_loaded, rejected::text,
	first_loaded_at, last_loaded_at, warehouse_count, warehouse_at, fingerprint, warehouse_fingerprint`

func scanDay(row pgx.Row) (store.Day, *int64, error) {
	var d store.Day
	var visible *int64
	var rejected []byte
	err := row.Scan(&d.Project, &d.Ingestion, &d.Date, &d.Type, &d.Status, &d.Message, &d.ErrorCategory,
		&d.ErrorMessage, &d.VisibleRunID, &visible, &d.Fence, &d.Extracted, &d.RowsLoaded, &rejected,
		&d.FirstLoadedAt, &d.LastLoadedAt, &d.WarehouseCount, &d.WarehouseAt, &d.Fingerprint, &d.WarehouseFinger)
	if err != nil {
		return d, nil, err
	}
	if d.Rejected, err = store.DecodeRejected(rejected); err != nil {
		return d, nil, err
	}
	utcPtr(d.FirstLoadedAt)
	utcPtr(d.LastLoadedAt)
	utcPtr(d.WarehouseAt)
	return d, visible, nil
}

func utcPtr(t *time.Time) {
	if t != nil {
		*t = t.UTC()
	}
}

func (s *Store) loadDay(ctx context.Context, tx pgx.Tx, project, ingestion, date, lock string) (store.Day, *int64, error) {
	d, visible, err := scanDay(tx.QueryRow(ctx, s.q(`SELECT `+dayColumns+` FROM {s}.days
		WHERE project = $1 AND ingestion = $2 AND ds = $3::date `+lock), project, ingestion, date))
	if isNoRows(err) {
		return d, nil, fmt.Errorf("day %s %s of %s: %w", ingestion, date, project, store.ErrNotFound)
	}
	if err != nil {
		return d, nil, fmt.Errorf("load day %s %s: %w", ingestion, date, err)
	}
	return d, visible, nil
}

// lockDay locks the day's row, creating a placeholder (empty status) the
// caller either fills or drops.
func (s *Store) lockDay(ctx context.Context, tx pgx.Tx, project, ingestion, date, typ string) (store.Day, *int64, error) {
	if _, err := tx.Exec(ctx, s.q(`INSERT INTO {s}.days (project, ingestion, ds, type, status)
		VALUES ($1, $2, $3::date, $4, '') ON CONFLICT DO NOTHING`), project, ingestion, date, typ); err != nil {
		return store.Day{}, nil, fmt.Errorf("create day %s %s: %w", ingestion, date, err)
	}
	return s.loadDay(ctx, tx, project, ingestion, date, "FOR UPDATE")
}

func (s *Store) dropPlaceholder(ctx context.Context, tx pgx.Tx, d store.Day) error {
	_, err := tx.Exec(ctx, s.q(`DELETE FROM {s}.days WHERE project = $1 AND ingestion = $2 AND ds = $3::date AND status = ''`),
		d.Project, d.Ingestion, d.Date)
	return err
}

func (s *Store) saveDay(ctx context.Context, tx pgx.Tx, d store.Day, visible *int64) error {
	rejected, err := json.Marshal(nonNil(d.Rejected))
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, s.q(`UPDATE {s}.days SET type = $4, status = $5, message = $6, error_category = $7,
		error_message = $8, visible_run_id = $9, visible_xid = $10, fence = $11, extracted = $12,
		rows_loaded = $13, rejected = $14::jsonb, first_loaded_at = $15, last_loaded_at = $16,
		warehouse_count = $17, warehouse_at = $18, fingerprint = $19, warehouse_fingerprint = $20
		WHERE project = $1 AND ingestion = $2 AND ds = $3::date`),
		d.Project, d.Ingestion, d.Date, d.Type, d.Status, d.Message, d.ErrorCategory,
		d.ErrorMessage, d.VisibleRunID, visible, d.Fence, d.Extracted,
		d.RowsLoaded, string(rejected), d.FirstLoadedAt, d.LastLoadedAt,
		d.WarehouseCount, d.WarehouseAt, d.Fingerprint, d.WarehouseFinger)
	if err != nil {
		return fmt.Errorf("save day %s %s: %w", d.Ingestion, d.Date, err)
	}
	return nil
}

func nonNil(m map[string]int64) map[string]int64 {
	if m == nil {
		return map[string]int64{}
	}
	return m
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
	if r.Rejected, err = store.DecodeRejected(rejected); err != nil {
		return r, err
	}
	if err := json.Unmarshal(history, &r.History); err != nil {
		return r, fmt.Errorf("decode run history: %w", err)
	}
	if r.History == nil {
		r.History = []store.Stage{}
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	for i := range r.History {
		r.History[i].At = r.History[i].At.UTC()
	}
	return r, nil
}

// lockRun locks the run's row, creating an empty one (no status) on first
// sight so concurrent first updates serialise too.
func (s *Store) lockRun(ctx context.Context, tx pgx.Tx, project, runID string, at time.Time) (store.Run, error) {
	if _, err := tx.Exec(ctx, s.q(`INSERT INTO {s}.runs (project, run_id, ingestion, type, ds, trigger, fence,
		status, extract_id, extracted, mapped, rejected, error_category, error_message, message, history,
		created_at, updated_at)
		VALUES ($1, $2, '', '', '', '', 0, '', '', 0, 0, '{}', '', '', '', '[]', $3, $3)
		ON CONFLICT DO NOTHING`), project, runID, at); err != nil {
		return store.Run{}, fmt.Errorf("create run %s: %w", runID, err)
	}
	r, err := scanRun(tx.QueryRow(ctx, s.q(`SELECT `+runColumns+` FROM {s}.runs WHERE project = $1 AND run_id = $2 FOR UPDATE`), project, runID))
	if err != nil {
		return r, fmt.Errorf("lock run %s: %w", runID, err)
	}
	return r, nil
}

func (s *Store) saveRun(ctx context.Context, tx pgx.Tx, r store.Run) error {
	rejected, err := json.Marshal(nonNil(r.Rejected))
	if err != nil {
		return err
	}
	history, err := json.Marshal(r.History)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, s.q(`UPDATE {s}.runs SET ingestion = $3, type = $4, ds = $5, trigger = $6, fence = $7,
		status = $8, extract_id = $9, extracted = $10, mapped = $11, rejected = $12::jsonb,
		error_category = $13, error_message = $14, message = $15, history = $16::jsonb,
		created_at = $17, updated_at = $18
		WHERE project = $1 AND run_id = $2`),
		r.Project, r.RunID, r.Ingestion, r.Type, r.Date, r.Trigger, r.Fence,
		r.Status, r.ExtractID, r.Extracted, r.Mapped, string(rejected),
		r.ErrorCategory, r.ErrorMessage, r.Message, string(history), r.CreatedAt, r.UpdatedAt)
	if err != nil {
		return fmt.Errorf("save run %s: %w", r.RunID, err)
	}
	return nil
}
