package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/sluicehq/sluice/pkg/store"
)

// BenchStageAndSwap measures the loader's write path: rows events in
// batches of perBatch, staged perPoll batches per StageBatches call, then
// swapped in as a reload of the same day (so each iteration also removes
// the previous extraction's rows). Reports rows/s.
func BenchStageAndSwap(b *testing.B, s store.Store, rows, perBatch, perPoll int) {
	ctx := context.Background()
	l := Load{ExtractID: "bench", Rows: rows, PerBatch: perBatch}
	bs := l.Batches()
	end := l.End()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprintf("bench-%d", i)
		for _, bt := range bs {
			bt.ExtractID, bt.RunID, bt.Fence = id, id, int64(i)
		}
		for j := 0; j < len(bs); j += perPoll {
			if err := s.StageBatches(ctx, bs[j:min(j+perPoll, len(bs))]); err != nil {
				b.Fatal(err)
			}
		}
		end.ExtractID, end.RunID, end.Fence = id, id, int64(i)
		out, err := s.CompleteRun(ctx, end)
		if err != nil || out != store.Swapped {
			b.Fatalf("complete %s: %v, %v", id, out, err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
