package loader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/kafka/kafkatest"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	pgstore "github.com/sluicehq/sluice/pkg/store/postgres"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// flakyStore is the real DuckDB store with an outage in front of it: the
// first failures calls that write fail, as a store that is down would.
type flakyStore struct {
	store.Store
	failures int64
	calls    atomic.Int64
}

var errStoreDown = errors.New("store is down")

func (f *flakyStore) down() bool { return f.calls.Add(1) <= f.failures }

func (f *flakyStore) StageBatches(ctx context.Context, b []*schemas.MappedBatch) error {
	if f.down() {
		return errStoreDown
	}
	return f.Store.StageBatches(ctx, b)
}

func (f *flakyStore) CompleteRun(ctx context.Context, end store.RunEnd) (store.Outcome, error) {
	if f.down() {
		return store.Incomplete, errStoreDown
	}
	return f.Store.CompleteRun(ctx, end)
}

// runOf is one day's run as mapped batches: batches ROWS of per rows each,
// then END.
func runOf(day string, batches, per int) []*schemas.MappedBatch {
	var out []*schemas.MappedBatch
	pos := int64(0)
	for seq := range batches {
		b := &schemas.MappedBatch{RunID: "run-" + day, ExtractID: "x-" + day, Project: "p", Ingestion: "ing", Date: day,
			Trigger: string(vocab.TriggerScheduled), Fence: 1, Kind: schemas.KindRows, Type: "events", Seq: int64(seq), RowCount: int64(per)}
		for range per {
			b.Events = append(b.Events, schemas.Event{Position: pos, EventName: "e", TimeMs: 1700000000000 + pos,
				UnitIDs: []schemas.UnitID{{IDType: "userID", Value: fmt.Sprint("u", pos)}}, MetadataJSON: "{}"})
			pos++
		}
		out = append(out, b)
	}
	return append(out, &schemas.MappedBatch{RunID: "run-" + day, ExtractID: "x-" + day, Project: "p", Ingestion: "ing", Date: day,
		Trigger: string(vocab.TriggerScheduled), Fence: 1, Kind: schemas.KindEnd, Type: "events", Seq: int64(batches), RowCount: pos})
}

type faultRig struct {
	kcfg   kafka.Config
	codecs *schemas.Codecs
	client *kgo.Client
	store  *flakyStore
	state  *state.State
}

// newFaultRig builds the rig on the DuckDB store, or on a fresh schema of
// the local PostgreSQL when onPostgres.
func newFaultRig(t *testing.T, failures int64, onPostgres bool) *faultRig {
	t.Helper()
	kcfg, cl := kafkatest.Start(t, kafka.Config{})
	st := openStore(t, onPostgres)
	if err := st.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	return &faultRig{kcfg: kcfg, codecs: codecs, client: cl, store: &flakyStore{Store: st, failures: failures}, state: state.New(rdb, state.Options{})}
}

