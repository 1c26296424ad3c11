package store

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/vocab"
)

// Rules shared by every Store implementation: how a run moves forward, what
// a run update does to its day, and when a completed extraction may swap.
// Backends load the current rows, apply these, and write the result back in
// the same transaction.

// ErrCountMismatch means every batch of an extraction is staged but their
// row counts do not add up to the END record's: waiting will not help.
var ErrCountMismatch = errors.New("staged row count does not match the end record")

// ErrUnknownStatus is returned by UpdateRun for a status it cannot rank.
var ErrUnknownStatus = errors.New("unknown run status")

// AdvanceRun applies u to r (the zero Run when the run is new) and reports
// whether it changed anything. An update that does not rank above the run's
// current status is a redelivery or a late message and is ignored; a
// terminal status is final.
func AdvanceRun(r *Run, u RunUpdate, at time.Time) (bool, error) {
	rank := u.Status.Rank()
	if rank == 0 {
		return false, fmt.Errorf("run %s: %w %q", u.RunID, ErrUnknownStatus, u.Status)
	}
	if r.RunID == "" {
		*r = Run{
			RunID: u.RunID, Project: u.Project, Ingestion: u.Ingestion, Type: u.Type,
			Date: u.Date, Trigger: u.Trigger, Fence: u.Fence, CreatedAt: at,
		}
	}
	if rank <= r.Status.Rank() {
		return false, nil
	}
	fillRun(r, u.Ingestion, u.Type, u.Date, u.Trigger, u.Fence)
	r.Status = u.Status
	if u.Status == vocab.StatusFailed {
		r.ErrorCategory, r.ErrorMessage = u.ErrorCategory, u.ErrorMessage
	}
	if u.Message != "" {
		r.Message = u.Message
	}
	r.History = append(r.History, Stage{Status: u.Status, At: at})
	r.UpdatedAt = at
	r.NotificationDue = u.Status.Terminal()
	return true, nil
}

// FinishRun records a swap on the run: the data is visible, so this wins
// over whatever the run said before (a retried extraction of a run that an
// extractor had already reported failed, for instance).
func FinishRun(r *Run, end RunEnd, status vocab.Status, t Tally, at time.Time) {
	if r.RunID == "" {
		*r = Run{RunID: end.RunID, Project: end.Project, CreatedAt: at}
	}
	fillRun(r, end.Ingestion, end.Type, end.Date, end.Trigger, end.Fence)
	r.Status = status
	r.ExtractID = end.ExtractID
	r.Extracted, r.Mapped, r.Rejected = end.Rows, t.Mapped, t.RejectedCopy()
	r.ErrorCategory, r.ErrorMessage = "", ""
	r.History = append(r.History, Stage{Status: status, At: at})
	r.UpdatedAt = at
	r.NotificationDue = true
	r.DeadLettersDue = t.RejectedTotal() > 0
}

// RecordCounts keeps an unswapped extraction's counts on its run.
func RecordCounts(r *Run, end RunEnd, t Tally) {
	r.ExtractID = end.ExtractID
	r.Extracted, r.Mapped, r.Rejected = end.Rows, t.Mapped, t.RejectedCopy()
}

func fillRun(r *Run, ingestion, typ, date string, trigger vocab.Trigger, fence int64) {
	if r.Ingestion == "" {
		r.Ingestion = ingestion
	}
	if r.Type == "" {
		r.Type = typ
	}
	if r.Date == "" {
		r.Date = date
	}
	if r.Trigger == "" {
		r.Trigger = trigger
	}
	r.Fence = max(r.Fence, fence)
}

// ApplyRunToDay reflects an accepted run update on its day and reports
// whether the day changed. visible says the day has loaded rows.
//
// A day without loaded rows shows its latest run's status (scheduled,
// started, failed, no data yet...). A loaded day keeps its rows and status
// whatever later runs do; a failed reload only records its error on the
// day, so the status API shows both "loaded" and why the reload failed.
// Updates from runs with a lower fence than the day's loaded run are stale.
func ApplyRunToDay(d *Day, visible bool, u RunUpdate) bool {
	if u.Fence < d.Fence {
		return false
	}
	if d.Type == "" {
		d.Type = u.Type
	}
	if !visible {
		d.Status = u.Status
		d.ErrorCategory, d.ErrorMessage = "", ""
		if u.Status == vocab.StatusFailed {
			d.ErrorCategory, d.ErrorMessage = u.ErrorCategory, u.ErrorMessage
		}
		d.Message = u.Message
		return true
	}
	if u.Status != vocab.StatusFailed {
		return false
	}
	d.ErrorCategory, d.ErrorMessage = u.ErrorCategory, u.ErrorMessage
	d.Message = fmt.Sprintf("reload by run %s failed; rows of run %s stay visible", u.RunID, d.VisibleRunID)
	return true
}

