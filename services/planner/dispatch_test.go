package planner

import (
	"context"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// published reads every request on ingest-requests so far, in offset
// order per partition (one day's requests share a partition).
func (e *env) published(tb testing.TB) []schemas.IngestRequest {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := e.kafka.Topic(schemas.TopicIngestRequests)
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		tb.Fatal(err)
	}
	var want int64
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	var out []schemas.IngestRequest
	for int64(len(out)) < want {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			tb.Fatalf("read %d of %d ingest requests: %v", len(out), want, ctx.Err())
		}
		f.EachRecord(func(r *kgo.Record) {
			var req schemas.IngestRequest
			if err := e.codecs.Decode(e.codecs.IngestRequest, r.Value, &req); err != nil {
				tb.Fatal(err)
			}
			out = append(out, req)
		})
	}
	return out
}

func runIDsOf(reqs []schemas.IngestRequest) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.RunID
	}
	return out
}

func runByID(tb testing.TB, st store.Store, id string) store.Run {
	tb.Helper()
	r, err := st.Run(context.Background(), demo.ProjectName, id)
	if err != nil {
		tb.Fatalf("run %s: %v", id, err)
	}
	return r
}

// TestOneRunPerDay: a request for a running day is queued once, a newer
// one replaces it, and only the newest starts when the day is free.
func TestOneRunPerDay(t *testing.T) {
	hour := 10
	day := civil.Date{Year: 2024, Month: time.June, Day: 3}
	spec := demo.Spec{Days: 1, LastDay: day, EventsPerDay: 10, Seed: 1}
	e := newEnv(t, spec, config.Schedule{Hour: &hour}, time.Date(2024, 6, 4, 12, 0, 0, 0, time.UTC))
	ctx := context.Background()
	req := func(reason string) Request {
		return Request{Project: demo.ProjectName, Ingestion: demo.WebEventsAPI, Date: day.String(), Trigger: schemas.TriggerAPI, Reason: reason}
	}
	key := state.DayKey{Project: demo.ProjectName, Ingestion: demo.WebEventsAPI, Date: day.String()}

	first, err := e.dispatcher.Dispatch(ctx, req("first"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.dispatcher.Dispatch(ctx, req("second"))
	if err != nil {
		t.Fatal(err)
	}
	if r := runByID(t, e.store, second); r.Status != store.StatusScheduled {
		t.Errorf("queued run status %s, want %s", r.Status, store.StatusScheduled)
	}
	if got := runIDsOf(e.published(t)); len(got) != 1 || got[0] != first {
		t.Fatalf("published %v, want only the running run %s", got, first)
	}
	third, err := e.dispatcher.Dispatch(ctx, req("third"))
	if err != nil {
		t.Fatal(err)
	}
	if r := runByID(t, e.store, second); r.Status != store.StatusSuperseded {
		t.Errorf("replaced queued run %s is %s, want %s", second, r.Status, store.StatusSuperseded)
	}
	if days, _ := e.state.PendingDays(ctx); len(days) != 1 || days[0] != key {
		t.Errorf("pending days %v, want just %v", days, key)
	}

	// While the first run holds the day nothing is released.
	if err := e.dispatcher.ReleasePending(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.published(t); len(got) != 1 {
		t.Fatalf("released while the day was held: %v", runIDsOf(got))
	}
	_, firstFence, _ := e.state.DayHolder(ctx, key)
	if err := e.state.ReleaseDay(ctx, key, first); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a second release finds nothing left
		if err := e.dispatcher.ReleasePending(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := e.published(t)
	if ids := runIDsOf(got); len(ids) != 2 || ids[1] != third {
		t.Fatalf("published %v, want [%s %s]: the newest queued request, once", ids, first, third)
	}
	if got[1].Reason != "third" || got[1].Fence <= firstFence {
		t.Errorf("released request %+v: want reason third and a fence above %d", got[1], firstFence)
	}
	if holder, _, _ := e.state.DayHolder(ctx, key); holder != third {
		t.Errorf("day held by %q, want %s", holder, third)
	}
	if days, _ := e.state.PendingDays(ctx); len(days) != 0 {
		t.Errorf("still pending: %v", days)
	}
}

// TestLeaseExpiryAndFencing: a holder that died stops blocking its day once
// its lease expires, and its late END cannot overwrite the newer run.
func TestLeaseExpiryAndFencing(t *testing.T) {
	hour := 10
	day := civil.Date{Year: 2024, Month: time.June, Day: 3}
	spec := demo.Spec{Days: 1, LastDay: day, EventsPerDay: 10, Seed: 1}
	e := newEnv(t, spec, config.Schedule{Hour: &hour}, time.Date(2024, 6, 4, 12, 0, 0, 0, time.UTC))
	ctx := context.Background()
	key := state.DayKey{Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: day.String()}

	// The old run's dispatcher leases for a millisecond: its holder "dies".
	short, err := NewDispatcher(DispatcherDeps{Client: e.dispatcher.client, Kafka: e.kafka, Codecs: e.codecs, Settings: e.settings,
		Store: e.store, State: e.state, LeaseTTL: time.Millisecond, Logger: discard(), Clock: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	r := Request{Project: demo.ProjectName, Ingestion: demo.WebEvents, Date: day.String(), Trigger: schemas.TriggerBackfill}
	old, err := short.Dispatch(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	oldFence := runByID(t, e.store, old).Fence
	deadline := time.Now().Add(5 * time.Second)
	for holder, _, _ := e.state.DayHolder(ctx, key); holder != ""; holder, _, _ = e.state.DayHolder(ctx, key) {
		if time.Now().After(deadline) {
			t.Fatalf("lease of %s never expired (held by %s)", key, holder)
		}
		time.Sleep(time.Millisecond) // waiting on Redis's own expiry
	}
	r.Trigger = schemas.TriggerReload
	newer, err := e.dispatcher.Dispatch(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	newFence := runByID(t, e.store, newer).Fence
	if newFence <= oldFence {
		t.Fatalf("new fence %d not above the dead holder's %d", newFence, oldFence)
	}
	if ids := runIDsOf(e.published(t)); len(ids) != 2 || ids[1] != newer {
		t.Fatalf("published %v, want the dead holder's and the new run", ids)
	}

	// The new run loads; then the old holder's END arrives late.
	complete := func(runID string, fence int64, names ...string) store.Outcome {
		t.Helper()
		b := &schemas.MappedBatch{RunID: runID, ExtractID: runID + "-x", Project: demo.ProjectName, Ingestion: demo.WebEvents,
			Date: day.String(), Fence: fence, Kind: schemas.KindRows, Type: config.TypeEvents, RowCount: int64(len(names))}
		for i, n := range names {
			b.Events = append(b.Events, schemas.Event{Position: int64(i), EventName: n, TimeMs: 1717372800000,
				UnitIDs: []schemas.UnitID{{IDType: "userID", Value: "u1"}}, MetadataJSON: "{}"})
		}
		if err := e.store.StageBatches(ctx, []*schemas.MappedBatch{b}); err != nil {
			t.Fatal(err)
		}
		out, err := e.store.CompleteRun(ctx, store.RunEnd{RunID: runID, ExtractID: runID + "-x", Project: demo.ProjectName,
			Ingestion: demo.WebEvents, Type: config.TypeEvents, Date: day.String(), Fence: fence, Batches: 1,
			Rows: int64(len(names)), MaxRejectedShare: 1, At: e.clock.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if out := complete(newer, newFence, "new_a", "new_b"); out != store.Swapped {
		t.Fatalf("new run: outcome %v, want Swapped", out)
	}
	if out := complete(old, oldFence, "stale_a", "stale_b", "stale_c"); out != store.Stale {
		t.Fatalf("late END of the dead holder: outcome %v, want Stale", out)
	}
	evs, err := e.store.VisibleEvents(ctx, demo.ProjectName, demo.WebEvents, day.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].EventName != "new_a" || evs[1].EventName != "new_b" {
		t.Errorf("visible events %+v, want the new run's two", evs)
	}
	d, _ := e.store.Days(ctx, store.DayFilter{Project: demo.ProjectName, Ingestion: demo.WebEvents})
	if len(d) != 1 || d[0].VisibleRunID != newer || d[0].RowsLoaded != 2 {
		t.Errorf("day %+v, want visible run %s with 2 rows", d, newer)
	}
	if r := runByID(t, e.store, old); r.Status != store.StatusSuperseded {
		t.Errorf("dead holder's run is %s, want %s", r.Status, store.StatusSuperseded)
	}
}
