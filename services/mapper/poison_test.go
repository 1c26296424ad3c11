package mapper

import (
	"context"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/kafka/kafkatest"
	"github.com/sluicehq/sluice/schemas"
)

// TestPoisonMessage puts garbage on raw-rows ahead of a run on the same
// partition: the garbage goes to the dead-letter topic and the run's batch
// and END still come out on mapped-events. The run's rejected row rides in
// its mapped batch (the loader dead-letters it once the run is decided),
// not on the dead-letter topic.
func TestPoisonMessage(t *testing.T) {
	kcfg, cl := kafkatest.Start(t, kafka.Config{})
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	settings := &config.File{
		Projects: []config.Project{{Name: "p", IDTypes: []string{"userID"}}},
		Ingestions: []config.Ingestion{{Name: "ing", Project: "p", Connection: "c", Type: config.TypeEvents, Query: "q",
			Mapping: config.Mapping{EventName: "name", Timestamp: "ts", TimestampUnit: "seconds", IDs: map[string]string{"userID": "user"}}}},
	}
	rows := schemas.RawBatch{RunID: "r", ExtractID: "x", Project: "p", Ingestion: "ing", Date: "2024-03-01", Kind: schemas.KindRows,
		FirstRow: 10, RowCount: 3,
		Columns: []schemas.Column{
			{Name: "name", Type: schemas.TypeString, Nulls: []byte{0, 1, 0}, Strings: []string{"click", "", "view"}},
			{Name: "ts", Type: schemas.TypeLong, Nulls: []byte{0, 0, 0}, Longs: []int64{1709251200, 1709251230, 1709251260}},
			{Name: "user", Type: schemas.TypeString, Nulls: []byte{0, 0, 0}, Strings: []string{"u1", "u9", "u2"}},
		}}
	end := schemas.RawBatch{RunID: "r", ExtractID: "x", Project: "p", Ingestion: "ing", Date: "2024-03-01", Kind: schemas.KindEnd, Seq: 1, RowCount: 3, Fingerprint: "fp"}
	var values [][]byte
	values = append(values, []byte("\xffgarbage, not avro"))
	for _, b := range []*schemas.RawBatch{&rows, &end} {
		data, err := codecs.Encode(codecs.RawBatch, b)
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, data)
	}
	for _, v := range values {
		if err := kafka.ProduceSync(t.Context(), cl, &kgo.Record{Topic: kcfg.Topic(schemas.TopicRawRows), Key: []byte("p/ing/2024-03-01"), Value: v}); err != nil {
			t.Fatal(err)
		}
	}

	svc, err := New(Config{Group: "mapper-test"}, Deps{Kafka: kcfg, Codecs: codecs, Settings: settings, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("mapper stopped with %v", err)
		}
	}()

	reader, err := kgo.NewClient(kgo.SeedBrokers(kcfg.Brokers...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.ConsumeTopics(kcfg.Topic(schemas.TopicMappedEvents), kcfg.Topic(schemas.TopicDeadLetter)))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	rctx, rcancel := context.WithTimeout(t.Context(), time.Minute) // a guard against a hang
	defer rcancel()
	var mapped []schemas.MappedBatch
	var dead []schemas.DeadLetter
	for len(mapped) < 2 || len(dead) < 1 {
		f := reader.PollFetches(rctx)
		if rctx.Err() != nil {
			t.Fatalf("got %d mapped batches and %d dead letters, want 2 and 1", len(mapped), len(dead))
		}
		f.EachRecord(func(r *kgo.Record) {
			if r.Topic == kcfg.Topic(schemas.TopicDeadLetter) {
				var dl schemas.DeadLetter
				if err := codecs.Decode(codecs.DeadLetter, r.Value, &dl); err != nil {
					t.Fatal(err)
				}
				dead = append(dead, dl)
				return
			}
			var m schemas.MappedBatch
			if err := codecs.Decode(codecs.MappedBatch, r.Value, &m); err != nil {
				t.Fatal(err)
			}
			mapped = append(mapped, m)
		})
	}
	if dead[0].Reason != "undecodable_message" || string(dead[0].Raw) != string(values[0]) || dead[0].SourceTopic != kcfg.Topic(schemas.TopicRawRows) {
		t.Errorf("dead letter %+v, want undecodable_message with the raw bytes from raw-rows", dead[0])
	}
	if mapped[0].Kind != schemas.KindRows || len(mapped[0].Events) != 2 {
		t.Errorf("first mapped batch %s with %d events, want ROWS with 2", mapped[0].Kind, len(mapped[0].Events))
	}
	wantRejected := []schemas.RejectedRow{{Position: 11, Reason: "event_name_missing", Values: map[string]string{"ts": "1709251230", "user": "u9"}}}
	if got := mapped[0].RejectedRows; len(got) != 1 || got[0].Detail == "" {
		t.Errorf("rejected rows %+v, want the row at position 11 with a detail", got)
	} else {
		got[0].Detail = ""
		if !reflect.DeepEqual(got, wantRejected) {
			t.Errorf("rejected rows %+v, want %+v", got, wantRejected)
		}
	}
	if rc := mapped[0].Rejected; len(rc) != 1 || rc[0] != (schemas.ReasonCount{Reason: "event_name_missing", Count: 1}) {
		t.Errorf("reject counts %+v, want event_name_missing 1", rc)
	}
	if mapped[1].Kind != schemas.KindEnd || mapped[1].RowCount != 3 || mapped[1].Fingerprint != "fp" {
		t.Errorf("second mapped batch %s rows=%d fingerprint=%q, want END of 3 rows carrying the fingerprint", mapped[1].Kind, mapped[1].RowCount, mapped[1].Fingerprint)
	}
	// Every output of a poll is acknowledged before the next: with the
	// END on mapped-events, the dead-letter topic holds all it ever will.
	ends, err := kadm.NewClient(reader).ListEndOffsets(rctx, kcfg.Topic(schemas.TopicDeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != 1 {
		t.Errorf("dead-letter topic holds %d records, want only the undecodable message (rejected rows travel in the batch)", total)
	}
}