// SwapDay makes the day show the extraction end with tally t, loaded at at.
func SwapDay(d *Day, end RunEnd, t Tally, at time.Time) {
	d.Type = end.Type
	d.Status = vocab.StatusSuccessful
	if t.Mapped == 0 {
		d.Status = vocab.StatusLoadedEmpty
	}
	d.Message, d.ErrorCategory, d.ErrorMessage = "", "", ""
	d.VisibleRunID = end.RunID
	d.Fence = max(d.Fence, end.Fence)
	d.Extracted, d.RowsLoaded, d.Rejected = end.Rows, t.Mapped, t.RejectedCopy()
	if d.FirstLoadedAt == nil {
		d.FirstLoadedAt = &at
	}
	d.LastLoadedAt = &at
	// The fingerprint taken with the extraction is the baseline; without
	// one, the watcher's first check after this load sets it (see
	// RecordWarehouse).
	d.Fingerprint = end.Fingerprint
}

// RecordWarehouse keeps the watcher's latest count and fingerprint on d. The
// first fingerprint after a load becomes the day's fingerprint at load: the
// baseline later checks are compared with.
func RecordWarehouse(d *Day, count int64, fingerprint string, at time.Time) {
	d.WarehouseCount = &count
	d.WarehouseAt = &at
	d.WarehouseFinger = fingerprint
	if d.Fingerprint == "" && d.VisibleRunID != "" {
		d.Fingerprint = fingerprint
	}
}

// Tally sums the staged batches of one extraction.
type Tally struct {
	Batches  int64 // distinct batches with seq in [0, end.Batches)
	Rows     int64 // raw rows of those batches (mapped + rejected)
	Mapped   int64
	Rejected map[string]int64
}

// Add counts one staged batch when its seq belongs to an extraction of n batches.
func (t *Tally) Add(seq, n, rowCount, mapped int64, rejected map[string]int64) {
	if seq < 0 || seq >= n {
		return
	}
	t.Batches++
	t.Rows += rowCount
	t.Mapped += mapped
	for reason, c := range rejected {
		if t.Rejected == nil {
			t.Rejected = make(map[string]int64)
		}
		t.Rejected[reason] += c
	}
}

// RejectedTotal is the number of rejected rows.
func (t Tally) RejectedTotal() int64 {
	var n int64
	for _, c := range t.Rejected {
		n += c
	}
	return n
}

// RejectedCopy returns the reject counts as a fresh, never nil map.
func (t Tally) RejectedCopy() map[string]int64 {
	m := make(map[string]int64, len(t.Rejected))
	for k, v := range t.Rejected {
		m[k] = v
	}
	return m
}

// Check says whether the extraction may swap: complete is false while
// batches are missing; err is ErrCountMismatch when all are there but the
// rows do not add up.
func (t Tally) Check(end RunEnd) (complete bool, err error) {
	if t.Batches < end.Batches {
		return false, nil
	}
	if t.Rows != end.Rows {
		return false, fmt.Errorf("extraction %s: %d batches hold %d rows, end says %d: %w",
			end.ExtractID, t.Batches, t.Rows, end.Rows, ErrCountMismatch)
	}
	return true, nil
}

// TooManyRejected reports whether the share of rejected rows exceeds
// end.MaxRejectedShare, with a message naming the share and the top
// reasons. A MaxRejectedShare of zero or less disables the check (the zero
// value of RunEnd must not fail every run with one bad row); use a tiny
// positive share to reject any bad row.
func (t Tally) TooManyRejected(end RunEnd) (bool, string) {
	rejected := t.RejectedTotal()
	if end.MaxRejectedShare <= 0 || end.Rows == 0 || rejected == 0 {
		return false, ""
	}
	share := float64(rejected) / float64(end.Rows)
	if share <= end.MaxRejectedShare {
		return false, ""
	}
	type rc struct {
		reason string
		n      int64
	}
	reasons := make([]rc, 0, len(t.Rejected))
	for k, v := range t.Rejected {
		reasons = append(reasons, rc{k, v})
	}
	sort.Slice(reasons, func(i, j int) bool {
		if reasons[i].n != reasons[j].n {
			return reasons[i].n > reasons[j].n
		}
		return reasons[i].reason < reasons[j].reason
	})
	var b strings.Builder
	fmt.Fprintf(&b, "%.1f%% of %d rows rejected (limit %.1f%%); top reasons:",
		share*100, end.Rows, end.MaxRejectedShare*100)
	for i, r := range reasons {
		if i == 3 {
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s %d", r.reason, r.n)
	}
	return true, b.String()
}
