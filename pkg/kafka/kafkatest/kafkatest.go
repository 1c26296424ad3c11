// Package kafkatest gives tests a real Kafka endpoint: the embedded kfake
// broker (the Kafka protocol on a local port) with every Sluice topic.
package kafkatest

import (
	"log/slog"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/kafka"
)

// Start runs a broker for the life of tb and creates every Sluice topic on
// it with cfg's prefix and partitions (1 when unset). It returns cfg
// pointing at the broker and a client for the test's own producing and
// admin calls, closed when tb ends.
func Start(tb testing.TB, cfg kafka.Config) (kafka.Config, *kgo.Client) {
	tb.Helper()
	if cfg.Partitions == 0 {
		cfg.Partitions = 1
	}
	if cfg.ReplicationFactor == 0 {
		cfg.ReplicationFactor = 1
	}
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: cfg.Partitions})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(broker.Close)
	cfg.Brokers = broker.Addrs()
	cl, err := kafka.NewClient(cfg, "test", slog.New(slog.DiscardHandler), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cl.Close)
	if err := kafka.EnsureTopics(tb.Context(), cl, cfg, kafka.AllTopics...); err != nil {
		tb.Fatal(err)
	}
	return cfg, cl
}
