package extractor

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery/bqtest"
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
			h.wantResumed(t, "run-1", before, rows, tt.extractions)
		})
	}
}

// An extractor dies part-way through a BigQuery day, after K batches were
// acknowledged, its Storage Read stream paused; a fresh one takes the
// uncommitted request and continues from the run's checkpoint under the
// same extract id, reading the first query's kept result table from the
// checkpoint's row (while its new read session expires, or a read fails,
// part-way); only when BigQuery has dropped the table does the day start
// over under a new id.
func TestCrashedBigQueryDayResumes(t *testing.T) {
	const rows, batchRows, pageRows = 1000, 50, 50
	tests := []struct {
		name string
		// fault is injected after the crash, before the second extractor.
		fault       func(*bqtest.Server)
		seen        func(bqtest.Stats) bool // the fault happened
		extractions int                     // extract ids on raw-rows
		queries     int
	}{
		// Sessions: the crashed one, the resume's, its replacement.
		{"resumes; the read session expires mid-day", func(s *bqtest.Server) { s.InjectReadFault(bqtest.ReadFault{AfterRows: 300, Expire: true, Times: 1}) },
			func(st bqtest.Stats) bool { return st.ReadSessions == 3 && st.ReadRows == 3 }, 1, 1},
		// Reads: the crashed one, the resume's, the one reopened at its row.
		{"resumes; a read fails part-way", func(s *bqtest.Server) {
			s.InjectReadFault(bqtest.ReadFault{AfterRows: 200, Code: codes.Unavailable, Message: "backend went away", Times: 1})
		}, func(st bqtest.Stats) bool { return st.ReadSessions == 2 && st.ReadRows == 3 }, 1, 1},
		{"result no longer kept: starts over", func(s *bqtest.Server) { s.ExpireResults() },
			func(bqtest.Stats) bool { return true }, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newBQHarness(t, rows, pageRows)
			release := h.bq.HoldReads(2 * batchRows)
			defer release()
			cfg := Config{BatchRows: batchRows, DrainTimeout: 50 * time.Millisecond, RetryBackoff: 10 * time.Millisecond}
			_, crash := h.start(t, cfg)
			h.publish(t, bqRequest("run-1"), 0)
			eventually(t, "two batches acknowledged", func() bool {
				return h.checkpoint("run-1").NextSeq == 2 && h.bq.Stats().HeldReads == 1
			})
			before := h.checkpoint("run-1")
			crash() // stopped mid-day: the request's offset stays uncommitted
			release()
			tt.fault(h.bq)

			_, _ = h.start(t, cfg)
			eventually(t, "the day extracted", func() bool { return h.runStatus("run-1") == vocab.StatusDownloaded })
			if q := h.dayQueries(); q != tt.queries || !tt.seen(h.bq.Stats()) {
				t.Errorf("%d day queries, want %d; server saw %+v", q, tt.queries, h.bq.Stats())
			}
			h.wantResumed(t, "run-1", before, rows, tt.extractions)
		})
	}
}

// wantResumed checks what raw-rows holds of a run whose extraction
// crashed at checkpoint crashed and was taken up again: extractIDs
// extract ids, one of them ended with the whole day once (the crashed one,
// re-sending no batch, when it was resumed), and the checkpoint dropped.
func (h *harness) wantResumed(t *testing.T, runID string, crashed store.Checkpoint, rows, extractIDs int) {
	t.Helper()
	all := extractions(t, h.rawRows(t))[runID]
	if len(all) != extractIDs {
		t.Fatalf("%d extract ids on raw-rows, want %d", len(all), extractIDs)
	}
	var ended int
	for id, x := range all {
		if len(x.ends) == 0 {
			// The crashed extraction of a day started over: it
			// never ends, so the loader never swaps it in.
			if id != crashed.ExtractID {
				t.Errorf("extraction %s has no END and is not the crashed one (%s)", id, crashed.ExtractID)
			}
			continue
		}
		ended++
		x.complete(t, rows)
		if extractIDs == 1 && (id != crashed.ExtractID || x.resent != 0) {
			// Nothing was in flight past the checkpoint, so a
			// resume re-sends no batch.
			t.Errorf("the day finished under extract id %s re-sending %d batches, want the crashed one's %s from batch %d",
				id, x.resent, crashed.ExtractID, crashed.NextSeq)
		}
	}
	if ended != 1 {
		t.Errorf("%d extractions ended, want 1", ended)
	}
	// Dropped right after the run is recorded as extracted.
	eventually(t, "the checkpoint dropped", func() bool { return h.checkpoint(runID).RunID == "" })
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
