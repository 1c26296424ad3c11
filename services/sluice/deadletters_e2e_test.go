package main

import (
	"context"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// assertDeadLetters reads dead-letters until the visible run of each of
// days (of ingestion) has one dead letter per rejected row, and checks
// that every one is keyed <project>/<run_id>/<position>, comes from the
// run's deciding extraction, and came once.
func (s *e2eStack) assertDeadLetters(t testing.TB, ingestion string, days []civil.Date) {
	t.Helper()
	want := map[string]store.Run{} // run id → run
	for _, day := range days {
		d := s.waitDay(ingestion, day, "loaded", loaded)
		r, err := s.in.Store.Run(context.Background(), demo.ProjectName, d.VisibleRunID)
		if err != nil {
			t.Fatal(err)
		}
		want[r.RunID] = r
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.in.Kafka.Brokers...), kgo.ConsumeTopics(s.in.Kafka.Topic(schemas.TopicDeadLetter)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second) // a guard against a hang
	defer cancel()
	keys := map[string]map[string]int{} // run id → key → records
	complete := func() bool {
		for id, r := range want {
			if int64(len(keys[id])) < sum(r.Rejected) {
				return false
			}
		}
		return true
	}
	for !complete() {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			for id, r := range want {
				t.Errorf("run %s: %d dead letters, %d rows rejected", id, len(keys[id]), sum(r.Rejected))
			}
			t.FailNow()
		}
		f.EachRecord(func(rec *kgo.Record) {
			var dl schemas.DeadLetter
			if err := s.in.Codecs.Decode(s.in.Codecs.DeadLetter, rec.Value, &dl); err != nil {
				t.Errorf("dead letter at offset %d does not decode: %v", rec.Offset, err)
				return
			}
			r, ok := want[dl.RunID]
			if !ok {
				return // another ingestion's run
			}
			if key := schemas.DeadLetterKey(dl.Project, dl.RunID, dl.Position); string(rec.Key) != key || dl.ExtractID != r.ExtractID {
				t.Errorf("dead letter keyed %q of extraction %s, want key %q of the run's extraction %s", rec.Key, dl.ExtractID, key, r.ExtractID)
			}
			if keys[dl.RunID] == nil {
				keys[dl.RunID] = map[string]int{}
			}
			keys[dl.RunID][string(rec.Key)]++
		})
	}
	for id, ks := range keys {
		if int64(len(ks)) != sum(want[id].Rejected) {
			t.Errorf("run %s: %d distinct dead letters, %d rows rejected", id, len(ks), sum(want[id].Rejected))
		}
		for k, n := range ks {
			if n != 1 {
				t.Errorf("dead letter %s published %d times in a run without faults", k, n)
			}
		}
	}
}
