package extractor

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func rec(partition int32, offset int64) *kgo.Record {
	return &kgo.Record{Topic: "ingest-requests", Partition: partition, Offset: offset, LeaderEpoch: 1}
}

// Requests finish out of order; the committed offset only ever passes a
// prefix of finished requests, so a crash redoes the unfinished ones.
func TestCommitTrackerCommitsOnlyFinishedPrefixes(t *testing.T) {
	tr := newCommitTracker()
	a, b, c := rec(0, 10), rec(0, 11), rec(0, 12)
	other := rec(1, 5)
	for _, r := range []*kgo.Record{a, b, c, other} {
		tr.add(r)
	}
	steps := []struct {
		done *kgo.Record
		want map[int32]int64 // partition -> committed offset; absent = nothing new
	}{
		{c, nil},                       // 10 and 11 still running
		{other, map[int32]int64{1: 6}}, // another partition is independent
		{a, map[int32]int64{0: 11}},    // 10 done: commit up to it
		{b, map[int32]int64{0: 13}},    // 11 done, 12 was done: jump past both
	}
	for i, s := range steps {
		tr.done(s.done)
		got := tr.committable()
		if len(s.want) == 0 {
			if len(got) != 0 {
				t.Fatalf("step %d: committed %v before the prefix finished", i, got)
			}
			continue
		}
		for p, off := range s.want {
			if eo, ok := got["ingest-requests"][p]; !ok || eo.Offset != off {
				t.Fatalf("step %d: partition %d committed %+v, want offset %d", i, p, got["ingest-requests"][p], off)
			}
		}
	}
}

func TestCommitTrackerForgetsRevokedPartitions(t *testing.T) {
	tr := newCommitTracker()
	r := rec(3, 7)
	tr.add(r)
	tr.forget(map[string][]int32{"ingest-requests": {3}})
	tr.done(r) // finished after the partition moved to another consumer
	if got := tr.committable(); len(got) != 0 {
		t.Fatalf("committed a revoked partition: %v", got)
	}
}

func TestGroupNamePerSelection(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "sluice-extractor"},
		{Config{Kinds: []string{"snowflake"}}, "sluice-extractor.kind=snowflake"},
		{Config{Connections: []string{"b", "a"}}, "sluice-extractor.conn=a+b"},
	}
	for _, tc := range cases {
		if got := tc.cfg.GroupName(); got != tc.want {
			t.Errorf("%+v: group %q, want %q", tc.cfg, got, tc.want)
		}
	}
}
