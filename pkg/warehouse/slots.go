package warehouse

import (
	"context"
	"time"
)

// QuerySlots bounds how many queries a connection runs at once (its
// max_concurrency, which protects the customer's warehouse) and applies
// the connection's query timeout to each.
type QuerySlots struct {
	sem     chan struct{}
	timeout time.Duration
}

// NewQuerySlots allows n concurrent queries (at least one), each bounded by
// timeout when it is positive.
func NewQuerySlots(n int, timeout time.Duration) *QuerySlots {
	return &QuerySlots{sem: make(chan struct{}, max(n, 1)), timeout: timeout}
}

// Acquire waits for a free slot. It returns the query's context and a
// release func to call once the query's rows are closed.
func (q *QuerySlots) Acquire(ctx context.Context) (context.Context, func(), error) {
	select {
	case q.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	cancel := func() {}
	if q.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, q.timeout)
	}
	return ctx, func() { cancel(); <-q.sem }, nil
}
