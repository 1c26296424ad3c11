package store

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/pkg/vocab"
)

// The write decisions of a store, once for every backend. A backend
// embeds a Writer over its Transact; the Writer's CompleteRun, UpdateRun
// and RecordWarehouseCount run DaySwap, ApplyRunUpdate or
// ApplyWarehouseCount over the backend's transaction through the small
// interfaces below. The backend writes SQL; it decides
// nothing.
//
// Lock order, which every decision keeps so that two transactions never
// wait on each other in a cycle: the extraction, then the run, then the
// day.

// ExtractionState is where one extraction (one attempt to stream a run's
// rows, identified by its extract id) stands in the store.
type ExtractionState string

const (
	// ExtractionStaging: batches are arriving; its rows are invisible.
	ExtractionStaging ExtractionState = "staging"
	// ExtractionVisible: its rows are the day's rows.
	ExtractionVisible ExtractionState = "visible"
	// ExtractionReplaced: it was visible until a later swap of the day won.
	ExtractionReplaced ExtractionState = "replaced"
	// ExtractionStale: a run with a higher fence owned the day, or a later
	// extraction of the day swapped in while this one was still staging.
	ExtractionStale ExtractionState = "stale"
	// ExtractionFailed: too many of its rows were rejected.
	ExtractionFailed ExtractionState = "failed"
	// ExtractionDuplicate: another extraction of a run that had already
	// ended (a redelivered request extracted the day again); it changes
	// nothing.
	ExtractionDuplicate ExtractionState = "duplicate"
)

// LockedDay is a day as a write transaction holds it.
type LockedDay struct {
	Day
	// Visible is the xid of the extraction whose rows the day shows, 0
	// when none.
	Visible int64
	// Exists says the store has a row for the day; SaveDay inserts one
	// when it does not.
	Exists bool
}

// DayTx is the part of a backend's write transaction that reads and
// writes days.
type DayTx interface {
	// LockDay returns the day and holds it against every other writer of
	// that day until the transaction ends, also when the store has no row
	// for it yet (then it returns Exists false and nothing else; a backend
	// locks the missing key however it can, and leaves no trace of it for
	// readers).
	LockDay(ctx context.Context, project, ingestion, date string) (LockedDay, error)
	// SaveDay writes d (every field of d.Day, and d.Visible as the day's
	// visible extraction), inserting the row when d.Exists is false.
	SaveDay(ctx context.Context, d LockedDay) error
}

// RunTx is the part of a backend's write transaction that reads and
// writes runs, with days (a run's progress shows on its day).
type RunTx interface {
	DayTx
	// LockRun returns the run and holds it against every other writer of
	// that run until the transaction ends, also when it does not exist yet
	// (then exists is false and the Run is zero). Lock a run before its
	// day.
	LockRun(ctx context.Context, project, runID string, at time.Time) (r Run, exists bool, err error)
	// SaveRun writes every field of r; exists is what LockRun said. When
	// r.NotificationDue is set it also makes the run's notification due
	// (see Store.ClaimNotifications), and when r.DeadLettersDue is set
	// its dead letters (see Store.DueDeadLetters); otherwise those states
	// stay as they are.
	SaveRun(ctx context.Context, r Run, exists bool) error
}

