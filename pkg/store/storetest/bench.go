package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// BenchStageAndSwap measures the loader's write path: rows events in
// batches of perBatch, staged perPoll batches per StageBatches call, then
// swapped in. With reload every iteration replaces the same day (and so
// also deletes the previous extraction's rows); without, each loads a new
// day. Reports rows/s.
func BenchStageAndSwap(b *testing.B, s store.Store, rows, perBatch, perPoll int, reload bool) {
	ctx := context.Background()
	l := Load{ExtractID: "bench", Rows: rows, PerBatch: perBatch}
	bs := l.Batches()
	end := l.End()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprintf("bench-%d", i)
		date := l.withDefaults().Date
		if !reload {
			date = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, i).Format(time.DateOnly)
		}
		for _, bt := range bs {
			bt.ExtractID, bt.RunID, bt.Fence, bt.Date = id, id, int64(i), date
		}
		for j := 0; j < len(bs); j += perPoll {
			if err := s.StageBatches(ctx, bs[j:min(j+perPoll, len(bs))]); err != nil {
				b.Fatal(err)
			}
		}
		end.ExtractID, end.RunID, end.Fence, end.Date = id, id, int64(i), date
		out, err := s.CompleteRun(ctx, end)
		if err != nil || out != store.Swapped {
			b.Fatalf("complete %s: %v, %v", id, out, err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
