package duckdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	duckdbdrv "github.com/duckdb/duckdb-go/v2"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// Extraction states.
const (
	stateStaging  = "staging"
	stateVisible  = "visible"
	stateReplaced = "replaced"
	stateStale    = "stale"
	stateFailed   = "failed"
)

// StageBatches appends the rows of new ROWS batches, tagged with their
// extraction, in one transaction. Batches staged before, and batches of an
// extraction that already completed, failed or went stale, are skipped.
func (s *Store) StageBatches(ctx context.Context, batches []*schemas.MappedBatch) error {
	bs := store.StageableBatches(batches)
	if len(bs) == 0 {
		return nil
	}
	err := s.write(ctx, func(c *sql.Conn) error {
		xids := make(map[string]int64)
		staged := make(map[string]map[int64]bool)
		now := s.now().UTC()
		for _, b := range bs {
			if _, seen := staged[b.ExtractID]; seen {
				continue
			}
			xid, state, err := s.extraction(ctx, c, b.ExtractID, b.RunID, b.Project, b.Ingestion, b.Date, b.Type, b.Fence, now)
			if err != nil {
				return err
			}
			seqs, err := stagedSeqs(ctx, c, xid)
			if err != nil {
				return err
			}
			staged[b.ExtractID] = seqs
			if state == stateStaging {
				xids[b.ExtractID] = xid
			}
		}
		var fresh []*schemas.MappedBatch
		for _, b := range bs {
			xid, ok := xids[b.ExtractID]
			if !ok || staged[b.ExtractID][b.Seq] {
				continue
			}
			rejected, err := json.Marshal(store.BatchRejected(b))
			if err != nil {
				return err
			}
			if _, err := c.ExecContext(ctx, `INSERT INTO batches VALUES (?, ?, ?, ?, ?)`,
				xid, b.Seq, b.RowCount, store.BatchMapped(b), string(rejected)); err != nil {
				return fmt.Errorf("record batch %d: %w", b.Seq, err)
			}
			fresh = append(fresh, b)
		}
		return appendRows(c, fresh, xids)
	})
	if err != nil {
		return fmt.Errorf("stage %d batches of %s: %w", len(bs), bs[0].ExtractID, err)
	}
	return nil
}

func stagedSeqs(ctx context.Context, c *sql.Conn, xid int64) (map[int64]bool, error) {
	rows, err := c.QueryContext(ctx, `SELECT seq FROM batches WHERE xid = ?`, xid)
	if err != nil {
		return nil, fmt.Errorf("list staged batches: %w", err)
	}
	defer rows.Close()
	seqs := make(map[int64]bool)
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return nil, err
		}
		seqs[seq] = true
	}
	return seqs, rows.Err()
}