// SwapTx is a backend's write transaction as DaySwap uses it. An
// extraction is known by its xid: a positive number the backend assigns
// when it registers the extraction, larger for later registrations.
type SwapTx interface {
	RunTx
	// LockExtraction returns the xid and state of the extraction
	// end.ExtractID, registering it first (ExtractionStaging, with end's
	// run id, project, ingestion, date, type and fence) when the store
	// has never seen it, and holds it until the transaction ends: staging
	// into it waits, and so does another completion of it. Lock it before
	// its run.
	LockExtraction(ctx context.Context, end RunEnd, at time.Time) (xid int64, state ExtractionState, err error)
	// StagedTally sums the batches staged under xid whose seq is in
	// [0, batches).
	StagedTally(ctx context.Context, xid, batches int64) (Tally, error)
	// SetExtractionState moves the extraction xid to state.
	SetExtractionState(ctx context.Context, xid int64, state ExtractionState) error
	// RetireAbandoned marks ExtractionStale the extractions of end's day
	// other than keep that are still staging and either belong to end's
	// run (end.RunID) or were registered before keep (xid < keep) with a
	// fence no higher than end.Fence, and returns their xids for Purge. A
	// backend may skip an extraction that another transaction holds: that
	// one is retired by its own completion or a later swap of the day.
	RetireAbandoned(ctx context.Context, end RunEnd, keep int64) ([]int64, error)
	// Purge deletes the records staged under the extractions xids, and
	// whatever else a backend stages per extraction, except their rejected
	// rows (see DropRejects). The extractions themselves and their batch
	// bookkeeping stay, so a redelivered batch of a purged extraction is
	// still recognised and skipped. No xids is a no-op.
	Purge(ctx context.Context, xids []int64) error
	// DropRejects deletes the rejected rows staged under the extractions
	// xids: they decided no run, so they are never dead letters. No xids
	// is a no-op.
	DropRejects(ctx context.Context, xids []int64) error
	// RecordUsage adds u to the usage ledger unless the ledger already
	// holds a line of u's run (u.Project, u.RunID): usage is counted once
	// per run that became visible, whichever extraction it was.
	RecordUsage(ctx context.Context, u Usage) error
}

// Usage is one line of the usage ledger as a swap writes it.
type Usage struct {
	XID       int64 // the extraction whose rows became visible
	Project   string
	Ingestion string
	Date      string
	Trigger   vocab.Trigger
	RunID     string
	Rows      int64 // records loaded
	At        time.Time
}

// Transact runs fn in one write transaction of a backend: it commits when
// fn returns nil and rolls back otherwise.
type Transact func(ctx context.Context, fn func(tx SwapTx) error) error

// Writer is a backend's CompleteRun, UpdateRun and RecordWarehouseCount
// over its Transact: a backend embeds it.
type Writer struct {
	Transact Transact
	// Now is the clock for the times callers leave zero.
	Now func() time.Time
}

// At is t in UTC, or now when t is zero: the time a write records.
func (w Writer) At(t time.Time) time.Time {
	if t.IsZero() {
		return w.Now().UTC()
	}
	return t.UTC()
}

// CompleteRun is DaySwap in one transaction; see Store.
func (w Writer) CompleteRun(ctx context.Context, end RunEnd) (Outcome, error) {
	at := w.At(end.At)
	out := Incomplete
	err := w.Transact(ctx, func(tx SwapTx) error {
		var err error
		out, err = DaySwap(ctx, tx, end, at)
		return err
	})
	if err != nil {
		return Incomplete, fmt.Errorf("complete extraction %s of run %s (%s %s): %w", end.ExtractID, end.RunID, end.Ingestion, end.Date, err)
	}
	return out, nil
}

// UpdateRun is ApplyRunUpdate in one transaction; see Store.
func (w Writer) UpdateRun(ctx context.Context, u RunUpdate) error {
	_, err := w.UpdateRunChanged(ctx, u)
	return err
}

