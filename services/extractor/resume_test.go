package extractor

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
)

// An extractor dies part-way through a Snowflake day, after K batches
// were acknowledged; a fresh one on the same group and store takes the
// uncommitted request. It continues the day from the run's checkpoint
// under the same extract id, on the first query's kept result (whose
// chunk URLs also expire or break while it streams); only when Snowflake
// no longer keeps the result does the day start over under a new id.
func TestCrashedSnowflakeDayResumes(t *testing.T) {
	const rows, batchRows, chunkRows = 1000, 50, 100
	tests := []struct {
		name string
		// fault is injected after the crash, before the second extractor.
		fault       func(*sftest.Server)
		seen        func(sftest.Stats) bool // the fault happened
		extractions int                     // extract ids on raw-rows
		queries     int
	}{
		{"resumes; urls expire mid-day", func(s *sftest.Server) { s.ExpireChunkURLsAfter(3) },
			func(st sftest.Stats) bool { return st.ExpiredChunks == 1 }, 1, 1},
		{"resumes; a download is cut part-way", func(s *sftest.Server) { s.CutChunkDownloads(1) },
			func(st sftest.Stats) bool { return st.CutChunks == 1 }, 1, 1},
		{"result no longer kept: starts over", func(s *sftest.Server) { s.ForgetResults() },
			func(sftest.Stats) bool { return true }, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 1, 1, rows, chunkRows)
			release := h.srv.HoldChunks()
			defer release()
			cfg := Config{BatchRows: batchRows, DrainTimeout: 50 * time.Millisecond, RetryBackoff: 10 * time.Millisecond}
			_, crash := h.start(t, cfg)
			h.publish(t, request("run-1", sfDay), 0)
			// The inline rowset is two batches; the first chunk download waits.
			eventually(t, "two batches acknowledged", func() bool {
				return h.checkpoint("run-1").NextSeq == 2 && h.srv.Stats().HeldChunks == 1
			})
			before := h.checkpoint("run-1")
			crash() // stopped mid-day: the request's offset stays uncommitted
			release()
			tt.fault(h.srv)

			_, _ = h.start(t, cfg)
			eventually(t, "the day extracted", func() bool { return h.runStatus("run-1") == vocab.StatusDownloaded })
			if q := h.dayQueries(); q != tt.queries || !tt.seen(h.srv.Stats()) {
				t.Errorf("%d day queries, want %d; server saw %+v", q, tt.queries, h.srv.Stats())
			}
			all := extractions(t, h.rawRows(t))["run-1"]
			if len(all) != tt.extractions {
				t.Fatalf("%d extract ids on raw-rows, want %d", len(all), tt.extractions)
			}
			var ended int
			for id, x := range all {
				if len(x.ends) == 0 {
					// The crashed extraction of a day started over: it
					// never ends, so the loader never swaps it in.
					if id != before.ExtractID {
						t.Errorf("extraction %s has no END and is not the crashed one (%s)", id, before.ExtractID)
					}
					continue
				}
				ended++
				x.complete(t, rows)
				if tt.extractions == 1 && (id != before.ExtractID || x.resent != 0) {
					// Nothing was in flight past the checkpoint, so a
					// resume re-sends no batch.
					t.Errorf("the day finished under extract id %s re-sending %d batches, want the crashed one's %s from batch %d",
						id, x.resent, before.ExtractID, before.NextSeq)
				}
			}
			if ended != 1 {
				t.Errorf("%d extractions ended, want 1", ended)
			}
			// Dropped right after the run is recorded as extracted.
			eventually(t, "the checkpoint dropped", func() bool { return h.checkpoint("run-1").RunID == "" })
		})
	}
}

// A chunk that keeps failing beyond the source's own refetches fails the
// attempt with a transient error; the retry continues from the last
// acknowledged batch on the same query and extract id.
func TestTransientFailureMidDayRetriesFromTheLastBatch(t *testing.T) {
	const rows = 1000
	h := newHarness(t, 1, 1, rows, 100)
	h.srv.CutChunkDownloads(4) // chunk 0: the first fetch and its 3 refetches
	svc, _ := h.start(t, Config{BatchRows: 50, RetryBackoff: 10 * time.Millisecond})
	h.publish(t, request("run-1", sfDay), 0)
	eventually(t, "the day extracted", func() bool { return h.runStatus("run-1") == vocab.StatusDownloaded })
	if st := h.srv.Stats(); st.CutChunks != 4 || h.dayQueries() != 1 || counterValue(t, svc, "ok") != 1 {
		t.Fatalf("%d day queries, %v finished, server saw %+v; want one query, one extraction, 4 cut downloads",
			h.dayQueries(), counterValue(t, svc, "ok"), st)
	}
	all := extractions(t, h.rawRows(t))["run-1"]
	if len(all) != 1 {
		t.Fatalf("%d extract ids on raw-rows, want 1", len(all))
	}
	for _, x := range all {
		x.complete(t, rows)
		if x.resent != 0 {
			t.Errorf("%d batches re-sent, want 0: every batch before the failure was acknowledged", x.resent)
		}
	}
	if r, _ := h.store.Run(t.Context(), sfProject, "run-1"); !strings.Contains(r.Message, "extraction") {
		t.Errorf("run message %q does not name the extraction", r.Message)
	}
}
