package postgres

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/pkg/store"
)

// checkpointDDL is the table of resumable extractions' checkpoints, one
// row per run.
const checkpointDDL = `
CREATE TABLE IF NOT EXISTS {s}.extract_checkpoints (
	project     text NOT NULL,
	run_id      text NOT NULL,
	extract_id  text NOT NULL,
	token       text NOT NULL,
	position    text NOT NULL,
	next_seq    bigint NOT NULL,
	rows        bigint NOT NULL,
	fingerprint text NOT NULL,
	updated_at  timestamptz NOT NULL,
	PRIMARY KEY (project, run_id)
);
`

// SaveCheckpoint replaces the run's checkpoint.
func (s *Store) SaveCheckpoint(ctx context.Context, cp store.Checkpoint) error {
	_, err := s.pool.Exec(ctx, s.q(`INSERT INTO {s}.extract_checkpoints
		(project, run_id, extract_id, token, position, next_seq, rows, fingerprint, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (project, run_id) DO UPDATE SET extract_id = excluded.extract_id, token = excluded.token,
			position = excluded.position, next_seq = excluded.next_seq, rows = excluded.rows,
			fingerprint = excluded.fingerprint, updated_at = excluded.updated_at`),
		cp.Project, cp.RunID, cp.ExtractID, cp.Token, cp.Position, cp.NextSeq, cp.Rows, cp.Fingerprint, s.At(cp.At))
	if err != nil {
		return fmt.Errorf("save checkpoint of run %s at batch %d: %w", cp.RunID, cp.NextSeq, err)
	}
	return nil
}

// Checkpoint returns the run's checkpoint.
func (s *Store) Checkpoint(ctx context.Context, project, runID string) (store.Checkpoint, error) {
	cp := store.Checkpoint{Project: project, RunID: runID}
	err := s.pool.QueryRow(ctx, s.q(`SELECT extract_id, token, position, next_seq, rows, fingerprint, updated_at
		FROM {s}.extract_checkpoints WHERE project = $1 AND run_id = $2`), project, runID).
		Scan(&cp.ExtractID, &cp.Token, &cp.Position, &cp.NextSeq, &cp.Rows, &cp.Fingerprint, &cp.At)
	if isNoRows(err) {
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
	_, err := s.pool.Exec(ctx, s.q(`DELETE FROM {s}.extract_checkpoints WHERE project = $1 AND run_id = $2`), project, runID)
	if err != nil {
		return fmt.Errorf("delete checkpoint of run %s: %w", runID, err)
	}
	return nil
}
