package kafka

import (
	"context"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// AsyncProducer produces records without waiting for each, remembers the
// first failure, and waits for all of them at the end: a stage keeps
// working on its next records while the broker acknowledges the last, and
// still returns only once every output is durable.
type AsyncProducer struct {
	client *kgo.Client
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// NewAsyncProducer produces through cl.
func NewAsyncProducer(cl *kgo.Client) *AsyncProducer { return &AsyncProducer{client: cl} }

// Produce starts producing r; it fails at once if an earlier record failed.
func (p *AsyncProducer) Produce(ctx context.Context, r *kgo.Record) error {
	return p.ProduceAcked(ctx, r, nil)
}

// ProduceAcked is Produce that calls acked, if not nil, once the broker
// has acknowledged r. Acknowledgements of one partition come in produce
// order; acked runs on the client's callback goroutine, so it must not
// block.
func (p *AsyncProducer) ProduceAcked(ctx context.Context, r *kgo.Record, acked func()) error {
	if err := p.firstErr(); err != nil {
		return err
	}
	p.wg.Add(1)
	p.client.Produce(ctx, r, func(_ *kgo.Record, err error) {
		if err != nil {
			p.mu.Lock()
			if p.err == nil {
				p.err = fmt.Errorf("produce to %s: %w", r.Topic, err)
			}
			p.mu.Unlock()
		} else if acked != nil {
			acked()
		}
		p.wg.Done()
	})
	return nil
}

func (p *AsyncProducer) firstErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Wait blocks until every record produced so far is acknowledged or
// failed, and returns the first failure; ctx only bounds the wait.
func (p *AsyncProducer) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return p.firstErr()
	case <-ctx.Done():
		return ctx.Err()
	}
}
