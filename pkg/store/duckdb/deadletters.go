package duckdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// DueDeadLetters lists runs whose dead letters are due; see store.Store.
func (s *Store) DueDeadLetters(ctx context.Context, f store.DeadLetterFilter) ([]store.Run, error) {
	var before any
	if !f.DecidedBefore.IsZero() {
		before = f.DecidedBefore
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+runColumns+` FROM runs
		WHERE dead_letters_state = 'due' AND (CAST(? AS TIMESTAMPTZ) IS NULL OR updated_at < ?)
		ORDER BY updated_at, run_id LIMIT ?`, before, before, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("list due dead letters: %w", err)
	}
	defer rows.Close()
	var runs []store.Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list due dead letters: %w", err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list due dead letters: %w", err)
	}
	return runs, nil
}

// RunRejects pages the rejected rows of the run's deciding extraction.
func (s *Store) RunRejects(ctx context.Context, project, runID string, after int64, limit int) ([]schemas.RejectedRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT j.position, j.reason, j.detail, j.row_values
		FROM runs r JOIN rejected_rows j ON j.project = r.project AND j.extract_id = r.extract_id
		WHERE r.project = ? AND r.run_id = ? AND r.extract_id <> '' AND j.position > ?
		ORDER BY j.position LIMIT ?`, project, runID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read rejected rows of run %s: %w", runID, err)
	}
	defer rows.Close()
	var out []schemas.RejectedRow
	for rows.Next() {
		var r schemas.RejectedRow
		var values string
		if err := rows.Scan(&r.Position, &r.Reason, &r.Detail, &values); err != nil {
			return nil, fmt.Errorf("read rejected rows of run %s: %w", runID, err)
		}
		if r.Values, err = store.DecodeValues([]byte(values)); err != nil {
			return nil, fmt.Errorf("read rejected rows of run %s: %w", runID, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read rejected rows of run %s: %w", runID, err)
	}
	return out, nil
}

// MarkDeadLettersPublished ends a run's dead letters and deletes its
// rejected rows, in one transaction.
func (s *Store) MarkDeadLettersPublished(ctx context.Context, project, runID string, at time.Time) error {
	err := s.write(ctx, func(c *sql.Conn) error {
		var extractID string
		err := c.QueryRowContext(ctx, `UPDATE runs SET dead_letters_state = 'published', dead_letters_at = ?
			WHERE project = ? AND run_id = ? AND dead_letters_state = 'due' RETURNING extract_id`,
			at, project, runID).Scan(&extractID)
		if errors.Is(err, sql.ErrNoRows) {
			return errNothing
		}
		if err != nil {
			return err
		}
		_, err = c.ExecContext(ctx, `DELETE FROM rejected_rows WHERE project = ? AND extract_id = ?`, project, extractID)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark dead letters of run %s of %s published: %w", runID, project, err)
	}
	return nil
}
