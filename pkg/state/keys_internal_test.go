package state

import (
	"strings"
	"testing"
)

// hashTag is the part of key Redis Cluster hashes: the first {...} with
// something inside, else the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// TestDayKeysShareAHashTag: every key a day's script touches hashes to one
// slot, with or without a hash tag in the prefix, whatever the day's names.
func TestDayKeysShareAHashTag(t *testing.T) {
	days := []DayKey{
		{Project: "p", Ingestion: "events", Date: "2024-01-02"},
		{Project: "p{x}", Ingestion: "with }{ braces", Date: "2024-01-01"},
		{Project: "a/b:c", Ingestion: "", Date: "d"},
	}
	for _, prefix := range []string{"sluice:", "{sluice}:", "a}b:"} {
		s := New(nil, Options{Prefix: prefix})
		for _, d := range days {
			keys := s.dayKeys(d)
			tag := hashTag(keys[0])
			for _, k := range keys[1:] {
				if hashTag(k) != tag {
					t.Errorf("prefix %q day %v: %s hashes on %q, %s on %q", prefix, d, keys[0], tag, k, hashTag(k))
				}
			}
			if other := s.dayKeys(DayKey{Project: d.Project, Ingestion: d.Ingestion, Date: d.Date + "x"}); prefix == "sluice:" && hashTag(other[0]) == tag {
				t.Errorf("days %v and its neighbour share slot tag %q: the tag must name the day", d, tag)
			}
		}
	}
}
