package loader

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// extraction is one extraction of a run as mapped batches, then its END.
// Batch i holds events[i] events and rejects[i] rejected rows (reason
// bad_time, values naming the extraction), at positions that continue
// from batch to batch.
func extraction(day, runID, extractID string, events, rejects []int) []*schemas.MappedBatch {
	var out []*schemas.MappedBatch
	pos := int64(0)
	for seq := range events {
		b := &schemas.MappedBatch{RunID: runID, ExtractID: extractID, Project: "p", Ingestion: "ing", Date: day,
			Trigger: string(vocab.TriggerScheduled), Fence: 1, Kind: schemas.KindRows, Type: "events", Seq: int64(seq),
			RowCount: int64(events[seq] + rejects[seq])}
		for range events[seq] {
			b.Events = append(b.Events, schemas.Event{Position: pos, EventName: "e", TimeMs: 1700000000000 + pos,
				UnitIDs: []schemas.UnitID{{IDType: "userID", Value: fmt.Sprint("u", pos)}}, MetadataJSON: "{}"})
			pos++
		}
		if rejects[seq] > 0 {
			b.Rejected = []schemas.ReasonCount{{Reason: "bad_time", Count: int64(rejects[seq])}}
		}
		for range rejects[seq] {
			b.RejectedRows = append(b.RejectedRows, schemas.RejectedRow{Position: pos, Reason: "bad_time",
				Detail: fmt.Sprint("row ", pos), Values: map[string]string{"extract": extractID}})
			pos++
		}
		out = append(out, b)
	}
	return append(out, &schemas.MappedBatch{RunID: runID, ExtractID: extractID, Project: "p", Ingestion: "ing", Date: day,
		Trigger: string(vocab.TriggerScheduled), Fence: 1, Kind: schemas.KindEnd, Type: "events", Seq: int64(len(events)), RowCount: pos})
}

// loaderRun is a loader running in the background.
type loaderRun struct {
	cancel  context.CancelFunc
	stopped chan error
	done    chan store.Outcome
}

// startLoader runs a loader over st (the rig's store, or a wrapper of it).
func (r *faultRig) startLoader(t *testing.T, ctx context.Context, cancel context.CancelFunc, st store.Store) *loaderRun {
	t.Helper()
	l := &loaderRun{cancel: cancel, stopped: make(chan error, 1), done: make(chan store.Outcome, 16)}
	svc, err := New(Config{Group: "loader-dl-test", MaxRejectedShare: 0.5, DrainTimeout: 10 * time.Second},
		Deps{Kafka: r.kcfg, Codecs: r.codecs, Store: st, Dispatcher: r.dispatcher(t), Logger: slog.New(slog.DiscardHandler),
			OnDayDone: func(_ context.Context, _ store.RunEnd, o store.Outcome) { l.done <- o }})
	if err != nil {
		t.Fatal(err)
	}
	go func() { l.stopped <- svc.Run(ctx) }()
	return l
}

func (l *loaderRun) stop(t *testing.T) {
	t.Helper()
	l.cancel()
	if err := <-l.stopped; err != nil {
		t.Errorf("loader stopped with %v", err)
	}
}

// wait returns the outcomes of the next n runs the loader finishes.
func (l *loaderRun) wait(t *testing.T, n int) []store.Outcome {
	t.Helper()
	var out []store.Outcome
	timeout := time.After(time.Minute) // a guard against a hang, not a timing assertion
	for len(out) < n {
		select {
		case o := <-l.done:
			out = append(out, o)
		case <-timeout:
			t.Fatalf("loader finished %d of %d runs", len(out), n)
		}
	}
	return out
}

// waitPublished waits until the store has no dead letters due.
func waitPublished(t *testing.T, st store.Store) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(time.Minute) // a guard against a hang
	for {
		due, err := st.DueDeadLetters(t.Context(), store.DeadLetterFilter{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(due) == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("dead letters of %d runs still due", len(due))
		}
	}
}

