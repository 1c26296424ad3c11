package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ConsumerConfig configures one consumer group loop.
type ConsumerConfig struct {
	Group          string
	Topics         []string // full topic names
	MaxPollRecords int
	// DrainTimeout bounds how long the batch in hand may take to finish
	// once the loop is told to stop.
	DrainTimeout time.Duration
	// RetryBackoff is the first wait after a failed batch; it doubles up to
	// MaxBackoff. A failed batch is retried, never skipped: its offsets are
	// not committed until it succeeds.
	RetryBackoff time.Duration
	MaxBackoff   time.Duration
}

func (c *ConsumerConfig) defaults() {
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = 500
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
}

// Group member liveness. A member that dies without leaving (SIGKILL, a
// lost node) keeps its partitions until the coordinator misses its
// heartbeats for SessionTimeout; franz-go's 45 s default makes every crash
// stall its partitions that long. 10 s was Kafka's own default before 3.0
// and is above every broker's minimum (6 s); heartbeats run on their own
// goroutine, so a slow batch does not miss them. A 1 s heartbeat also lets
// cooperative members see a rebalance, and finish its second round, sooner.
const (
	SessionTimeout    = 10 * time.Second
	HeartbeatInterval = time.Second
)

// GroupLiveness are the session options every Sluice consumer group uses.
func GroupLiveness() []kgo.Opt {
	return []kgo.Opt{kgo.SessionTimeout(SessionTimeout), kgo.HeartbeatInterval(HeartbeatInterval)}
}

// GroupOpts are the client options of a consumer that commits by hand
// after its work is durable, and holds rebalances while a batch is in hand.
func GroupOpts(c ConsumerConfig) []kgo.Opt {
	return append(GroupLiveness(),
		kgo.ConsumerGroup(c.Group),
		kgo.ConsumeTopics(c.Topics...),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
}

// Handler processes one poll's records. It returns nil only once every
// effect of the records is durable; then their offsets are committed.
type Handler func(ctx context.Context, records []*kgo.Record) error

// FinalCommitTimeout bounds the commit of the batch that finished after
// Consume was told to stop, so a stop takes at most DrainTimeout plus
// this. A commit to a reachable broker takes milliseconds; one that is
// lost only redelivers work whose effects are idempotent.
const FinalCommitTimeout = 5 * time.Second

// Consume polls cl (built with GroupOpts) and runs handle on each poll's
// records until ctx is cancelled. A failing batch is retried with backoff
// and its offsets stay uncommitted, so nothing is lost. Cancelling ctx
// stops the polling, not the batch in hand: that batch keeps an
// uncancelled context for DrainTimeout more, then its offsets are
// committed synchronously (bounded by FinalCommitTimeout), and Consume
// returns nil. A batch that overruns DrainTimeout has its context
// cancelled and stays uncommitted, for whoever owns the partitions next.
func Consume(ctx context.Context, cl *kgo.Client, cfg ConsumerConfig, logger *slog.Logger, handle Handler) error {
	cfg.defaults()
	for {
		fetches := cl.PollRecords(ctx, cfg.MaxPollRecords)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			logger.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
		})
		records := fetches.Records()
		if len(records) == 0 {
			cl.AllowRebalance()
			continue
		}
		if err := handleWithRetry(ctx, cfg, logger, records, handle); err != nil {
			// Stopped before the batch succeeded: leave it uncommitted for
			// whoever owns the partitions next.
			cl.AllowRebalance()
			return nil
		}
		commitTimeout := cfg.DrainTimeout
		if ctx.Err() != nil {
			commitTimeout = min(commitTimeout, FinalCommitTimeout)
		}
		commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		err := cl.CommitRecords(commitCtx, records...)
		cancel()
		cl.AllowRebalance()
		if err != nil {
			// The work is durable and idempotent; a redelivery after a lost
			// commit changes nothing.
			logger.Warn("commit offsets", "group", cfg.Group, "err", err)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// handleWithRetry runs handle until it succeeds. Once ctx is cancelled the
// attempt in progress may run DrainTimeout longer; errStopped means it gave up.
func handleWithRetry(ctx context.Context, cfg ConsumerConfig, logger *slog.Logger, records []*kgo.Record, handle Handler) error {
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(cfg.DrainTimeout, cancelWork)
		context.AfterFunc(workCtx, func() { t.Stop() })
	})
	defer stop()

	backoff := cfg.RetryBackoff
	for attempt := 1; ; attempt++ {
		err := handle(workCtx, records)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errStopped
		}
		first := records[0]
		logger.Error("handle batch, will retry", "group", cfg.Group, "topic", first.Topic,
			"partition", first.Partition, "offset", first.Offset, "records", len(records),
			"attempt", attempt, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return errStopped
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, cfg.MaxBackoff)
	}
}

var errStopped = errors.New("consumer stopped")

// ProduceSync produces records and waits until all are acknowledged.
func ProduceSync(ctx context.Context, cl *kgo.Client, records ...*kgo.Record) error {
	if len(records) == 0 {
		return nil
	}
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		return fmt.Errorf("produce %d records to %s: %w", len(records), records[0].Topic, err)
	}
	return nil
}
