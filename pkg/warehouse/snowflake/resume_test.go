package snowflake

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
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
// streams finishes on its one query: the result is fetched again by query
// id (fresh URLs) and the stream continues at the failed chunk.
func TestChunkFailuresMidDayFinishOnOneQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		inject func(*sftest.Server)
		check  func(sftest.Stats) bool
	}{
		{"urls expire after 3 chunks", func(s *sftest.Server) { s.ExpireChunkURLsAfter(3) }, func(st sftest.Stats) bool { return st.ExpiredChunks == 1 }},
		{"urls expire now", func(s *sftest.Server) { s.ExpireChunkURLs() }, func(st sftest.Stats) bool { return st.ExpiredChunks == 1 }},
		{"download cut part-way", func(s *sftest.Server) { s.CutChunkDownloads(2) }, func(st sftest.Stats) bool { return st.CutChunks == 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, cfg := newServer(t)
			srv.SetChunkRows(100) // inline rowset + 9 chunks
			addTable(t, srv, bigTable(1000))
			src := open(t, cfg)
			var ids []int64
			first := true
			_, err := src.StreamFrom(context.Background(), bigQuery, day, 150, nil, func(b *warehouse.Batch, _ warehouse.Cursor) error {
				if first {
					tt.inject(srv) // after the query answered: its URLs are out
					first = false
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
			if len(ids) != 1000 || dayQueries(srv) != 1 || !tt.check(st) || st.StatusChecks == 0 {
				t.Fatalf("%d rows, stats %+v; want 1000 rows on one query, the fault seen, the result fetched by id", len(ids), st)
			}
		})
	}
}

// StreamFrom at any batch's cursor emits exactly the batches that followed
// it, without running the query again: what a resumed extraction re-sends
// must be identical to what the loader may already have staged.
func TestStreamFromReproducesTheRest(t *testing.T) {
	t.Parallel()
	for _, format := range []string{sftest.FormatArrow, sftest.FormatJSON} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			srv, cfg := newServer(t)
			srv.SetFormat(format)
			srv.SetChunkRows(200) // batches of 150 span chunks
			addTable(t, srv, bigTable(1000))
			src := open(t, cfg)
			all, err := streamFrom(t, src, nil, 150)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 7 {
				t.Fatalf("%d batches, want 7", len(all))
			}
			for k := range all {
				rest, err := streamFrom(t, src, &all[k].next, 150)
				if err != nil {
					t.Fatalf("resume after batch %d (%+v): %v", k, all[k].next, err)
				}
				if len(rest) != len(all)-k-1 {
					t.Fatalf("resume after batch %d: %d batches, want %d", k, len(rest), len(all)-k-1)
				}
				for i, b := range rest {
					want := all[k+1+i]
					if !slices.Equal(b.ids, want.ids) || b.next != want.next {
						t.Fatalf("resume after batch %d: batch %d differs: %v / %+v, want %v / %+v", k, i, b.ids, b.next, want.ids, want.next)
					}
				}
			}
			if q := dayQueries(srv); q != 1 {
				t.Fatalf("%d queries, want 1 (every resume fetches the kept result)", q)
			}
		})
	}
}

// A result Snowflake no longer keeps, or a cursor this source cannot
// read, is ErrCursorExpired: the caller starts the day over.
func TestStreamFromExpiredCursor(t *testing.T) {
	t.Parallel()
	srv, cfg := newServer(t)
	srv.SetChunkRows(100)
	addTable(t, srv, bigTable(500))
	src := open(t, cfg)
	all, err := streamFrom(t, src, nil, 100)
	if err != nil || len(all) != 5 {
		t.Fatalf("%d batches, %v", len(all), err)
	}
	bad := []warehouse.Cursor{
		{Token: all[1].next.Token, Position: "page 7"},
		{Token: all[1].next.Token, Position: "arrow:99:0"},
		{Token: "no-such-query", Position: "arrow:1:0"},
		{Position: "arrow:1:0"},
	}
	for _, c := range bad {
		if _, err := streamFrom(t, src, &c, 100); !errors.Is(err, warehouse.ErrCursorExpired) {
			t.Errorf("cursor %+v: %v, want ErrCursorExpired", c, err)
		}
	}
	srv.ForgetResults()
	if _, err := streamFrom(t, src, &all[1].next, 100); !errors.Is(err, warehouse.ErrCursorExpired) {
		t.Fatalf("forgotten result: %v, want ErrCursorExpired", err)
	}
}