// published is every record on the dead-letter topic, read to its end.
func (r *faultRig) published(t *testing.T) []*kgo.Record {
	t.Helper()
	topic := r.kcfg.Topic(schemas.TopicDeadLetter)
	ends, err := kadm.NewClient(r.client).ListEndOffsets(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kcfg.Brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for int64(len(out)) < total {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d dead letters", len(out), total)
		}
		out = append(out, f.Records()...)
	}
	return out
}

// byKey decodes the dead letters, grouped by key.
func (r *faultRig) byKey(t *testing.T, recs []*kgo.Record) map[string][]schemas.DeadLetter {
	t.Helper()
	out := map[string][]schemas.DeadLetter{}
	for _, rec := range recs {
		var dl schemas.DeadLetter
		if err := r.codecs.Decode(r.codecs.DeadLetter, rec.Value, &dl); err != nil {
			t.Fatalf("dead letter %s does not decode: %v", rec.Key, err)
		}
		if want := schemas.DeadLetterKey(dl.Project, dl.RunID, dl.Position); string(rec.Key) != want {
			t.Errorf("dead letter keyed %q, want %q", rec.Key, want)
		}
		out[string(rec.Key)] = append(out[string(rec.Key)], dl)
	}
	return out
}

// TestDeadLettersOncePerRun: a run extracted twice (the first extraction
// died after its first batch), with batches redelivered, dead-letters
// exactly the rejected rows of the extraction that decided it, once per
// key; a run failed on too many rejected rows dead-letters its rows; a
// late END of the dead extraction adds nothing.
func TestDeadLettersOncePerRun(t *testing.T) {
	for _, onPostgres := range []bool{false, true} {
		t.Run(map[bool]string{false: "duckdb", true: "postgres"}[onPostgres], func(t *testing.T) {
			r := newFaultRig(t, 0, onPostgres)
			dead := extraction("2024-03-01", "run-a", "x-a1", []int{4, 4}, []int{2, 1})
			retry := extraction("2024-03-01", "run-a", "x-a2", []int{4, 3}, []int{1, 2})
			tooMany := extraction("2024-03-02", "run-b", "x-b1", []int{1}, []int{3})
			clean := extraction("2024-03-03", "run-c", "x-c1", []int{3}, []int{0})
			var seq []*schemas.MappedBatch
			seq = append(seq, dead[0], dead[0])                       // the first extraction's first batch, twice
			seq = append(seq, retry[0], retry[1], retry[1], retry[2]) // the retry, its second batch twice, END
			seq = append(seq, dead[1], dead[2])                       // the dead extraction's late batch and END
			seq = append(seq, tooMany...)
			seq = append(seq, clean...)
			seq = append(seq, retry[2]) // a redelivered END
			r.produce(t, r.encode(t, seq)...)

			ctx, cancel := context.WithCancel(t.Context())
			l := r.startLoader(t, ctx, cancel, r.store)
			got := l.wait(t, 5)
			want := []store.Outcome{store.Swapped, store.AlreadyDone, store.TooManyRejected, store.Swapped, store.AlreadyDone}
			if !slices.Equal(got, want) {
				t.Fatalf("outcomes %v, want %v", got, want)
			}
			waitPublished(t, r.store)
			l.stop(t)

			recs := r.published(t)
			dls := r.byKey(t, recs)
			wantRows := map[string]*schemas.RejectedRow{}
			for _, b := range append(retry, tooMany...) {
				for i := range b.RejectedRows {
					wantRows[schemas.DeadLetterKey("p", b.RunID, b.RejectedRows[i].Position)] = &b.RejectedRows[i]
				}
			}
			if len(recs) != len(wantRows) || len(dls) != len(wantRows) {
				t.Fatalf("%d dead letters under %d keys %v, want %d, one per rejected row of the deciding extractions",
					len(recs), len(dls), slices.Sorted(maps.Keys(dls)), len(wantRows))
			}
			for key, row := range wantRows {
				d := dls[key]
				if len(d) != 1 {
					t.Fatalf("key %s has %d dead letters, want 1", key, len(d))
				}
				dl := d[0]
				wantExtract := "x-a2"
				if dl.RunID == "run-b" {
					wantExtract = "x-b1"
				}
				if dl.ExtractID != wantExtract || dl.Reason != row.Reason || dl.Detail != row.Detail || dl.Values["extract"] != wantExtract ||
					dl.Project != "p" || dl.Ingestion != "ing" || dl.Date == "" || dl.SourceTopic != r.kcfg.Topic(schemas.TopicRawRows) {
					t.Errorf("dead letter %s = %+v, want row %+v of extraction %s", key, dl, row, wantExtract)
				}
			}
		})
	}
}

