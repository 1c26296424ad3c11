package postgres

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// StageBatches writes the rows of new ROWS batches by binary COPY, tagged
// with their extraction, and their rejected rows, in one transaction.
// Batches staged before, and batches of an extraction that already
// completed, failed or went stale, are skipped. Other kinds (END, FAILED)
// carry no rows and are ignored.
func (s *Store) StageBatches(ctx context.Context, batches []*schemas.MappedBatch) error {
	bs := store.StageableBatches(batches)
	if len(bs) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		xids, err := s.lockExtractions(ctx, tx, bs)
		if err != nil {
			return err
		}
		fresh, err := s.claimBatches(ctx, tx, bs, xids)
		if err != nil {
			return err
		}
		if err := s.stageRejects(ctx, tx, fresh); err != nil {
			return err
		}
		return s.copyRows(ctx, tx, fresh, xids)
	})
	if err != nil {
		return fmt.Errorf("stage %d batches of %s: %w", len(bs), bs[0].ExtractID, err)
	}
	return nil
}

// lockExtractions registers each extraction of bs on first sight and takes
// a share lock on it, so CompleteRun (which locks it exclusively) cannot
// finish or discard the extraction while these batches are being written.
// Extractions no longer staging are left out of the result.
func (s *Store) lockExtractions(ctx context.Context, tx pgx.Tx, bs []*schemas.MappedBatch) (map[string]int64, error) {
	xids := make(map[string]int64)
	seen := make(map[string]bool)
	now := s.now().UTC()
	for _, b := range bs {
		if seen[b.ExtractID] {
			continue
		}
		seen[b.ExtractID] = true
		xid, state, err := s.extraction(ctx, tx, b.ExtractID, b.RunID, b.Project, b.Ingestion, b.Date, b.Type, b.Fence, now, "FOR SHARE")
		if err != nil {
			return nil, err
		}
		if state == store.ExtractionStaging {
			xids[b.ExtractID] = xid
		}
	}
	return xids, nil
}

// extraction upserts and locks one extraction row.
func (s *Store) extraction(ctx context.Context, tx pgx.Tx, extractID, runID, project, ingestion, date, typ string, fence int64, now time.Time, lock string) (int64, store.ExtractionState, error) {
	if _, err := tx.Exec(ctx, s.q(`INSERT INTO {s}.extractions (extract_id, run_id, project, ingestion, ds, type, fence, created_at)
		VALUES ($1, $2, $3, $4, $5::date, $6, $7, $8) ON CONFLICT (extract_id) DO NOTHING`),
		extractID, runID, project, ingestion, date, typ, fence, now); err != nil {
		return 0, "", fmt.Errorf("register extraction %s: %w", extractID, err)
	}
	var xid int64
	var state store.ExtractionState
	if err := tx.QueryRow(ctx, s.q(`SELECT xid, state FROM {s}.extractions WHERE extract_id = $1 `+lock), extractID).Scan(&xid, &state); err != nil {
		return 0, "", fmt.Errorf("lock extraction %s: %w", extractID, err)
	}
	return xid, state, nil
}

// claimBatches records the batches and returns those not staged before.
func (s *Store) claimBatches(ctx context.Context, tx pgx.Tx, bs []*schemas.MappedBatch, xids map[string]int64) ([]*schemas.MappedBatch, error) {
	var (
		xs, seqs, counts, mapped []int64
		rejected                 []string
	)
	for _, b := range bs {
		xid, ok := xids[b.ExtractID]
		if !ok {
			continue
		}
		rj, err := json.Marshal(store.BatchRejected(b))
		if err != nil {
			return nil, fmt.Errorf("encode rejected counts: %w", err)
		}
		xs = append(xs, xid)
		seqs = append(seqs, b.Seq)
		counts = append(counts, b.RowCount)
		mapped = append(mapped, store.BatchMapped(b))
		rejected = append(rejected, string(rj))
	}
	if len(xs) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, s.q(`INSERT INTO {s}.batches (xid, seq, row_count, mapped, rejected)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[]::jsonb[])
		ON CONFLICT DO NOTHING RETURNING xid, seq`), xs, seqs, counts, mapped, rejected)
	if err != nil {
		return nil, fmt.Errorf("record batches: %w", err)
	}
	type key struct{ xid, seq int64 }
	claimed := make(map[key]bool, len(xs))
	var k key
	_, err = pgx.ForEachRow(rows, []any{&k.xid, &k.seq}, func() error {
		claimed[k] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record batches: %w", err)
	}
	fresh := make([]*schemas.MappedBatch, 0, len(claimed))
	for _, b := range bs {
		if xid, ok := xids[b.ExtractID]; ok && claimed[key{xid, b.Seq}] {
			fresh = append(fresh, b)
		}
	}
	return fresh, nil
}

