package kafka

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestAsyncProducer: every record is on the broker, in order, when Wait
// returns nil; a failed record makes Wait and later Produces fail.
func TestAsyncProducer(t *testing.T) {
	broker, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	cfg := Config{Brokers: broker.Addrs(), Partitions: 1, ReplicationFactor: 1}
	cl, err := NewClient(cfg, "test", nil, nil, kgo.RecordDeliveryTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := EnsureTopics(t.Context(), cl, cfg, "async"); err != nil {
		t.Fatal(err)
	}
	p := NewAsyncProducer(cl)
	const n = 50
	for i := range n {
		if err := p.Produce(t.Context(), &kgo.Record{Topic: "async", Key: []byte("k"), Value: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Wait(t.Context()); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	rd, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ConsumeTopics("async"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var got []string
	for len(got) < n && ctx.Err() == nil {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	for i, v := range got {
		if v != fmt.Sprint(i) {
			t.Fatalf("record %d = %s: out of order or lost (%d records)", i, v, len(got))
		}
	}
	if len(got) != n {
		t.Fatalf("read %d records, want %d", len(got), n)
	}

	// A topic that does not exist (and is not auto-created) fails delivery.
	failing := NewAsyncProducer(cl)
	if err := failing.Produce(t.Context(), &kgo.Record{Topic: "no-such-topic", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := failing.Wait(t.Context()); err == nil {
		t.Fatal("Wait = nil for a record that could not be delivered")
	}
	if err := failing.Produce(t.Context(), &kgo.Record{Topic: "async", Value: []byte("y")}); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Produce after a failure = %v, want the earlier failure", err)
	}
}
