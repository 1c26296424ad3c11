package snowflake

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
	"github.com/sluicehq/sluice/pkg/warehouse/warehousetest"
)

// streamed is one batch as StreamFrom emitted it: its IDs and the cursor
// after it.
type streamed struct {
	ids  []int64
	next warehouse.Cursor
}

func streamFrom(tb testing.TB, src *Source, from *warehouse.Cursor, batchRows int) ([]streamed, error) {
	tb.Helper()
	var out []streamed
	_, err := src.StreamFrom(context.Background(), bigQuery, day, batchRows, from, func(b *warehouse.Batch, next warehouse.Cursor) error {
		out = append(out, streamed{ids: slices.Clone(b.Columns[0].Longs), next: next})
		return nil
	})
	return out, err
}

// dayQueries counts the queries of the day's rows the server ran (Open
// pings with SELECT 1).
func dayQueries(srv *sftest.Server) int {
	n := 0
	for _, q := range srv.Queries() {
		if strings.Contains(q.SQL, "FROM big") {
			n++
		}
	}
	return n
}

// A day whose chunk URLs expire, or whose download dies part-way, while it
// streams finishes on its one query, in either result format: the result
// is fetched again by query id (fresh URLs) and the stream continues at
// the failed chunk (Arrow) or after the rows already read (JSON).
func TestChunkFailuresMidDayFinishOnOneQuery(t *testing.T) {
	t.Parallel()
	arrow, json := sftest.FormatArrow, sftest.FormatJSON
	tests := []struct {
		format, name string
		inject       func(*sftest.Server)
		// afterFirstBatch injects once the query answered and the first
		// batch is out, else before the query runs.
		afterFirstBatch bool
		check           func(sftest.Stats) bool
	}{
		// Arrow fetches one chunk at a time: exactly one download fails.
		{arrow, "urls expire after 3 chunks", func(s *sftest.Server) { s.ExpireChunkURLsAfter(3) }, false,
			func(st sftest.Stats) bool { return st.ExpiredChunks == 1 && st.StatusChecks > 0 }},
		{arrow, "urls expire now", func(s *sftest.Server) { s.ExpireChunkURLs() }, true,
			func(st sftest.Stats) bool { return st.ExpiredChunks == 1 && st.StatusChecks > 0 }},
		{arrow, "download cut part-way", func(s *sftest.Server) { s.CutChunkDownloads(2) }, false,
			func(st sftest.Stats) bool { return st.CutChunks == 2 && st.StatusChecks > 0 }},
		// The JSON driver downloads up to 4 chunks ahead in parallel (so a
		// URL expiring "now" may already be used: no such case), several
		// fail at once, and it retries a cut download itself.
		{json, "urls expire after 3 chunks", func(s *sftest.Server) { s.ExpireChunkURLsAfter(3) }, false,
			func(st sftest.Stats) bool { return st.ExpiredChunks > 0 && st.StatusChecks > 0 }},
		{json, "download cut part-way", func(s *sftest.Server) { s.CutChunkDownloads(2) }, false,
			func(st sftest.Stats) bool { return st.CutChunks == 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.format+" "+tt.name, func(t *testing.T) {
			t.Parallel()
			srv, cfg := newServer(t)
			srv.SetFormat(tt.format)
			srv.SetChunkRows(100) // inline rowset + 9 chunks
			addTable(t, srv, bigTable(1000))
			src := open(t, cfg)
			if !tt.afterFirstBatch {
				tt.inject(srv)
			}
			var ids []int64
			_, err := src.StreamFrom(context.Background(), bigQuery, day, 150, nil, func(b *warehouse.Batch, _ warehouse.Cursor) error {
				if tt.afterFirstBatch && len(ids) == 0 {
					tt.inject(srv)
				}
				ids = append(ids, b.Columns[0].Longs...)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for i, id := range ids {
				if id != int64(i) {
					t.Fatalf("row %d has ID %d (of %d rows): rows lost or repeated", i, id, len(ids))
				}
			}
			st := srv.Stats()
			if len(ids) != 1000 || dayQueries(srv) != 1 || !tt.check(st) {
				t.Fatalf("%d rows, stats %+v; want 1000 rows on one query, the fault seen, the result fetched by id", len(ids), st)
			}
		})
	}
}

// The Resumable contract, on both result formats: batches of 150 span
// result chunks of 200 rows.
func TestResume(t *testing.T) {
	t.Parallel()
	for _, format := range []string{sftest.FormatArrow, sftest.FormatJSON} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			srv, cfg := newServer(t)
			srv.SetFormat(format)
			srv.SetChunkRows(200)
			addTable(t, srv, bigTable(1000))
			warehousetest.RunResume(t, warehousetest.ResumeHarness{
				Open:        func(tb testing.TB) warehouse.Resumable { return open(tb, cfg) },
				Query:       bigQuery,
				Day:         day,
				BatchRows:   150,
				Executed:    func() int { return dayQueries(srv) },
				ExpireLinks: srv.ExpireChunkURLs,
				Expire:      srv.ForgetResults,
			})
		})
	}
}

// Positions past the result, or in another format's terms, are
// ErrCursorExpired: the cursor cannot be of this result, so the day
// starts over rather than failing.
func TestStreamFromForeignPosition(t *testing.T) {
	t.Parallel()
	srv, cfg := newServer(t)
	srv.SetChunkRows(100)
	addTable(t, srv, bigTable(500))
	src := open(t, cfg)
	all, err := streamFrom(t, src, nil, 100)
	if err != nil || len(all) != 5 {
		t.Fatalf("%d batches, %v", len(all), err)
	}
	token := all[1].next.Token
	for _, position := range []string{"arrow:99:0", "arrow:1", "rows:-1", "page 7"} {
		c := warehouse.Cursor{Token: token, Position: position}
		if got, err := streamFrom(t, src, &c, 100); !errors.Is(err, warehouse.ErrCursorExpired) || len(got) != 0 {
			t.Errorf("cursor %+v: %d batches, %v; want none and ErrCursorExpired", c, len(got), err)
		}
	}
	if q := dayQueries(srv); q != 1 {
		t.Fatalf("%d queries, want 1: a bad cursor runs no query", q)
	}
}
