package kafka

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestLagMonitor(t *testing.T) {
	broker, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	cfg := Config{Brokers: broker.Addrs(), Partitions: 2, ReplicationFactor: 1}
	cl, err := NewClient(cfg, "test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := EnsureTopics(t.Context(), cl, cfg, "raw-rows"); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for range 5 {
		recs = append(recs, &kgo.Record{Topic: "raw-rows", Partition: 0, Value: []byte("x")})
	}
	recs = append(recs, &kgo.Record{Topic: "raw-rows", Partition: 1, Value: []byte("y")})
	manual, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(manual.Close)
	if err := ProduceSync(t.Context(), manual, recs...); err != nil {
		t.Fatal(err)
	}
	// The group has read two records of partition 0 and all of partition 1.
	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: "raw-rows", Partition: 0, At: 2, LeaderEpoch: -1})
	offsets.Add(kadm.Offset{Topic: "raw-rows", Partition: 1, At: 1, LeaderEpoch: -1})
	if err := kadm.NewClient(cl).CommitAllOffsets(t.Context(), "sluice-mapper", offsets); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	m, err := NewLagMonitor(cl, []string{"sluice-mapper"}, 0, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Measure(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		partition string
		want      float64
	}{{"0", 3}, {"1", 0}} {
		if got := testutil.ToFloat64(m.lag.WithLabelValues("sluice-mapper", "raw-rows", tt.partition)); got != tt.want {
			t.Errorf("lag of partition %s = %v, want %v", tt.partition, got, tt.want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "sluice_kafka_consumer_lag"); err != nil || n != 2 {
		t.Errorf("registry has %d lag series (err %v), want 2", n, err)
	}
}
