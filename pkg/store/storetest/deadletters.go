package storetest

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// dueDeadLetters returns the ids of the runs whose dead letters are due,
// decided before before (zero: all).
func dueDeadLetters(t testing.TB, s store.Store, before time.Time) []string {
	t.Helper()
	runs, err := s.DueDeadLetters(context.Background(), store.DeadLetterFilter{DecidedBefore: before, Limit: 100})
	if err != nil {
		t.Fatalf("due dead letters: %v", err)
	}
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.RunID)
	}
	return ids
}

// rejects pages through every rejected row of the run, three at a time.
func rejects(t testing.TB, s store.Store, project, runID string) []schemas.RejectedRow {
	t.Helper()
	var out []schemas.RejectedRow
	after := int64(-1)
	for {
		page, err := s.RunRejects(context.Background(), project, runID, after, 3)
		if err != nil {
			t.Fatalf("rejected rows of %s: %v", runID, err)
		}
		out = append(out, page...)
		if len(page) < 3 {
			return out
		}
		after = page[len(page)-1].Position
	}
}

func markPublished(t testing.TB, s store.Store, project, runID string) {
	t.Helper()
	if err := s.MarkDeadLettersPublished(context.Background(), project, runID, t0); err != nil {
		t.Fatalf("mark dead letters of %s published: %v", runID, err)
	}
}

// checkRejects asserts the run's rejected rows are exactly l's.
func checkRejects(t testing.TB, s store.Store, l Load) {
	t.Helper()
	l = l.withDefaults()
	got, want := rejects(t, s, l.Project, l.RunID), l.Rejects()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rejected rows of run %s = %+v, want those of extraction %s: %+v", l.RunID, got, l.ExtractID, want)
	}
}

// testDeadLetterOutbox: a run's rejected rows become due with the
// decision of the run (a swap, too many rejected), not before and not for
// a run that decides nothing; a redelivered batch adds none; marking them
// published ends them.
func testDeadLetterOutbox(t *testing.T, s store.Store) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	ok := Load{ExtractID: "d-ok-x", RunID: "d-ok", Date: "2024-01-01", Rows: 10, PerBatch: 4,
		Rejected: map[string]int64{"bad_time": 3, "missing_id": 2}, At: at(1)}
	bs := ok.Batches()
	stage(t, s, bs[0], bs[1])
	stage(t, s, bs[0]) // a redelivered batch with the rejected rows
	if due := dueDeadLetters(t, s, time.Time{}); len(due) != 0 {
		t.Fatalf("dead letters due before the run is decided: %v", due)
	}
	stage(t, s, bs...)
	complete(t, s, ok.End(), store.Swapped)
	stage(t, s, bs...) // redelivered after the swap
	complete(t, s, ok.End(), store.AlreadyDone)
	checkRejects(t, s, ok)

	// Runs that decide nothing, or have nothing to dead-letter.
	load(t, s, Load{ExtractID: "d-clean-x", RunID: "d-clean", Date: "2024-01-02", Rows: 3, At: at(2)}, store.Swapped)
	load(t, s, Load{ExtractID: "d-new-x", RunID: "d-new", Date: "2024-01-03", Rows: 3, Fence: 5, At: at(3)}, store.Swapped)
	stale := Load{ExtractID: "d-old-x", RunID: "d-old", Date: "2024-01-03", Rows: 3, Fence: 1,
		Rejected: map[string]int64{"bad_time": 1}, At: at(4)}
	load(t, s, stale, store.Stale)
	update(t, s, store.RunUpdate{RunID: "d-failed", Date: "2024-01-04", Status: vocab.StatusFailed, ErrorCategory: "QUERY_ERROR", At: at(5)})
	// Too many rejected decides the run: its rejected rows are its dead letters.
	tooMany := Load{ExtractID: "d-rej-x", RunID: "d-rej", Date: "2024-01-05", Rows: 1,
		Rejected: map[string]int64{"bad_time": 4}, At: at(6)}
	load(t, s, tooMany, store.TooManyRejected)
	other := Load{Project: "other", ExtractID: "d-other-x", RunID: "d-other", Rows: 2,
		Rejected: map[string]int64{"bad_time": 1}, At: at(7)}
	load(t, s, other, store.Swapped)

	if got, want := dueDeadLetters(t, s, time.Time{}), []string{"d-ok", "d-rej", "d-other"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("due dead letters %v, want %v (decided runs with rejected rows, oldest first)", got, want)
	}
	if got, want := dueDeadLetters(t, s, at(7)), []string{"d-ok", "d-rej"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("due dead letters decided before %v: %v, want %v", at(7), got, want)
	}
	checkRejects(t, s, tooMany)
	checkRejects(t, s, other)
	if got := rejects(t, s, "p1", "d-old"); len(got) != 0 {
		t.Fatalf("a stale run has rejected rows to dead-letter: %+v", got)
	}
	if got := rejects(t, s, "p1", "d-other"); len(got) != 0 {
		t.Fatalf("project p1 reads the rejected rows of project other: %+v", got)
	}

	markPublished(t, s, "p1", "d-ok")
	markPublished(t, s, "p1", "d-ok") // idempotent
	markPublished(t, s, "p1", "d-clean")
	if got, want := dueDeadLetters(t, s, time.Time{}), []string{"d-rej", "d-other"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("due after publishing d-ok: %v, want %v", got, want)
	}
	if got := rejects(t, s, "p1", "d-ok"); len(got) != 0 {
		t.Fatalf("published run keeps %d rejected rows", len(got))
	}
	// The published run's batches again: recognised, nothing comes back.
	stage(t, s, bs...)
	complete(t, s, ok.End(), store.AlreadyDone)
	if got := rejects(t, s, "p1", "d-ok"); len(got) != 0 {
		t.Fatalf("a redelivered batch of a published run staged %d rejected rows again", len(got))
	}
	markPublished(t, s, "p1", "d-rej")
	markPublished(t, s, "other", "d-other")
	if got := dueDeadLetters(t, s, time.Time{}); len(got) != 0 {
		t.Fatalf("published runs are due again: %v", got)
	}
	if r := run(t, s, "p1", "d-ok"); r.Status != vocab.StatusSuccessful || r.Rejected["bad_time"] != 3 || terminals(r) != 1 {
		t.Fatalf("run after publishing its dead letters = %+v", r)
	}
}

