package duckdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	duckdbdrv "github.com/duckdb/duckdb-go/v2"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// StageBatches appends the rows of new ROWS batches, tagged with their
// extraction, and their rejected rows, in one transaction. Batches staged before, and batches of an
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
			if state == store.ExtractionStaging {
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
		if err := appendRejects(c, fresh); err != nil {
			return err
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

// appendRejects keeps the rejected rows of bs, the batches not staged before.
func appendRejects(c *sql.Conn, bs []*schemas.MappedBatch) error {
	n := 0
	for _, b := range bs {
		n += len(b.RejectedRows)
	}
	if n == 0 {
		return nil
	}
	err := appender(c, "rejected_rows", func(a *duckdbdrv.Appender) error {
		for _, b := range bs {
			for _, r := range b.RejectedRows {
				v, err := store.EncodeValues(r.Values)
				if err != nil {
					return err
				}
				if err := a.AppendRow(b.Project, b.ExtractID, r.Position, r.Reason, r.Detail, v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append %d rejected rows: %w", n, err)
	}
	return nil
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
func (s *Store) extraction(ctx context.Context, c *sql.Conn, extractID, runID, project, ingestion, date, typ string, fence int64, now time.Time) (int64, store.ExtractionState, error) {
	var xid int64
	var state store.ExtractionState
	err := c.QueryRowContext(ctx, `SELECT xid, state FROM extractions WHERE extract_id = ?`, extractID).Scan(&xid, &state)
	if err == nil {
		return xid, state, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, "", fmt.Errorf("look up extraction %s: %w", extractID, err)
	}
	err = c.QueryRowContext(ctx, `INSERT INTO extractions VALUES (nextval('xid_seq'), ?, ?, ?, ?, CAST(? AS DATE), ?, ?, ?, ?) RETURNING xid`,
		extractID, runID, project, ingestion, date, typ, fence, store.ExtractionStaging, now).Scan(&xid)
	if err != nil {
		return 0, "", fmt.Errorf("register extraction %s: %w", extractID, err)
	}
	return xid, store.ExtractionStaging, nil
}