// stageRejects keeps the rejected rows of bs, the batches just claimed.
func (s *Store) stageRejects(ctx context.Context, tx pgx.Tx, bs []*schemas.MappedBatch) error {
	var (
		projects, extracts, reasons, details, values []string
		positions                                    []int64
	)
	for _, b := range bs {
		for _, r := range b.RejectedRows {
			v, err := store.EncodeValues(r.Values)
			if err != nil {
				return err
			}
			projects, extracts, positions = append(projects, b.Project), append(extracts, b.ExtractID), append(positions, r.Position)
			reasons, details, values = append(reasons, r.Reason), append(details, r.Detail), append(values, v)
		}
	}
	if len(positions) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, s.q(`INSERT INTO {s}.rejected_rows (project, extract_id, position, reason, detail, row_values)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]::jsonb[])
		ON CONFLICT DO NOTHING`), projects, extracts, positions, reasons, details, values); err != nil {
		return fmt.Errorf("stage %d rejected rows: %w", len(positions), err)
	}
	return nil
}

func (s *Store) copyRows(ctx context.Context, tx pgx.Tx, bs []*schemas.MappedBatch, xids map[string]int64) error {
	var events, metrics int
	for _, b := range bs {
		events += len(b.Events)
		metrics += len(b.Metrics)
	}
	if events > 0 {
		src, err := newCopySource(bs, xids, false)
		if err != nil {
			return err
		}
		if _, err := tx.Conn().PgConn().CopyFrom(ctx, src, s.q(`COPY {s}.events
			(xid, project, ingestion, ds, position, event_name, event_value, time, unit_ids, metadata)
			FROM STDIN (FORMAT binary)`)); err != nil {
			return fmt.Errorf("copy %d events: %w", events, err)
		}
	}
	if metrics > 0 {
		src, err := newCopySource(bs, xids, true)
		if err != nil {
			return err
		}
		if _, err := tx.Conn().PgConn().CopyFrom(ctx, src, s.q(`COPY {s}.metrics
			(xid, project, ingestion, ds, position, unit_id, id_type, metric_name, metric_value, is_ratio, numerator, denominator)
			FROM STDIN (FORMAT binary)`)); err != nil {
			return fmt.Errorf("copy %d metrics: %w", metrics, err)
		}
	}
	return nil
}

// copySource encodes the records of batches in PostgreSQL's binary COPY
// format as the connection reads them: one reused buffer, no per-row
// allocation.
type copySource struct {
	batches []*schemas.MappedBatch
	xids    []int64
	days    []int32
	metrics bool

	bi, ri  int // next batch and row
	started bool
	done    bool
	buf     []byte
	off     int
}

const copyChunk = 256 << 10

// Days between the Unix epoch and PostgreSQL's (2000-01-01).
const pgEpochDays = 10957

const pgEpochMicros = pgEpochDays * 86400 * 1_000_000

func newCopySource(bs []*schemas.MappedBatch, xids map[string]int64, metrics bool) (*copySource, error) {
	c := &copySource{batches: bs, metrics: metrics, buf: make([]byte, 0, copyChunk+4096)}
	for _, b := range bs {
		d, err := time.Parse(time.DateOnly, b.Date)
		if err != nil {
			return nil, fmt.Errorf("batch %s/%d: date %q: %w", b.ExtractID, b.Seq, b.Date, err)
		}
		c.xids = append(c.xids, xids[b.ExtractID])
		c.days = append(c.days, int32(d.Unix()/86400-pgEpochDays))
	}
	return c, nil
}

