package extractor

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// progress is where one run's extraction stands, between attempts and,
// through the run's checkpoint in the store, between extractors: its
// extract id and, once a batch of a resumable source is acknowledged, the
// cursor after the last one with the batches (seq) and rows before it.
type progress struct {
	extractID     string
	from          *warehouse.Cursor // nil: from the start
	seq, rows     int64
	fingerprint   string
	fingerprinted bool // taken once per extract id, before its first row
}

// advance moves p to checkpoint cp when cp is further on.
func (p *progress) advance(cp store.Checkpoint) {
	if cp.ExtractID != p.extractID || cp.NextSeq <= p.seq || cp.Token == "" {
		return
	}
	p.from = &warehouse.Cursor{Token: cp.Token, Position: cp.Position}
	p.seq, p.rows = cp.NextSeq, cp.Rows
}

// resumeFrom is where req's day starts: at its run's checkpoint when the
// source is resumable and one exists (a crashed or revoked extraction),
// otherwise from the start. A checkpoint that cannot be read only costs a
// fresh extraction.
func (s *Service) resumeFrom(ctx context.Context, req schemas.IngestRequest, conn config.Connection, log *slog.Logger) progress {
	src, err := s.deps.Sources.Source(ctx, conn.Name)
	if err != nil {
		return progress{} // extract reports it
	}
	if _, ok := src.(warehouse.Resumable); !ok {
		return progress{}
	}
	cp, err := s.deps.Store.Checkpoint(ctx, req.Project, req.RunID)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			log.Warn("read the run's checkpoint; extracting the day from the start", "err", err)
		}
		return progress{}
	}
	log.Info("resuming the day from its checkpoint", "extract_id", cp.ExtractID, "seq", cp.NextSeq, "rows", cp.Rows)
	return progress{
		extractID: cp.ExtractID, from: &warehouse.Cursor{Token: cp.Token, Position: cp.Position},
		seq: cp.NextSeq, rows: cp.Rows, fingerprint: cp.Fingerprint, fingerprinted: true,
	}
}

// dropCheckpoint removes req's run's checkpoint; best effort, since a
// stale checkpoint is either never read (the run is past its extraction)
// or answers ErrCursorExpired.
func (s *Service) dropCheckpoint(ctx context.Context, req schemas.IngestRequest, log *slog.Logger) {
	if err := s.deps.Store.DeleteCheckpoint(ctx, req.Project, req.RunID); err != nil {
		log.Warn("delete the run's checkpoint", "err", err)
	}
}

// checkpoints keeps one extraction's last acknowledged batch as its run's
// checkpoint. Acknowledgements come in produce order (one day key, one
// partition), and only the next batch in sequence counts, so a checkpoint
// never names a batch whose predecessor failed.
//
// Cost: at most one small upsert per acknowledged batch (BatchRows rows,
// 2,000 by default), and fewer when the store is slower than the broker:
// acknowledgements that arrive during a write coalesce into the next one.
// That is far less than the loader writes for the same rows, and it never
// holds up the stream: acknowledging only records, one goroutine writes.
// A crash re-sends at most the batches acknowledged during one write.
type checkpoints struct {
	store store.Store
	clock func() time.Time
	log   *slog.Logger

	mu     sync.Mutex
	latest store.Checkpoint
	saved  int64 // NextSeq of the last checkpoint written

	wake    chan struct{}
	quit    chan struct{}
	stopped chan struct{}
}

// startCheckpoints starts the writer of an extraction that stands at base.
func (s *Service) startCheckpoints(ctx context.Context, base store.Checkpoint) *checkpoints {
	c := &checkpoints{
		store: s.deps.Store, clock: s.deps.Clock,
		log:    s.deps.Logger.With("run_id", base.RunID, "project", base.Project, "extract_id", base.ExtractID),
		latest: base, saved: base.NextSeq,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), stopped: make(chan struct{}),
	}
	go func() {
		defer close(c.stopped)
		for {
			select {
			case <-c.wake:
				c.save(ctx)
			case <-c.quit:
				return
			}
		}
	}()
	return c
}

// acked records that the batches before nextSeq, holding rows rows, are
// acknowledged and the result continues at next. It never blocks.
func (c *checkpoints) acked(nextSeq, rows int64, next warehouse.Cursor) {
	c.mu.Lock()
	if nextSeq != c.latest.NextSeq+1 {
		c.mu.Unlock()
		return
	}
	c.latest.NextSeq, c.latest.Rows = nextSeq, rows
	c.latest.Token, c.latest.Position = next.Token, next.Position
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// save writes the latest checkpoint if it moved since the last write.
func (c *checkpoints) save(ctx context.Context) {
	c.mu.Lock()
	cp := c.latest
	due := cp.NextSeq > c.saved
	c.mu.Unlock()
	if !due {
		return
	}
	cp.At = c.clock()
	if err := c.store.SaveCheckpoint(ctx, cp); err != nil {
		if ctx.Err() == nil {
			c.log.Warn("save extraction checkpoint", "seq", cp.NextSeq, "err", err)
		}
		return
	}
	c.mu.Lock()
	c.saved = max(c.saved, cp.NextSeq)
	c.mu.Unlock()
}

// close stops the writer, writes the last acknowledged checkpoint (within
// 5 s, even when the extraction was cancelled: a revoked partition's new
// owner resumes from it) and returns it.
func (c *checkpoints) close() store.Checkpoint {
	close(c.quit)
	<-c.stopped
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.save(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.latest
}
