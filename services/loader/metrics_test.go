package loader

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicehq/sluice/schemas"
)

// The loader's effect counters move once per run: a redone extraction, a
// redelivered batch, END or FAILED record changes none of them, while the
// staging work counter counts every batch it staged.
func TestEffectCountersOncePerRun(t *testing.T) {
	r := newFaultRig(t, 0, false)
	reg := prometheus.NewRegistry()
	r.registry = reg
	dead := extraction("2024-03-01", "run-a", "x-a1", []int{4, 4}, []int{2, 1})
	retry := extraction("2024-03-01", "run-a", "x-a2", []int{4, 3}, []int{1, 2})
	tooMany := extraction("2024-03-02", "run-b", "x-b1", []int{1}, []int{3})
	failed := &schemas.MappedBatch{RunID: "run-f", ExtractID: "x-f1", Project: "p", Ingestion: "ing", Date: "2024-03-04",
		Trigger: schemas.TriggerScheduled, Fence: 1, Kind: schemas.KindFailed, Type: "events",
		ErrorCategory: "QUERY_ERROR", ErrorMessage: "syntax error"}
	var seq []*schemas.MappedBatch
	seq = append(seq, dead[0], dead[0])
	seq = append(seq, retry[0], retry[1], retry[1], retry[2])
	seq = append(seq, dead[1], dead[2]) // the abandoned extraction's END: the run already ended
	seq = append(seq, tooMany...)
	seq = append(seq, failed, failed) // a FAILED record redelivered
	seq = append(seq, retry[2])       // a redelivered END
	r.produce(t, r.encode(t, seq)...)

	ctx, cancel := context.WithCancel(t.Context())
	l := r.startLoader(t, ctx, cancel, r.store)
	l.wait(t, 6)
	l.stop(t)

	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"runs swapped", testutil.ToFloat64(l.svc.runs.WithLabelValues("swapped")), 1},
		{"runs too_many_rejected", testutil.ToFloat64(l.svc.runs.WithLabelValues("too_many_rejected")), 1},
		{"runs failed", testutil.ToFloat64(l.svc.runs.WithLabelValues("failed")), 1},
		{"runs already_done", testutil.ToFloat64(l.svc.runs.WithLabelValues("already_done")), 0},
		{"duplicate ends", testutil.ToFloat64(l.svc.duplicateEnds.WithLabelValues("ing")), 3},
		// The visible extraction x-a2 mapped 7 rows and rejected 3.
		{"rows loaded", testutil.ToFloat64(l.svc.rowsLoaded.WithLabelValues("ing")), 7},
		{"rows rejected", testutil.ToFloat64(l.svc.rowsRejected.WithLabelValues("ing", "bad_time")), 3 + 3},
		// Work: every batch staged, redelivered and abandoned ones too.
		{"rows staged (work)", testutil.ToFloat64(l.svc.rows.WithLabelValues("ing")), 4 + 4 + 4 + 3 + 3 + 4 + 1},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "sluice_loader_rows_loaded_total", "sluice_loader_duplicate_ends_total"); err != nil || n != 2 {
		t.Errorf("registry holds %d of the effect series (%v), want 2", n, err)
	}
}
