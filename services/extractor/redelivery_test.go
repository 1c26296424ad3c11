package extractor

import (
	"testing"

	"github.com/sluicehq/sluice/pkg/vocab"
)

// A request redelivered after its extraction finished (END on raw-rows,
// the run at DOWNLOAD_COMPLETED, the loader not done yet), because the
// extractor died before committing its offset, never queries the
// warehouse again and puts nothing more on raw-rows.
func TestRedeliveredRequestAfterEndIsSkipped(t *testing.T) {
	const rows = 500
	h := newHarness(t, 1, 1, rows, 200)
	first, stop := h.start(t, Config{})
	h.publish(t, request("run-1", sfDay), 0)
	eventually(t, "the day extracted", func() bool { return h.runStatus("run-1") == vocab.StatusDownloaded })
	stop()
	if c := counterValue(t, first, "ok"); c != 1 {
		t.Fatalf("first extractor finished %v extractions, want 1", c)
	}
	before := h.rawRows(t)
	if q := h.dayQueries(); q != 1 {
		t.Fatalf("%d day queries, want 1", q)
	}
	if cp := h.checkpoint("run-1"); cp.RunID != "" {
		t.Errorf("checkpoint %+v left after the extraction was recorded", cp)
	}

	// The crash: the offset commit never happened.
	h.rewind(t, first.cfg.GroupName(), 1)
	again, _ := h.start(t, Config{})
	eventually(t, "the redelivered request skipped", func() bool { return counterValue(t, again, "skipped_finished") == 1 })
	if q := h.dayQueries(); q != 1 {
		t.Errorf("%d day queries after the redelivery, want still 1", q)
	}
	after := h.rawRows(t)
	if len(after) != len(before) {
		t.Errorf("raw-rows grew from %d to %d records on the redelivery", len(before), len(after))
	}
	x := extractions(t, after)["run-1"]
	if len(x) != 1 {
		t.Fatalf("%d extractions of run-1 on raw-rows, want 1", len(x))
	}
	for _, e := range x {
		e.complete(t, rows)
	}
	if r, err := h.store.Run(t.Context(), sfProject, "run-1"); err != nil || r.Status != vocab.StatusDownloaded {
		t.Errorf("run after the redelivery: %+v (%v)", r, err)
	}
}
