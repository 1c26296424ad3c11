package store

import (
	"context"
	"time"
)

// Checkpoint is how far a run's resumable extraction got: its batches
// before NextSeq, holding Rows rows, are acknowledged on raw-rows, and the
// warehouse's kept result continues at Token and Position (a
// warehouse.Cursor, opaque here). Fingerprint is the one the extraction
// took before its rows, so a resumed END carries the same baseline.
type Checkpoint struct {
	Project     string
	RunID       string
	ExtractID   string
	Token       string
	Position    string
	NextSeq     int64
	Rows        int64
	Fingerprint string
	At          time.Time
}

// Checkpoints keep resumable extractions' progress with their runs, so an
// extractor that crashed, or lost its partition, continues a day from its
// last durable batch instead of running the query again.
type Checkpoints interface {
	// SaveCheckpoint makes c its run's checkpoint, replacing the one
	// before. Any checkpoint of a run is safe to resume from: it only
	// names batches already acknowledged.
	SaveCheckpoint(ctx context.Context, c Checkpoint) error
	// Checkpoint returns the run's checkpoint, ErrNotFound when it has none.
	Checkpoint(ctx context.Context, project, runID string) (Checkpoint, error)
	// DeleteCheckpoint drops the run's checkpoint; a run without one is
	// no error.
	DeleteCheckpoint(ctx context.Context, project, runID string) error
}
