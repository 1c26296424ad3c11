package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// testCheckpoints: a run's checkpoint reads back as saved, a later save
// replaces it, runs and projects do not share one, and deleting is final.
func testCheckpoints(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.Checkpoint(ctx, "p1", "run-cp"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("checkpoint of a run without one: %v, want ErrNotFound", err)
	}
	first := store.Checkpoint{Project: "p1", RunID: "run-cp", ExtractID: "x1", Token: "01b2-query", Position: "arrow:3:150",
		NextSeq: 4, Rows: 8000, Fingerprint: "8000:abc", At: t0}
	later := first
	later.Position, later.NextSeq, later.Rows, later.At = "arrow:5:0", 6, 12000, t0.Add(time.Second)
	other := first
	other.Project = "p2"
	other.NextSeq = 1
	for _, cp := range []store.Checkpoint{first, later, other} {
		if err := s.SaveCheckpoint(ctx, cp); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		project string
		want    store.Checkpoint
	}{
		{"p1", later}, // replaced, not added
		{"p2", other}, // another project's run of the same id is its own
	}
	for _, st := range steps {
		got, err := s.Checkpoint(ctx, st.project, "run-cp")
		if err != nil || got != st.want {
			t.Errorf("checkpoint of %s/run-cp = %+v (%v), want %+v", st.project, got, err, st.want)
		}
	}
	if err := s.DeleteCheckpoint(ctx, "p1", "run-cp"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteCheckpoint(ctx, "p1", "run-cp"); err != nil {
		t.Fatalf("deleting a deleted checkpoint: %v", err)
	}
	if _, err := s.Checkpoint(ctx, "p1", "run-cp"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted checkpoint: %v, want ErrNotFound", err)
	}
	if got, err := s.Checkpoint(ctx, "p2", "run-cp"); err != nil || got != other {
		t.Errorf("deleting p1's checkpoint touched p2's: %+v (%v)", got, err)
	}
}