func openStore(t *testing.T, onPostgres bool) store.Store {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	if !onPostgres {
		st, err := duckstore.Open(t.Context(), filepath.Join(t.TempDir(), "store.duckdb"), duckstore.Options{Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	const dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	schema := fmt.Sprintf("loader_test_%d", time.Now().UnixNano())
	st, err := pgstore.Open(t.Context(), dsn, pgstore.Options{Schema: schema, Logger: logger})
	if err != nil {
		t.Skipf("PostgreSQL is not reachable (%v); scripts/test starts it", err)
	}
	t.Cleanup(func() {
		st.Close()
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return st
}

func (r *faultRig) produce(t *testing.T, values ...[]byte) {
	t.Helper()
	recs := make([]*kgo.Record, len(values))
	for i, v := range values {
		recs[i] = &kgo.Record{Topic: r.kcfg.Topic(schemas.TopicMappedEvents), Key: []byte("p/ing/day"), Value: v}
	}
	if err := kafka.ProduceSync(t.Context(), r.client, recs...); err != nil {
		t.Fatal(err)
	}
}

func (r *faultRig) encode(t *testing.T, batches []*schemas.MappedBatch) [][]byte {
	t.Helper()
	var out [][]byte
	for _, b := range batches {
		data, err := r.codecs.Encode(r.codecs.MappedBatch, b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// dispatcher releases the loader's days in the rig's Redis.
func (r *faultRig) dispatcher(t *testing.T) *dispatch.Dispatcher {
	t.Helper()
	d, err := dispatch.New(dispatch.Config{}, dispatch.Deps{Codecs: r.codecs, Settings: &config.File{}, Store: r.store, State: r.state})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// runLoader runs a loader until it has finished want runs, and returns
// their outcomes.
func (r *faultRig) runLoader(t *testing.T, want int) []store.Outcome {
	t.Helper()
	done := make(chan store.Outcome, 16)
	svc, err := New(Config{Group: "loader-test"}, Deps{Kafka: r.kcfg, Codecs: r.codecs, Store: r.store, Dispatcher: r.dispatcher(t),
		Logger:    slog.New(slog.DiscardHandler),
		OnDayDone: func(_ context.Context, _ store.RunEnd, o store.Outcome) { done <- o }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("loader stopped with %v", err)
		}
	}()
	var outcomes []store.Outcome
	timeout := time.After(time.Minute) // a guard against a hang, not a timing assertion
	for len(outcomes) < want {
		select {
		case o := <-done:
			outcomes = append(outcomes, o)
		case <-timeout:
			t.Fatalf("loader finished %d of %d runs", len(outcomes), want)
		}
	}
	return outcomes
}

// deadLetters reads the dead-letter topic from the start.
func (r *faultRig) deadLetters(t *testing.T, want int) []schemas.DeadLetter {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kcfg.Brokers...), kgo.ConsumeTopics(r.kcfg.Topic(schemas.TopicDeadLetter)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out []schemas.DeadLetter
	for len(out) < want {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d dead letters", len(out), want)
		}
		f.EachRecord(func(rec *kgo.Record) {
			var dl schemas.DeadLetter
			if err := r.codecs.Decode(r.codecs.DeadLetter, rec.Value, &dl); err != nil {
				t.Errorf("dead letter at offset %d does not decode: %v", rec.Offset, err)
				return
			}
			out = append(out, dl)
		})
	}
	return out
}

func TestLoaderFaults(t *testing.T) {
	tests := []struct {
		name     string
		failures int64 // store calls that fail before it comes back
		poison   bool  // garbage precedes the run on its partition
		postgres bool  // the PostgreSQL store instead of DuckDB
	}{
		{name: "healthy store", failures: 0},
		{name: "store down for a while: back off, resume, exactly once", failures: 4},
		{name: "undecodable message is dead-lettered, the run behind it loads", poison: true},
		{name: "poison and an outage together", failures: 3, poison: true},
		{name: "PostgreSQL store, down for a while", failures: 3, postgres: true},
		{name: "PostgreSQL store, poison", poison: true, postgres: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newFaultRig(t, tt.failures, tt.postgres)
			const day, batches, per = "2024-03-01", 4, 25
			run := r.encode(t, runOf(day, batches, per))
			if tt.poison {
				run = append([][]byte{[]byte("\x00not avro at all\xff")}, run...)
			}
			// Batch 1 arrives twice (a producer retry): still once in the store.
			run = append(run[:3], append([][]byte{run[2]}, run[3:]...)...)
			r.produce(t, run...)

			outcomes := r.runLoader(t, 1)
			if outcomes[0] != store.Swapped {
				t.Fatalf("outcome %v, want Swapped", outcomes[0])
			}
			events, err := r.store.VisibleEvents(t.Context(), "p", "ing", day)
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != batches*per {
				t.Fatalf("%d visible events, want %d exactly once", len(events), batches*per)
			}
			for i, e := range events {
				if e.Position != int64(i) {
					t.Fatalf("event %d has position %d: rows lost or duplicated", i, e.Position)
				}
			}
			if got := r.store.calls.Load(); got <= tt.failures {
				t.Errorf("store saw %d calls, want more than the %d failed ones (the loader gave up?)", got, tt.failures)
			}
			if tt.poison {
				dls := r.deadLetters(t, 1)
				if dls[0].Reason != string(vocab.ReasonUndecodableMessage) || dls[0].SourceTopic != r.kcfg.Topic(schemas.TopicMappedEvents) || len(dls[0].Raw) == 0 {
					t.Errorf("dead letter %+v, want undecodable_message from mapped-events with the raw bytes", dls[0])
				}
			}
		})
	}
}
