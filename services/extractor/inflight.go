package extractor

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// inflight holds a cancel per running request, by partition, so a
// partition that moves to another extractor stops its extractions here
// first: two extractors never query the same day at once, and the
// partition's offsets move only past requests that finished.
type inflight struct {
	mu    sync.Mutex
	parts map[topicPartition]map[int64]*job
}

type job struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newInflight() *inflight {
	return &inflight{parts: map[topicPartition]map[int64]*job{}}
}

// start registers rec's request and returns its context, cancelled when
// its partition is revoked, and finish, to call once it has returned.
func (f *inflight) start(parent context.Context, rec *kgo.Record) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	j := &job{cancel: cancel, done: make(chan struct{})}
	tp := topicPartition{rec.Topic, rec.Partition}
	f.mu.Lock()
	if f.parts[tp] == nil {
		f.parts[tp] = map[int64]*job{}
	}
	f.parts[tp][rec.Offset] = j
	f.mu.Unlock()
	return ctx, func() {
		f.mu.Lock()
		if jobs := f.parts[tp]; jobs[rec.Offset] == j {
			delete(jobs, rec.Offset)
		}
		f.mu.Unlock()
		cancel()
		close(j.done)
	}
}

// stop cancels the requests of the revoked partitions and waits, at most
// timeout, for them to return. It reports how many were still running
// when the wait ended.
func (f *inflight) stop(revoked map[string][]int32, timeout time.Duration) (stopped, left int) {
	var jobs []*job
	f.mu.Lock()
	for topic, parts := range revoked {
		for _, p := range parts {
			for _, j := range f.parts[topicPartition{topic, p}] {
				j.cancel()
				jobs = append(jobs, j)
			}
		}
	}
	f.mu.Unlock()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for i, j := range jobs {
		select {
		case <-j.done:
		case <-deadline.C:
			return i, len(jobs) - i
		}
	}
	return len(jobs), 0
}
