package extractor

import (
	"fmt"
	"testing"

	"github.com/sluicehq/sluice/pkg/vocab"
)

// Two extractors in one group: while the first one's extractions are
// slow (their chunk downloads held), a second one joins and partitions
// move. The first stops the moved days' downloads (its context is
// cancelled) before their offsets move, and the new owner finishes them,
// resuming under the same extract id from the checkpoint: every day ends
// once on raw-rows, complete, on one query.
func TestRevokedPartitionStopsItsExtractions(t *testing.T) {
	const partitions, rows = 4, 1000
	h := newHarness(t, partitions, partitions, rows, 100)
	release := h.srv.HoldChunks()
	defer release()
	first, _ := h.start(t, Config{})
	runs := make([]string, partitions)
	for p := range int32(partitions) {
		runs[p] = fmt.Sprintf("run-%d", p)
		h.publish(t, request(runs[p], sfDay.AddDays(int(p))), p)
	}
	// Each day's inline rowset is one batch; its first chunk download waits.
	eventually(t, "every day's first batch acknowledged and its next chunk held", func() bool {
		for _, r := range runs {
			if h.checkpoint(r).NextSeq != 1 {
				return false
			}
		}
		return h.srv.Stats().HeldChunks == partitions
	})

	second, _ := h.start(t, Config{})
	eventually(t, "the first extractor to give up the moved days' downloads", func() bool { return h.srv.Stats().AbandonedHeld > 0 })
	moved := h.srv.Stats().AbandonedHeld
	eventually(t, "the new owner to take the moved days", func() bool { return h.srv.Stats().HeldChunks == partitions+moved })
	release()
	for _, r := range runs {
		eventually(t, r+" extracted", func() bool { return h.runStatus(r) == vocab.StatusDownloaded })
	}

	if got := counterValue(t, first, "ok") + counterValue(t, second, "ok"); got != partitions {
		t.Errorf("%v extractions finished, want %d (one per day)", got, partitions)
	}
	if ok := counterValue(t, second, "ok"); ok != float64(moved) {
		t.Errorf("the new owner finished %v days, want the %d that moved", ok, moved)
	}
	if q := h.dayQueries(); q != partitions {
		t.Errorf("%d day queries, want %d: a moved day resumes, it does not run again", q, partitions)
	}
	all := extractions(t, h.rawRows(t))
	for _, r := range runs {
		if len(all[r]) != 1 {
			t.Fatalf("run %s has %d extract ids on raw-rows, want 1", r, len(all[r]))
		}
		for _, x := range all[r] {
			x.complete(t, rows)
		}
	}
}
