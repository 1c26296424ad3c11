package duckdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/pkg/store"
)

// checkpointDDL is the table of resumable extractions' checkpoints, one
// row per run.
const checkpointDDL = `
CREATE TABLE IF NOT EXISTS extract_checkpoints (
	project     VARCHAR NOT NULL,
	run_id      VARCHAR NOT NULL,
	extract_id  VARCHAR NOT NULL,
	token       VARCHAR NOT NULL,
	position    VARCHAR NOT NULL,
	next_seq    BIGINT NOT NULL,
	rows        BIGINT NOT NULL,
	fingerprint VARCHAR NOT NULL,
	updated_at  TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (project, run_id)
);
`

// SaveCheckpoint replaces the run's checkpoint.
func (s *Store) SaveCheckpoint(ctx context.Context, cp store.Checkpoint) error {
	err := s.write(ctx, func(c *sql.Conn) error {
		_, err := c.ExecContext(ctx, `INSERT OR REPLACE INTO extract_checkpoints
			(project, run_id, extract_id, token, position, next_seq, rows, fingerprint, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			cp.Project, cp.RunID, cp.ExtractID, cp.Token, cp.Position, cp.NextSeq, cp.Rows, cp.Fingerprint, s.At(cp.At))
		return err
	})
	if err != nil {
		return fmt.Errorf("save checkpoint of run %s at batch %d: %w", cp.RunID, cp.NextSeq, err)
	}
	return nil
}

// Checkpoint returns the run's checkpoint.
func (s *Store) Checkpoint(ctx context.Context, project, runID string) (store.Checkpoint, error) {
	cp := store.Checkpoint{Project: project, RunID: runID}
	err := s.db.QueryRowContext(ctx, `SELECT extract_id, token, position, next_seq, rows, fingerprint, updated_at
		FROM extract_checkpoints WHERE project = ? AND run_id = ?`, project, runID).
		Scan(&cp.ExtractID, &cp.Token, &cp.Position, &cp.NextSeq, &cp.Rows, &cp.Fingerprint, &cp.At)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Checkpoint{}, store.ErrNotFound
	}
	if err != nil {
		return store.Checkpoint{}, fmt.Errorf("read checkpoint of run %s: %w", runID, err)
	}
	cp.At = cp.At.UTC()
	return cp, nil
}

// DeleteCheckpoint drops the run's checkpoint.
func (s *Store) DeleteCheckpoint(ctx context.Context, project, runID string) error {
	err := s.write(ctx, func(c *sql.Conn) error {
		_, err := c.ExecContext(ctx, `DELETE FROM extract_checkpoints WHERE project = ? AND run_id = ?`, project, runID)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete checkpoint of run %s: %w", runID, err)
	}
	return nil
}
