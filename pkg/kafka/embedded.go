package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// EmbeddedConfig configures the in-process broker of the dev stack.
type EmbeddedConfig struct {
	// Addr is host:port; kfake always binds 127.0.0.1. Port 0 picks one.
	Addr string
	// DataDir, when set, persists the log so the broker survives a restart.
	DataDir string
	// Partitions is the default for auto-created topics.
	Partitions int32
	// Logger reports members the broker evicts for kfake (see
	// sessionReaper); nil logs nowhere.
	Logger *slog.Logger
}

// Embedded is a kfake cluster: the real Kafka protocol on a real port,
// reachable by any Kafka client (kcat -b 127.0.0.1:9092 -L).
type Embedded struct {
	cluster    *kfake.Cluster
	reaper     *sessionReaper
	stopReaper context.CancelFunc
	reaperDone chan struct{}
}

// StartEmbedded starts a one-broker cluster. Retention configured on the
// topics (EnsureTopics) is applied every minute, which keeps the broker's
// in-memory log bounded however many days are loaded.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	host, portText, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka address %q: %w", cfg.Addr, err)
	}
	if host != "127.0.0.1" && host != "localhost" {
		return nil, fmt.Errorf("embedded kafka address %q: the embedded broker binds 127.0.0.1 only", cfg.Addr)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka port %q: %w", portText, err)
	}
	partitions := cfg.Partitions
	if partitions == 0 {
		partitions = 6
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DefaultNumPartitions(int(partitions)),
		kfake.BrokerConfigs(map[string]string{
			"log.cleaner.backoff.ms": "60000",
			"message.max.bytes":      strconv.Itoa(32 << 20),
			// Tests run groups with sub-second sessions; Kafka's 6 s
			// floor only guards production clusters from bad configs.
			"group.min.session.timeout.ms": "500",
		}),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka on %s: %w", cfg.Addr, err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reaper, err := newSessionReaper(c, logger)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("start embedded kafka on %s: session reaper: %w", cfg.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Embedded{cluster: c, reaper: reaper, stopReaper: cancel, reaperDone: make(chan struct{})}
	go func() {
		defer close(e.reaperDone)
		reaper.Run(ctx)
	}()
	return e, nil
}

// Addrs are the broker addresses to give clients.
func (e *Embedded) Addrs() []string { return e.cluster.ListenAddrs() }

// Cluster exposes kfake for fault injection in tests.
func (e *Embedded) Cluster() *kfake.Cluster { return e.cluster }

// Close stops the broker.
func (e *Embedded) Close() {
	e.stopReaper()
	<-e.reaperDone
	e.reaper.Close()
	e.cluster.Close()
}