// UpdateRunChanged is UpdateRun, reporting whether u changed the run; see
// Store.
func (w Writer) UpdateRunChanged(ctx context.Context, u RunUpdate) (bool, error) {
	at := w.At(u.At)
	changed := false
	err := w.Transact(ctx, func(tx SwapTx) error {
		var err error
		changed, err = ApplyRunUpdate(ctx, tx, u, at)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("update run %s to %s: %w", u.RunID, u.Status, err)
	}
	return changed, nil
}

// RecordWarehouseCount is ApplyWarehouseCount in one transaction; see
// Store.
func (w Writer) RecordWarehouseCount(ctx context.Context, project, ingestion, date string, count int64, fingerprint string, at time.Time) error {
	at = w.At(at)
	err := w.Transact(ctx, func(tx SwapTx) error {
		return ApplyWarehouseCount(ctx, tx, project, ingestion, date, count, fingerprint, at)
	})
	if err != nil {
		return fmt.Errorf("record warehouse count of %s %s: %w", ingestion, date, err)
	}
	return nil
}

// DaySwap is CompleteRun, decided once for every backend: it makes the
// extraction end's staged rows the day's rows when every batch is
// staged, and writes the run's status, counts, history and usage in the
// same transaction tx. at is the time recorded for what it writes. The
// caller commits tx when err is nil, whatever the outcome.
//
//   - AlreadyDone: the extraction was completed, failed or retired before
//     (a redelivered END), or its run has ended (its status is Terminal) through
//     another extraction or an update: the extraction is retired
//     (ExtractionDuplicate, its rows and rejected rows dropped) and
//     nothing else changes. So a run swaps, counts usage, records a
//     terminal status and has its dead letters once.
//   - Stale: a run with a higher fence loaded the day; the extraction is
//     retired (rows and rejected rows dropped), its run SUPERSEDED.
//   - Incomplete: batches are missing; nothing changes.
//   - ErrCountMismatch (an error): every batch is there but the rows do
//     not add up to end.Rows.
//   - TooManyRejected: the run FAILED with vocab.CategoryTooManyRejected; the
//     extraction is retired, its rejected rows due as the run's dead
//     letters; a loaded day keeps its rows.
//   - Swapped: the day shows the extraction's rows and its rejected rows
//     are due as the run's dead letters; the day's previous extraction is
//     replaced (its rows purged; its rejected rows stay until its own
//     run's dead letters are published) and older abandoned ones are
//     retired, their rows and rejected rows dropped.
func DaySwap(ctx context.Context, tx SwapTx, end RunEnd, at time.Time) (Outcome, error) {
	xid, state, err := tx.LockExtraction(ctx, end, at)
	if err != nil {
		return Incomplete, err
	}
	if state != ExtractionStaging {
		return AlreadyDone, nil
	}
	run, runExists, err := tx.LockRun(ctx, end.Project, end.RunID, at)
	if err != nil {
		return Incomplete, err
	}
	if run.Status.Terminal() {
		if err := tx.SetExtractionState(ctx, xid, ExtractionDuplicate); err != nil {
			return Incomplete, err
		}
		return AlreadyDone, retire(ctx, tx, []int64{xid})
	}
	day, err := lockDay(ctx, tx, end.Project, end.Ingestion, end.Date, end.Type)
	if err != nil {
		return Incomplete, err
	}
	if day.Fence > end.Fence {
		u := RunUpdate{Status: vocab.StatusSuperseded,
			Message: fmt.Sprintf("day already loaded by run %s with fence %d", day.VisibleRunID, day.Fence)}
		return Stale, discard(ctx, tx, xid, ExtractionStale, end, run, runExists, u, at)
	}
	tally, err := tx.StagedTally(ctx, xid, end.Batches)
	if err != nil {
		return Incomplete, err
	}
	complete, err := tally.Check(end)
	if err != nil || !complete {
		return Incomplete, err
	}
	if tooMany, msg := tally.TooManyRejected(end); tooMany {
		u := RunUpdate{Status: vocab.StatusFailed, ErrorCategory: vocab.CategoryTooManyRejected, ErrorMessage: msg}
		if err := discard(ctx, tx, xid, ExtractionFailed, end, run, runExists, u, at); err != nil {
			return Incomplete, err
		}
		u.RunID, u.Type, u.Fence = end.RunID, end.Type, end.Fence
		if ApplyRunToDay(&day.Day, day.Visible != 0, u) {
			return TooManyRejected, tx.SaveDay(ctx, day)
		}
		return TooManyRejected, nil
	}
	return Swapped, swap(ctx, tx, xid, day, end, run, runExists, tally, at)
}

// lockDay locks the day, typed typ when the store does not have it yet.
func lockDay(ctx context.Context, tx DayTx, project, ingestion, date, typ string) (LockedDay, error) {
	d, err := tx.LockDay(ctx, project, ingestion, date)
	if err != nil {
		return d, err
	}
	if !d.Exists {
		d.Day = Day{Project: project, Ingestion: ingestion, Date: date, Type: typ}
		d.Visible = 0
	}
	return d, nil
}

func swap(ctx context.Context, tx SwapTx, xid int64, day LockedDay, end RunEnd, run Run, runExists bool, t Tally, at time.Time) error {
	old := day.Visible
	SwapDay(&day.Day, end, t, at)
	day.Visible = xid
	if err := tx.SaveDay(ctx, day); err != nil {
		return err
	}
	if err := tx.SetExtractionState(ctx, xid, ExtractionVisible); err != nil {
		return err
	}
	// The replaced extraction, older extractions of the day that never
	// finished (an extractor retried under a new extract_id) and other
	// extractions of this run still staging go now.
	var gone []int64
	if old != 0 && old != xid {
		gone = append(gone, old)
		if err := tx.SetExtractionState(ctx, old, ExtractionReplaced); err != nil {
			return err
		}
	}
	abandoned, err := tx.RetireAbandoned(ctx, end, xid)
	if err != nil {
		return err
	}
	if err := tx.Purge(ctx, gone); err != nil {
		return err
	}
	if err := retire(ctx, tx, abandoned); err != nil {
		return err
	}
	FinishRun(&run, end, day.Status, t, at)
	if err := tx.SaveRun(ctx, run, runExists); err != nil {
		return err
	}
	return tx.RecordUsage(ctx, Usage{XID: xid, Project: end.Project, Ingestion: end.Ingestion, Date: end.Date,
		Trigger: run.Trigger, RunID: end.RunID, Rows: t.Mapped, At: at})
}

// retire drops everything staged under extractions that decided no run:
// their rows and their rejected rows.
func retire(ctx context.Context, tx SwapTx, xids []int64) error {
	if err := tx.Purge(ctx, xids); err != nil {
		return err
	}
	return tx.DropRejects(ctx, xids)
}

// discard ends an extraction without swapping: it takes state, its rows
// go, and its run takes u (if that moves it forward) and keeps the
// extraction's counts. A failed extraction decided its run, so its
// rejected rows stay as the run's dead letters; a stale one's go.
func discard(ctx context.Context, tx SwapTx, xid int64, state ExtractionState, end RunEnd, run Run, runExists bool, u RunUpdate, at time.Time) error {
	if err := tx.SetExtractionState(ctx, xid, state); err != nil {
		return err
	}
	decided := state == ExtractionFailed
	if decided {
		if err := tx.Purge(ctx, []int64{xid}); err != nil {
			return err
		}
	} else if err := retire(ctx, tx, []int64{xid}); err != nil {
		return err
	}
	u.RunID, u.Project, u.Ingestion, u.Type, u.Date, u.Trigger, u.Fence = end.RunID, end.Project, end.Ingestion, end.Type, end.Date, end.Trigger, end.Fence
	if _, err := AdvanceRun(&run, u, at); err != nil {
		return err
	}
	if t, err := tx.StagedTally(ctx, xid, end.Batches); err == nil {
		RecordCounts(&run, end, t)
		run.DeadLettersDue = decided && t.RejectedTotal() > 0
	}
	return tx.SaveRun(ctx, run, runExists)
}

// ApplyRunUpdate is UpdateRun, decided once for every backend: the run
// moves forward by u (AdvanceRun) and, when it did, its day reflects it
// (ApplyRunToDay). changed is false when u was a redelivery or a late
// message: nothing was written.
func ApplyRunUpdate(ctx context.Context, tx RunTx, u RunUpdate, at time.Time) (changed bool, err error) {
	run, exists, err := tx.LockRun(ctx, u.Project, u.RunID, at)
	if err != nil {
		return false, err
	}
	if changed, err = AdvanceRun(&run, u, at); err != nil || !changed {
		return false, err
	}
	if err := tx.SaveRun(ctx, run, exists); err != nil {
		return false, err
	}
	if u.Date == "" || u.Ingestion == "" {
		return true, nil
	}
	day, err := lockDay(ctx, tx, u.Project, u.Ingestion, u.Date, u.Type)
	if err != nil {
		return false, err
	}
	if ApplyRunToDay(&day.Day, day.Visible != 0, u) {
		return true, tx.SaveDay(ctx, day)
	}
	return true, nil
}

// ApplyWarehouseCount is RecordWarehouseCount, decided once: the day must
// exist (ErrNotFound otherwise) and keeps the count (RecordWarehouse).
func ApplyWarehouseCount(ctx context.Context, tx DayTx, project, ingestion, date string, count int64, fingerprint string, at time.Time) error {
	day, err := tx.LockDay(ctx, project, ingestion, date)
	if err != nil {
		return err
	}
	if !day.Exists {
		return fmt.Errorf("day %s %s of %s: %w", ingestion, date, project, ErrNotFound)
	}
	RecordWarehouse(&day.Day, count, fingerprint, at)
	return tx.SaveDay(ctx, day)
}
