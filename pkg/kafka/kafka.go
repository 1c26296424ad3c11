// Package kafka wires franz-go the way every Sluice service uses it:
// idempotent producers, consumer groups that commit only after the work is
// durable, topics created at start-up, and an embedded kfake broker for
// the one-process dev stack and tests.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/sluicehq/sluice/schemas"
)

// Config says where the brokers are and how topics are made.
type Config struct {
	Brokers           []string
	Partitions        int32
	ReplicationFactor int16
	// Retention bounds how long (and, with RetentionBytes, how much) each
	// topic keeps; the embedded broker holds its whole log in memory.
	Retention      time.Duration
	RetentionBytes int64
	// TopicPrefix namespaces the topics, so several stacks (or tests) can
	// share one cluster.
	TopicPrefix string
	ClientID    string
}

// Topic returns the full name of one of Sluice's topics.
func (c Config) Topic(name string) string { return c.TopicPrefix + name }

// AllTopics are the topics every stack needs.
var AllTopics = []string{
	schemas.TopicIngestRequests,
	schemas.TopicRawRows,
	schemas.TopicMappedEvents,
	schemas.TopicReloadCandidates,
	schemas.TopicDeadLetter,
}

// NewClient builds a franz-go client named name (its client id and the
// "client" label of its kprom metrics, so it must be unique per registry)
// with Sluice's defaults: idempotent writes acknowledged by all in-sync
// replicas, records batched per partition, kprom metrics on reg when reg
// is non-nil.
func NewClient(cfg Config, name string, logger *slog.Logger, reg prometheus.Registerer, opts ...kgo.Opt) (*kgo.Client, error) {
	clientID := "sluice-" + name
	if cfg.ClientID != "" {
		clientID = cfg.ClientID + "-" + name
	}
	base := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(clientID),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// A consumer holds a fetched batch whole until every record in it
		// is released, and the producer builds a batch in one growing
		// buffer: 4 MiB batches (a few 2,000-row records each) cut the
		// mapper's heap by ~35 MiB against 16 MiB ones. It is also the
		// largest record the producer accepts.
		kgo.ProducerBatchMaxBytes(4 << 20),
		kgo.MaxBufferedRecords(10_000),
		// Batches of rows are large records: bound the producer buffer by
		// bytes so a fast warehouse cannot outrun the broker into OOM.
		kgo.MaxBufferedBytes(64 << 20),
		kgo.ProducerLinger(5 * time.Millisecond),
		// Snappy, not lz4: franz-go decompresses lz4 through pooled 4 MiB
		// block buffers into a doubling bytes.Buffer and then clones it
		// (~40 MiB of a consumer's heap in a profile); snappy decodes
		// once into a buffer of the exact size, at similar speed.
		kgo.ProducerBatchCompression(kgo.SnappyCompression(), kgo.NoCompression()),
		kgo.FetchMaxBytes(64 << 20),
		kgo.FetchMaxPartitionBytes(16 << 20),
		kgo.RecordRetries(20),
		kgo.RetryTimeout(time.Minute),
		kgo.WithLogger(slogAdapter{logger}),
	}
	if reg != nil {
		m := kprom.NewMetrics("sluice_kafka", kprom.Registerer(reg), kprom.WithStaticLabel(prometheus.Labels{"client": clientID}))
		base = append(base, kgo.WithHooks(m))
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("new kafka client: %w", err)
	}
	return cl, nil
}

// EnsureTopics creates the named topics (with cfg's prefix) that do not
// exist yet, with cfg's partitions and retention. Existing topics are left
// as they are.
func EnsureTopics(ctx context.Context, cl *kgo.Client, cfg Config, names ...string) error {
	adm := kadm.NewClient(cl)
	topicConfigs := map[string]*string{}
	if cfg.Retention > 0 {
		ms := strconv.FormatInt(cfg.Retention.Milliseconds(), 10)
		topicConfigs["retention.ms"] = &ms
	}
	if cfg.RetentionBytes > 0 {
		b := strconv.FormatInt(cfg.RetentionBytes, 10)
		topicConfigs["retention.bytes"] = &b
	}
	maxMsg := strconv.Itoa(32 << 20)
	topicConfigs["max.message.bytes"] = &maxMsg
	full := make([]string, len(names))
	for i, n := range names {
		full[i] = cfg.Topic(n)
	}
	resp, err := adm.CreateTopics(ctx, cfg.Partitions, cfg.ReplicationFactor, topicConfigs, full...)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// DayKey is the record key of everything about one day: it keeps a day's
// batches ordered on one partition through every topic.
func DayKey(project, ingestion, date string) []byte {
	b := make([]byte, 0, len(project)+len(ingestion)+len(date)+2)
	b = append(b, project...)
	b = append(b, '/')
	b = append(b, ingestion...)
	b = append(b, '/')
	b = append(b, date...)
	return b
}

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Level() kgo.LogLevel {
	if a.l == nil {
		return kgo.LogLevelNone
	}
	return kgo.LogLevelWarn
}

func (a slogAdapter) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if a.l == nil {
		return
	}
	lvl := slog.LevelInfo
	switch level {
	case kgo.LogLevelError:
		lvl = slog.LevelError
	case kgo.LogLevelWarn:
		lvl = slog.LevelWarn
	case kgo.LogLevelDebug:
		lvl = slog.LevelDebug
	}
	a.l.Log(context.Background(), lvl, "kafka: "+msg, keyvals...)
}