func appendRows(c *sql.Conn, bs []*schemas.MappedBatch, xids map[string]int64) error {
	var events, metrics int
	for _, b := range bs {
		events += len(b.Events)
		metrics += len(b.Metrics)
	}
	days := make([]time.Time, len(bs))
	for i, b := range bs {
		d, err := time.Parse(time.DateOnly, b.Date)
		if err != nil {
			return fmt.Errorf("batch %s/%d: date %q: %w", b.ExtractID, b.Seq, b.Date, err)
		}
		days[i] = d
	}
	if events > 0 {
		err := appender(c, "events", func(a *duckdbdrv.Appender) error {
			var buf []byte
			for i, b := range bs {
				xid := xids[b.ExtractID]
				for j := range b.Events {
					e := &b.Events[j]
					buf = store.AppendUnitIDs(buf[:0], e.UnitIDs)
					ids := string(buf)
					buf = store.AppendMetadata(buf[:0], e.MetadataJSON)
					if err := a.AppendRow(xid, b.Project, b.Ingestion, days[i], e.Position, e.EventName,
						e.EventValue, time.UnixMilli(e.TimeMs).UTC(), ids, string(buf)); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("append %d events: %w", events, err)
		}
	}
	if metrics > 0 {
		err := appender(c, "metrics", func(a *duckdbdrv.Appender) error {
			for i, b := range bs {
				xid := xids[b.ExtractID]
				for j := range b.Metrics {
					m := &b.Metrics[j]
					if err := a.AppendRow(xid, b.Project, b.Ingestion, days[i], m.Position, m.UnitID, m.IDType,
						m.MetricName, m.MetricValue, m.IsRatio, m.Numerator, m.Denominator); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("append %d metrics: %w", metrics, err)
		}
	}
	return nil
}

// extraction returns the extraction's id and state, registering it on first sight.
func (s *Store) extraction(ctx context.Context, c *sql.Conn, extractID, runID, project, ingestion, date, typ string, fence int64, now time.Time) (int64, string, error) {
	var xid int64
	var state string
	err := c.QueryRowContext(ctx, `SELECT xid, state FROM extractions WHERE extract_id = ?`, extractID).Scan(&xid, &state)
	if err == nil {
		return xid, state, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, "", fmt.Errorf("look up extraction %s: %w", extractID, err)
	}
	err = c.QueryRowContext(ctx, `INSERT INTO extractions VALUES (nextval('xid_seq'), ?, ?, ?, ?, CAST(? AS DATE), ?, ?, ?, ?) RETURNING xid`,
		extractID, runID, project, ingestion, date, typ, fence, stateStaging, now).Scan(&xid)
	if err != nil {
		return 0, "", fmt.Errorf("register extraction %s: %w", extractID, err)
	}
	return xid, stateStaging, nil
}

// CompleteRun swaps the day to the extraction's rows when every batch is
// staged; see store.Store.
func (s *Store) CompleteRun(ctx context.Context, end store.RunEnd) (store.Outcome, error) {
	at := s.at(end.At)
	out := store.Incomplete
	err := s.write(ctx, func(c *sql.Conn) error {
		xid, state, err := s.extraction(ctx, c, end.ExtractID, end.RunID, end.Project, end.Ingestion, end.Date, end.Type, end.Fence, at)
		if err != nil {
			return err
		}
		if state != stateStaging {
			out = store.AlreadyDone
			return errNothing
		}
		day, visible, exists, err := loadDay(ctx, c, end.Project, end.Ingestion, end.Date)
		if err != nil {
			return err
		}
		if !exists {
			day = store.Day{Project: end.Project, Ingestion: end.Ingestion, Date: end.Date, Type: end.Type}
		}
		if day.Fence > end.Fence {
			out = store.Stale
			return s.discard(ctx, c, xid, stateStale, end, store.RunUpdate{Status: store.StatusSuperseded,
				Message: fmt.Sprintf("day already loaded by run %s with fence %d", day.VisibleRunID, day.Fence)}, at)
		}
		tally, err := tallyOf(ctx, c, xid, end.Batches)
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
			if err := s.discard(ctx, c, xid, stateFailed, end, u, at); err != nil {
				return err
			}
			u.RunID, u.Type, u.Fence = end.RunID, end.Type, end.Fence
			if store.ApplyRunToDay(&day, visible != nil, u) {
				return saveDay(ctx, c, day, visible, exists)
			}
			return nil
		}
		out = store.Swapped
		return s.swap(ctx, c, xid, visible, exists, day, end, tally, at)
	})
	if err != nil {
		return store.Incomplete, fmt.Errorf("complete extraction %s of run %s (%s %s): %w", end.ExtractID, end.RunID, end.Ingestion, end.Date, err)
	}
	return out, nil
}

func (s *Store) swap(ctx context.Context, c *sql.Conn, xid int64, old *int64, exists bool, day store.Day, end store.RunEnd, t store.Tally, at time.Time) error {
	store.SwapDay(&day, end, t, at)
	if err := saveDay(ctx, c, day, &xid, exists); err != nil {
		return err
	}
	if err := setState(ctx, c, xid, stateVisible); err != nil {
		return err
	}
	// The replaced extraction, and older extractions of the day that never
	// finished (an extractor retried under a new extract_id), go now.
	var gone []int64
	if old != nil && *old != xid {
		gone = append(gone, *old)
		if err := setState(ctx, c, *old, stateReplaced); err != nil {
			return err
		}
	}
	rows, err := c.QueryContext(ctx, `UPDATE extractions SET state = ?
		WHERE project = ? AND ingestion = ? AND ds = CAST(? AS DATE) AND state = 'staging' AND xid < ? AND fence <= ?
		RETURNING xid`, stateStale, end.Project, end.Ingestion, end.Date, xid, end.Fence)
	if err != nil {
		return fmt.Errorf("retire abandoned extractions: %w", err)
	}
	for rows.Next() {
		var x int64
		if err := rows.Scan(&x); err != nil {
			rows.Close()
			return err
		}
		gone = append(gone, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("retire abandoned extractions: %w", err)
	}
	if err := purge(ctx, c, gone); err != nil {
		return err
	}
	run, exists, err := loadRun(ctx, c, end.Project, end.RunID)
	if err != nil {
		return err
	}
	store.FinishRun(&run, end, day.Status, t, at)
	if err := saveRun(ctx, c, run, exists); err != nil {
		return err
	}
	if _, err := c.ExecContext(ctx, `INSERT INTO usage VALUES (?, ?, ?, CAST(? AS DATE), ?, ?, ?, ?)`,
		xid, end.Project, end.Ingestion, end.Date, run.Trigger, end.RunID, t.Mapped, at); err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	return nil
}

// discard ends an extraction without swapping: its rows go, its run takes
// u (if that moves it forward) and keeps the extraction's counts.
func (s *Store) discard(ctx context.Context, c *sql.Conn, xid int64, state string, end store.RunEnd, u store.RunUpdate, at time.Time) error {
	if err := setState(ctx, c, xid, state); err != nil {
		return err
	}
	if err := purge(ctx, c, []int64{xid}); err != nil {
		return err
	}
	run, exists, err := loadRun(ctx, c, end.Project, end.RunID)
	if err != nil {
		return err
	}
	u.RunID, u.Project, u.Ingestion, u.Type, u.Date, u.Trigger, u.Fence = end.RunID, end.Project, end.Ingestion, end.Type, end.Date, end.Trigger, end.Fence
	if _, err := store.AdvanceRun(&run, u, at); err != nil {
		return err
	}
	if t, err := tallyOf(ctx, c, xid, end.Batches); err == nil {
		store.RecordCounts(&run, end, t)
	}
	return saveRun(ctx, c, run, exists)
}

func setState(ctx context.Context, c *sql.Conn, xid int64, state string) error {
	if _, err := c.ExecContext(ctx, `UPDATE extractions SET state = ? WHERE xid = ?`, state, xid); err != nil {
		return fmt.Errorf("mark extraction %s: %w", state, err)
	}
	return nil
}

func purge(ctx context.Context, c *sql.Conn, xids []int64) error {
	if len(xids) == 0 {
		return nil
	}
	marks := strings.TrimSuffix(strings.Repeat("?,", len(xids)), ",")
	args := make([]any, len(xids))
	for i, x := range xids {
		args[i] = x
	}
	for _, table := range []string{"events", "metrics"} {
		if _, err := c.ExecContext(ctx, `DELETE FROM `+table+` WHERE xid IN (`+marks+`)`, args...); err != nil {
			return fmt.Errorf("delete %s of extractions %v: %w", table, xids, err)
		}
	}
	return nil
}

func tallyOf(ctx context.Context, c *sql.Conn, xid, batches int64) (store.Tally, error) {
	var t store.Tally
	rows, err := c.QueryContext(ctx, `SELECT seq, row_count, mapped, rejected FROM batches WHERE xid = ?`, xid)
	if err != nil {
		return t, fmt.Errorf("count staged batches: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq, count, mapped int64
		var rejected string
		if err := rows.Scan(&seq, &count, &mapped, &rejected); err != nil {
			return t, fmt.Errorf("count staged batches: %w", err)
		}
		rj, err := store.DecodeRejected([]byte(rejected))
		if err != nil {
			return t, err
		}
		t.Add(seq, batches, count, mapped, rj)
	}
	return t, rows.Err()
}

// UpdateRun moves a run forward and reflects it on its day. A failed run
// of a day that has no loaded rows makes the day FAILED; a failed reload of
// a loaded day keeps its rows and status and records the error on the day.
func (s *Store) UpdateRun(ctx context.Context, u store.RunUpdate) error {
	at := s.at(u.At)
	err := s.write(ctx, func(c *sql.Conn) error {
		run, exists, err := loadRun(ctx, c, u.Project, u.RunID)
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
		if err := saveRun(ctx, c, run, exists); err != nil {
			return err
		}
		if u.Date == "" || u.Ingestion == "" {
			return nil
		}
		day, visible, exists, err := loadDay(ctx, c, u.Project, u.Ingestion, u.Date)
		if err != nil {
			return err
		}
		if !exists {
			day = store.Day{Project: u.Project, Ingestion: u.Ingestion, Date: u.Date, Type: u.Type}
		}
		if !store.ApplyRunToDay(&day, visible != nil, u) {
			return nil
		}
		return saveDay(ctx, c, day, visible, exists)
	})
	if err != nil {
		return fmt.Errorf("update run %s to %s: %w", u.RunID, u.Status, err)
	}
	return nil
}

// RecordWarehouseCount keeps the watcher's latest figures on a known day.
func (s *Store) RecordWarehouseCount(ctx context.Context, project, ingestion, date string, count int64, fingerprint string, at time.Time) error {
	at = s.at(at)
	err := s.write(ctx, func(c *sql.Conn) error {
		day, visible, exists, err := loadDay(ctx, c, project, ingestion, date)
		if err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("day %s %s of %s: %w", ingestion, date, project, store.ErrNotFound)
		}
		store.RecordWarehouse(&day, count, fingerprint, at)
		return saveDay(ctx, c, day, visible, true)
	})
	if err != nil {
		return fmt.Errorf("record warehouse count of %s %s: %w", ingestion, date, err)
	}
	return nil
}

const dayColumns = `project, ingestion, CAST(ds AS VARCHAR), type, status, message, error_category,
	error_message, visible_run_id, visible_xid, fence, extracted, rows_loaded, rejected,
	first_loaded_at, last_loaded_at, warehouse_count, warehouse_at, fingerprint, warehouse_fingerprint`

type scanner interface{ Scan(dest ...any) error }

func scanDay(row scanner) (store.Day, *int64, error) {
	var d store.Day
	var visible *int64
	var rejected string
	err := row.Scan(&d.Project, &d.Ingestion, &d.Date, &d.Type, &d.Status, &d.Message, &d.ErrorCategory,
		&d.ErrorMessage, &d.VisibleRunID, &visible, &d.Fence, &d.Extracted, &d.RowsLoaded, &rejected,
		&d.FirstLoadedAt, &d.LastLoadedAt, &d.WarehouseCount, &d.WarehouseAt, &d.Fingerprint, &d.WarehouseFinger)
	if err != nil {
		return d, nil, err
	}
	if d.Rejected, err = store.DecodeRejected([]byte(rejected)); err != nil {
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

func loadDay(ctx context.Context, c *sql.Conn, project, ingestion, date string) (store.Day, *int64, bool, error) {
	d, visible, err := scanDay(c.QueryRowContext(ctx, `SELECT `+dayColumns+` FROM days
		WHERE project = ? AND ingestion = ? AND ds = CAST(? AS DATE)`, project, ingestion, date))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Day{}, nil, false, nil
	}
	if err != nil {
		return d, nil, false, fmt.Errorf("load day %s %s: %w", ingestion, date, err)
	}
	return d, visible, true, nil
}

func saveDay(ctx context.Context, c *sql.Conn, d store.Day, visible *int64, exists bool) error {
	rejected, err := json.Marshal(nonNil(d.Rejected))
	if err != nil {
		return err
	}
	args := []any{d.Type, d.Status, d.Message, d.ErrorCategory, d.ErrorMessage, d.VisibleRunID, visible,
		d.Fence, d.Extracted, d.RowsLoaded, string(rejected), d.FirstLoadedAt, d.LastLoadedAt,
		d.WarehouseCount, d.WarehouseAt, d.Fingerprint, d.WarehouseFinger, d.Project, d.Ingestion, d.Date}
	if exists {
		_, err = c.ExecContext(ctx, `UPDATE days SET type = ?, status = ?, message = ?, error_category = ?,
			error_message = ?, visible_run_id = ?, visible_xid = ?, fence = ?, extracted = ?, rows_loaded = ?,
			rejected = ?, first_loaded_at = ?, last_loaded_at = ?, warehouse_count = ?, warehouse_at = ?,
			fingerprint = ?, warehouse_fingerprint = ?
			WHERE project = ? AND ingestion = ? AND ds = CAST(? AS DATE)`, args...)
	} else {
		_, err = c.ExecContext(ctx, `INSERT INTO days (type, status, message, error_category, error_message,
			visible_run_id, visible_xid, fence, extracted, rows_loaded, rejected, first_loaded_at,
			last_loaded_at, warehouse_count, warehouse_at, fingerprint, warehouse_fingerprint,
			project, ingestion, ds)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS DATE))`, args...)
	}
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
	if r.Rejected, err = store.DecodeRejected([]byte(rejected)); err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(history), &r.History); err != nil {
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

func loadRun(ctx context.Context, c *sql.Conn, project, runID string) (store.Run, bool, error) {
	r, err := scanRun(c.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE project = ? AND run_id = ?`, project, runID))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Run{}, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("load run %s: %w", runID, err)
	}
	return r, true, nil
}

func saveRun(ctx context.Context, c *sql.Conn, r store.Run, exists bool) error {
	rejected, err := json.Marshal(nonNil(r.Rejected))
	if err != nil {
		return err
	}
	history, err := json.Marshal(r.History)
	if err != nil {
		return err
	}
	args := []any{r.Ingestion, r.Type, r.Date, r.Trigger, r.Fence, r.Status, r.ExtractID, r.Extracted,
		r.Mapped, string(rejected), r.ErrorCategory, r.ErrorMessage, r.Message, string(history),
		r.CreatedAt, r.UpdatedAt, r.Project, r.RunID}
	if exists {
		_, err = c.ExecContext(ctx, `UPDATE runs SET ingestion = ?, type = ?, ds = ?, trigger = ?, fence = ?,
			status = ?, extract_id = ?, extracted = ?, mapped = ?, rejected = ?, error_category = ?,
			error_message = ?, message = ?, history = ?, created_at = ?, updated_at = ?
			WHERE project = ? AND run_id = ?`, args...)
	} else {
		_, err = c.ExecContext(ctx, `INSERT INTO runs (ingestion, type, ds, trigger, fence, status, extract_id,
			extracted, mapped, rejected, error_category, error_message, message, history, created_at,
			updated_at, project, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
	}
	if err != nil {
		return fmt.Errorf("save run %s: %w", r.RunID, err)
	}
	return nil
}