// testDeadLettersOfOneRunOnce: however many extractions a run took, its
// dead letters are the rejected rows of the one that decided it; a day
// reloaded before the first run's dead letters were published keeps
// them.
func testDeadLettersOfOneRunOnce(t *testing.T, s store.Store) {
	t.Run("redone extraction", func(t *testing.T) {
		// The first extraction died after its first batch (rejected rows
		// included); the retry, a new extract id, rejects other rows.
		dead := Load{ExtractID: "o-1", RunID: "run-o", Date: "2024-02-01", Rows: 12, PerBatch: 5,
			Rejected: map[string]int64{"bad_time": 2}}
		stage(t, s, dead.Batches()[0])
		retry := Load{ExtractID: "o-2", RunID: "run-o", Date: "2024-02-01", Rows: 11, PerBatch: 5,
			Rejected: map[string]int64{"bad_time": 2, "missing_id": 1}}
		load(t, s, retry, store.Swapped)
		// A third extraction (a redelivered request) after the run ended,
		// and the first one's late batches and END.
		late := Load{ExtractID: "o-3", RunID: "run-o", Date: "2024-02-01", Rows: 10, Rejected: map[string]int64{"bad_name": 4}}
		load(t, s, late, store.AlreadyDone)
		load(t, s, dead, store.AlreadyDone)
		checkRejects(t, s, retry)
		if got := dueDeadLetters(t, s, time.Time{}); !reflect.DeepEqual(got, []string{"run-o"}) {
			t.Fatalf("due %v, want run-o once", got)
		}
		markPublished(t, s, "p1", "run-o")
	})
	t.Run("reload before publication", func(t *testing.T) {
		first := Load{ExtractID: "rl-1", RunID: "run-rl-1", Date: "2024-02-02", Rows: 6, Fence: 1,
			Rejected: map[string]int64{"bad_time": 2}}
		load(t, s, first, store.Swapped)
		second := Load{ExtractID: "rl-2", RunID: "run-rl-2", Date: "2024-02-02", Rows: 7, Fence: 2,
			Trigger: vocab.TriggerReload, Rejected: map[string]int64{"missing_id": 1}, At: t0.Add(time.Hour)}
		load(t, s, second, store.Swapped)
		checkRejects(t, s, first)
		checkRejects(t, s, second)
		if got, want := dueDeadLetters(t, s, time.Time{}), []string{"run-rl-1", "run-rl-2"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("due %v, want %v: the replaced run decided itself", got, want)
		}
	})
}
