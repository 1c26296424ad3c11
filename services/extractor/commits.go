package extractor

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// commitTracker lets requests finish out of order while offsets are
// committed in order: a partition's offset advances only past a prefix of
// finished requests, so a crash redoes unfinished ones and loses none.
type commitTracker struct {
	mu    sync.Mutex
	parts map[topicPartition]*partitionQueue
}

type topicPartition struct {
	topic     string
	partition int32
}

type partitionQueue struct {
	pending   []pendingOffset // in the order polled (ascending offsets)
	committed kgo.EpochOffset
	dirty     bool
}

type pendingOffset struct {
	offset int64
	epoch  int32
	done   bool
}

func newCommitTracker() *commitTracker {
	return &commitTracker{parts: map[topicPartition]*partitionQueue{}}
}

func (t *commitTracker) add(r *kgo.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tp := topicPartition{r.Topic, r.Partition}
	q := t.parts[tp]
	if q == nil {
		q = &partitionQueue{}
		t.parts[tp] = q
	}
	q.pending = append(q.pending, pendingOffset{offset: r.Offset, epoch: r.LeaderEpoch})
}

func (t *commitTracker) done(r *kgo.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.parts[topicPartition{r.Topic, r.Partition}]
	if q == nil {
		return // partition revoked meanwhile
	}
	for i := range q.pending {
		if q.pending[i].offset == r.Offset {
			q.pending[i].done = true
			break
		}
	}
	n := 0
	for n < len(q.pending) && q.pending[n].done {
		n++
	}
	if n > 0 {
		last := q.pending[n-1]
		q.committed = kgo.EpochOffset{Epoch: last.epoch, Offset: last.offset + 1}
		q.dirty = true
		q.pending = append(q.pending[:0], q.pending[n:]...)
	}
}

// committable returns the offsets that advanced since the last call.
func (t *commitTracker) committable() map[string]map[int32]kgo.EpochOffset {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out map[string]map[int32]kgo.EpochOffset
	for tp, q := range t.parts {
		if !q.dirty {
			continue
		}
		if out == nil {
			out = map[string]map[int32]kgo.EpochOffset{}
		}
		if out[tp.topic] == nil {
			out[tp.topic] = map[int32]kgo.EpochOffset{}
		}
		out[tp.topic][tp.partition] = q.committed
		q.dirty = false
	}
	return out
}

// forget drops revoked partitions: their unfinished requests will be
// redone by the new owner.
func (t *commitTracker) forget(revoked map[string][]int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for topic, parts := range revoked {
		for _, p := range parts {
			delete(t.parts, topicPartition{topic, p})
		}
	}
}
