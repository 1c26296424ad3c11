package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// consumeFixture is a broker with n records on one partition of topic
// "consume" and a group consumer for them.
func consumeFixture(tb testing.TB, n int, drain time.Duration) (*kgo.Client, ConsumerConfig, *kadm.Client) {
	tb.Helper()
	broker, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(broker.Close)
	cfg := Config{Brokers: broker.Addrs(), Partitions: 1, ReplicationFactor: 1}
	admin, err := NewClient(cfg, "test", nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(admin.Close)
	if err := EnsureTopics(tb.Context(), admin, cfg, "consume"); err != nil {
		tb.Fatal(err)
	}
	records := make([]*kgo.Record, n)
	for i := range records {
		records[i] = &kgo.Record{Topic: "consume", Value: fmt.Appendf(nil, "%d", i)}
	}
	if err := ProduceSync(tb.Context(), admin, records...); err != nil {
		tb.Fatal(err)
	}
	cc := ConsumerConfig{Group: "consume-test", Topics: []string{"consume"}, DrainTimeout: drain}
	cl, err := NewClient(cfg, "consumer", nil, nil, GroupOpts(cc)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cl.Close)
	return cl, cc, kadm.NewClient(admin)
}

// committed is the group's committed offset of partition 0, or -1.
func committed(tb testing.TB, adm *kadm.Client, group string) int64 {
	tb.Helper()
	offsets, err := adm.FetchOffsets(context.Background(), group)
	if err != nil {
		tb.Fatal(err)
	}
	if o, ok := offsets.Lookup("consume", 0); ok && o.Err == nil {
		return o.At
	}
	return -1
}

// Cancelling Consume while a batch is in hand lets that batch finish,
// with a live context, and commits it before Consume returns: the stop
// neither abandons the work nor leaves it to be redone.
func TestConsumeFinishesAndCommitsTheBatchInHandWhenCancelled(t *testing.T) {
	cl, cc, adm := consumeFixture(t, 5, time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	inHand := make(chan int, 1)
	release := make(chan struct{})
	handled := make(chan error, 1)
	var calls int
	done := make(chan error, 1)
	go func() {
		done <- Consume(ctx, cl, cc, slog.New(slog.DiscardHandler), func(hctx context.Context, recs []*kgo.Record) error {
			calls++
			inHand <- len(recs)
			<-release
			handled <- hctx.Err() // the batch's context outlives the stop
			return nil
		})
	}()
	n := <-inHand
	cancel()
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Consume = %v, want nil on cancellation", err)
	}
	if err := <-handled; err != nil {
		t.Errorf("the batch in hand saw its context cancelled (%v) before its drain bound", err)
	}
	if calls != 1 {
		t.Errorf("handler called %d times, want once: no poll after the stop", calls)
	}
	if got := committed(t, adm, cc.Group); got != int64(n) {
		t.Errorf("committed offset = %d, want %d (the batch in hand, committed on the way out)", got, n)
	}
}

// A batch that overruns DrainTimeout after the stop has its context
// cancelled; Consume returns nil and leaves it uncommitted, to be
// redelivered to whoever owns the partition next.
func TestConsumeLeavesAnOverrunningBatchUncommitted(t *testing.T) {
	cl, cc, adm := consumeFixture(t, 5, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	inHand := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- Consume(ctx, cl, cc, slog.New(slog.DiscardHandler), func(hctx context.Context, _ []*kgo.Record) error {
			inHand <- struct{}{}
			<-hctx.Done() // never finishes on its own
			return hctx.Err()
		})
	}()
	<-inHand
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Consume = %v, want nil on cancellation", err)
	}
	if got := committed(t, adm, cc.Group); got != -1 {
		t.Errorf("committed offset = %d, want none: the batch did not finish", got)
	}
}