// crashBeforeMark is the store of a loader that dies after the dead
// letters were acknowledged and before they were marked published.
type crashBeforeMark struct {
	store.Store
	crash   context.CancelFunc
	crashed atomic.Bool
}

func (c *crashBeforeMark) MarkDeadLettersPublished(ctx context.Context, project, runID string, at time.Time) error {
	c.crashed.Store(true)
	c.crash()
	return context.Canceled
}

// TestDeadLettersRepublishedAfterCrash: a loader that stopped between
// producing a run's dead letters and marking them leaves the run due; the
// next start publishes it again under the same keys, byte for byte, and
// nothing else.
func TestDeadLettersRepublishedAfterCrash(t *testing.T) {
	r := newFaultRig(t, 0, false)
	run := extraction("2024-03-01", "run-a", "x-a1", []int{3, 2}, []int{2, 2})
	r.produce(t, r.encode(t, run)...)

	ctx, cancel := context.WithCancel(t.Context())
	crashing := &crashBeforeMark{Store: r.store, crash: cancel}
	first := r.startLoader(t, ctx, cancel, crashing)
	if got := first.wait(t, 1); got[0] != store.Swapped {
		t.Fatalf("outcome %v, want Swapped", got[0])
	}
	if err := <-first.stopped; err != nil {
		t.Fatalf("crashed loader stopped with %v", err)
	}
	if !crashing.crashed.Load() {
		t.Fatal("the loader stopped before marking its dead letters published")
	}
	before := r.published(t)
	if len(before) != 4 {
		t.Fatalf("%d dead letters before the crash, want the run's 4", len(before))
	}
	if due, err := r.store.DueDeadLetters(t.Context(), store.DeadLetterFilter{Limit: 10}); err != nil || len(due) != 1 {
		t.Fatalf("due after the crash: %v, %v; want the run still due", due, err)
	}

	ctx, cancel = context.WithCancel(t.Context())
	second := r.startLoader(t, ctx, cancel, r.store)
	waitPublished(t, r.store)
	second.stop(t)

	after := r.published(t)
	if len(after) != 2*len(before) {
		t.Fatalf("%d dead letters after the restart, want the %d again", len(after), len(before))
	}
	first4 := map[string][]byte{}
	for _, rec := range before {
		first4[string(rec.Key)] = rec.Value
	}
	for _, rec := range after[len(before):] {
		v, ok := first4[string(rec.Key)]
		if !ok {
			t.Errorf("republished key %s was not published before", rec.Key)
			continue
		}
		if !bytes.Equal(v, rec.Value) {
			t.Errorf("republished dead letter %s differs from the first publication", rec.Key)
		}
		delete(first4, string(rec.Key))
	}
	if len(first4) != 0 {
		t.Errorf("keys not republished: %v", slices.Sorted(maps.Keys(first4)))
	}
	if dls := r.byKey(t, after); len(dls) != 4 {
		t.Errorf("%d distinct keys, want 4", len(dls))
	}
}