func (c *copySource) Read(p []byte) (int, error) {
	if c.off == len(c.buf) {
		c.buf, c.off = c.buf[:0], 0
		c.fill()
		if len(c.buf) == 0 {
			return 0, io.EOF
		}
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

// fill encodes rows until the buffer holds a chunk or the rows run out.
func (c *copySource) fill() {
	if c.done {
		return
	}
	if !c.started {
		c.started = true
		c.buf = append(c.buf, "PGCOPY\n\xff\r\n\x00"...)
		c.buf = binary.BigEndian.AppendUint32(c.buf, 0) // flags
		c.buf = binary.BigEndian.AppendUint32(c.buf, 0) // header extension
	}
	for len(c.buf) < copyChunk {
		if c.bi == len(c.batches) {
			c.buf = binary.BigEndian.AppendUint16(c.buf, 0xffff) // trailer
			c.done = true
			return
		}
		b := c.batches[c.bi]
		n := len(b.Events)
		if c.metrics {
			n = len(b.Metrics)
		}
		if c.ri >= n {
			c.bi, c.ri = c.bi+1, 0
			continue
		}
		if c.metrics {
			c.appendMetric(b, &b.Metrics[c.ri])
		} else {
			c.appendEvent(b, &b.Events[c.ri])
		}
		c.ri++
	}
}

func (c *copySource) appendEvent(b *schemas.MappedBatch, e *schemas.Event) {
	buf := binary.BigEndian.AppendUint16(c.buf, 10)
	buf = appendInt8(buf, c.xids[c.bi])
	buf = appendText(buf, b.Project)
	buf = appendText(buf, b.Ingestion)
	buf = appendDate(buf, c.days[c.bi])
	buf = appendInt8(buf, e.Position)
	buf = appendText(buf, e.EventName)
	buf = appendText(buf, e.EventValue)
	buf = appendInt8(buf, e.TimeMs*1000-pgEpochMicros)
	// jsonb: a length we patch once the value is written, version 1, text.
	at := len(buf)
	buf = append(buf, 0, 0, 0, 0, 1)
	buf = store.AppendUnitIDs(buf, e.UnitIDs)
	binary.BigEndian.PutUint32(buf[at:], uint32(len(buf)-at-4))
	at = len(buf)
	buf = append(buf, 0, 0, 0, 0, 1)
	buf = store.AppendMetadata(buf, e.MetadataJSON)
	binary.BigEndian.PutUint32(buf[at:], uint32(len(buf)-at-4))
	c.buf = buf
}

func (c *copySource) appendMetric(b *schemas.MappedBatch, m *schemas.Metric) {
	buf := binary.BigEndian.AppendUint16(c.buf, 12)
	buf = appendInt8(buf, c.xids[c.bi])
	buf = appendText(buf, b.Project)
	buf = appendText(buf, b.Ingestion)
	buf = appendDate(buf, c.days[c.bi])
	buf = appendInt8(buf, m.Position)
	buf = appendText(buf, m.UnitID)
	buf = appendText(buf, m.IDType)
	buf = appendText(buf, m.MetricName)
	buf = appendFloat8(buf, m.MetricValue)
	buf = binary.BigEndian.AppendUint32(buf, 1)
	if m.IsRatio {
		buf = append(buf, 1)
	} else {
		buf = append(buf, 0)
	}
	buf = appendFloat8(buf, m.Numerator)
	buf = appendFloat8(buf, m.Denominator)
	c.buf = buf
}

func appendInt8(buf []byte, v int64) []byte {
	buf = binary.BigEndian.AppendUint32(buf, 8)
	return binary.BigEndian.AppendUint64(buf, uint64(v))
}

func appendFloat8(buf []byte, v float64) []byte {
	buf = binary.BigEndian.AppendUint32(buf, 8)
	return binary.BigEndian.AppendUint64(buf, math.Float64bits(v))
}

func appendDate(buf []byte, days int32) []byte {
	buf = binary.BigEndian.AppendUint32(buf, 4)
	return binary.BigEndian.AppendUint32(buf, uint32(days))
}

func appendText(buf []byte, s string) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
	return append(buf, s...)
}
