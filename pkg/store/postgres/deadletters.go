package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// DueDeadLetters lists runs whose dead letters are due; see store.Store.
func (s *Store) DueDeadLetters(ctx context.Context, f store.DeadLetterFilter) ([]store.Run, error) {
	var before *time.Time
	if !f.DecidedBefore.IsZero() {
		before = &f.DecidedBefore
	}
	rows, err := s.pool.Query(ctx, s.q(`SELECT `+runColumns+` FROM {s}.runs
		WHERE dead_letters_state = 'due' AND ($1::timestamptz IS NULL OR updated_at < $1)
		ORDER BY updated_at, run_id LIMIT $2`), before, f.Limit)
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
	rows, err := s.pool.Query(ctx, s.q(`SELECT j.position, j.reason, j.detail, j.row_values::text
		FROM {s}.runs r JOIN {s}.rejected_rows j ON j.project = r.project AND j.extract_id = r.extract_id
		WHERE r.project = $1 AND r.run_id = $2 AND r.extract_id <> '' AND j.position > $3
		ORDER BY j.position LIMIT $4`), project, runID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read rejected rows of run %s: %w", runID, err)
	}
	var out []schemas.RejectedRow
	var r schemas.RejectedRow
	var values []byte
	_, err = pgx.ForEachRow(rows, []any{&r.Position, &r.Reason, &r.Detail, &values}, func() error {
		v, err := store.DecodeValues(values)
		if err != nil {
			return err
		}
		r.Values = v
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read rejected rows of run %s: %w", runID, err)
	}
	return out, nil
}

// MarkDeadLettersPublished ends a run's dead letters and deletes its
// rejected rows, in one transaction.
func (s *Store) MarkDeadLettersPublished(ctx context.Context, project, runID string, at time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var extractID string
		err := tx.QueryRow(ctx, s.q(`UPDATE {s}.runs SET dead_letters_state = 'published', dead_letters_at = $3
			WHERE project = $1 AND run_id = $2 AND dead_letters_state = 'due' RETURNING extract_id`),
			project, runID, at).Scan(&extractID)
		if isNoRows(err) {
			return nil
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, s.q(`DELETE FROM {s}.rejected_rows WHERE project = $1 AND extract_id = $2`), project, extractID)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark dead letters of run %s of %s published: %w", runID, project, err)
	}
	return nil
}
