package warehouse

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestQuerySlotsBoundConcurrencyAndApplyTimeout(t *testing.T) {
	q := NewQuerySlots(2, time.Hour)
	var releases []func()
	for range 2 {
		ctx, release, err := q.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := ctx.Deadline(); !ok {
			t.Fatal("query context has no deadline from the timeout")
		}
		releases = append(releases, release)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := q.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("third acquire with both slots held = %v, want the caller's cancellation", err)
	}
	releases[0]()
	if _, release, err := q.Acquire(context.Background()); err != nil {
		t.Fatalf("acquire after a release: %v", err)
	} else {
		release()
	}
	releases[1]()
}

func TestQuerySlotsAtLeastOne(t *testing.T) {
	q := NewQuerySlots(0, 0)
	ctx, release, err := q.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ctx.Deadline(); ok {
		t.Fatal("no timeout configured, yet the context has a deadline")
	}
	release()
}
