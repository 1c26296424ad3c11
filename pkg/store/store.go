// Package store is the event store: where mapped records land, where a day
// becomes visible atomically, and where everything that must survive a
// Redis flush lives (days loaded, their counts, run history, usage, due
// webhook notifications, rejected rows not yet dead-lettered).
//
// Every effect of a run happens once: its rows become visible, its usage
// is counted (keyed by project and run id), its history gets its one
// terminal status, its notification becomes due and so do its dead
// letters, all in the transaction of its terminal transition; after that,
// no extraction or update of the run changes anything.
//
// The decisions live here once (DaySwap, ApplyRunUpdate, in swap.go); a
// backend implements SwapTx with its SQL and embeds a Writer. PostgreSQL
// (package store/postgres) is the production store, DuckDB (store/duckdb)
// the embedded one; both pass the suite in store/storetest, which a new
// backend (ClickHouse) runs too.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// ErrNotFound is returned when a run or day does not exist (in that project).
var ErrNotFound = errors.New("not found")

// RunEnd says an extraction finished: Batches ROWS batches holding Rows rows.
type RunEnd struct {
	RunID     string
	ExtractID string
	Project   string
	Ingestion string
	Type      string // events | metrics
	Date      string // YYYY-MM-DD
	Trigger   vocab.Trigger
	Fence     int64
	Batches   int64
	Rows      int64
	// MaxRejectedShare fails the run instead of swapping when more than this
	// share of its rows was rejected.
	MaxRejectedShare float64
	At               time.Time
	// Fingerprint is the day's warehouse fingerprint taken by the
	// extraction, "" when unknown; a swap keeps it as the day's baseline.
	Fingerprint string
}

// Outcome is what CompleteRun did.
type Outcome int

const (
	// Incomplete: not every batch of the extraction is staged yet.
	Incomplete Outcome = iota
	// Swapped: the day now shows this extraction's rows.
	Swapped
	// AlreadyDone: this extraction was completed before (a redelivery), or
	// its run had already ended: nothing changed.
	AlreadyDone
	// Stale: a run with a newer fence already owns the day; nothing changed.
	Stale
	// TooManyRejected: the run failed on the rejected-rows threshold.
	TooManyRejected
)

// RunUpdate moves a run forward. Stages never go backwards: an update to an
// earlier stage than the run's current one (a redelivery) is ignored.
type RunUpdate struct {
	RunID         string
	Project       string
	Ingestion     string
	Type          string
	Date          string
	Trigger       vocab.Trigger
	Fence         int64
	Status        vocab.Status
	ErrorCategory vocab.Category
	ErrorMessage  string
	Message       string
	At            time.Time
}

// Run is one attempt to load a day.
type Run struct {
	RunID         string           `json:"runID"`
	Project       string           `json:"project"`
	Ingestion     string           `json:"source"`
	Type          string           `json:"type"`
	Date          string           `json:"ds"`
	Trigger       vocab.Trigger    `json:"trigger"`
	Fence         int64            `json:"fence"`
	Status        vocab.Status     `json:"latestStatus"`
	ExtractID     string           `json:"extractID,omitempty"`
	Extracted     int64            `json:"extracted"`
	Mapped        int64            `json:"mapped"`
	Rejected      map[string]int64 `json:"rejected"`
	ErrorCategory vocab.Category   `json:"errorCategory,omitempty"`
	ErrorMessage  string           `json:"errorMessage,omitempty"`
	Message       string           `json:"message,omitempty"`
	History       []Stage          `json:"runHistory"`
	CreatedAt     time.Time        `json:"createdAt"`
	UpdatedAt     time.Time        `json:"updatedAt"`
	// NotificationDue is set by the transition to a terminal status
	// (AdvanceRun, FinishRun): SaveRun then makes the run's notification
	// due in the same transaction. Reads leave it false.
	NotificationDue bool `json:"-"`
	// DeadLettersDue is set by the decision of a run that has rejected
	// rows (a swap, or a failure on too many of them): SaveRun then makes
	// the rejected rows of its extraction (ExtractID) due for the
	// dead-letter topic in the same transaction. Reads leave it false.
	DeadLettersDue bool `json:"-"`
}

// Stage is one status a run passed through.
type Stage struct {
	Status vocab.Status `json:"status"`
	At     time.Time    `json:"timestamp"`
}

// Day is one (ingestion, date) partition as it stands.
type Day struct {
	Project         string           `json:"project"`
	Ingestion       string           `json:"source"`
	Type            string           `json:"dataset"`
	Date            string           `json:"ds"`
	Status          vocab.Status     `json:"status"`
	Message         string           `json:"message,omitempty"`
	ErrorCategory   vocab.Category   `json:"errorCategory,omitempty"`
	ErrorMessage    string           `json:"error_message,omitempty"`
	VisibleRunID    string           `json:"runID,omitempty"`
	Fence           int64            `json:"fence"`
	Extracted       int64            `json:"extracted"` // warehouse rows at load
	RowsLoaded      int64            `json:"rowCount"`
	Rejected        map[string]int64 `json:"rejected"`
	FirstLoadedAt   *time.Time       `json:"firstLoadedAt,omitempty"`
	LastLoadedAt    *time.Time       `json:"timestamp,omitempty"`
	WarehouseCount  *int64           `json:"warehouseCountNow,omitempty"`
	WarehouseAt     *time.Time       `json:"warehouseCheckedAt,omitempty"`
	Fingerprint     string           `json:"fingerprint,omitempty"`    // warehouse fingerprint at load, when known
	WarehouseFinger string           `json:"fingerprintNow,omitempty"` // latest watched fingerprint
}

// DayFilter selects days of one project. Empty fields match all.
type DayFilter struct {
	Project   string
	Ingestion string
	Type      string
	From, To  string // inclusive YYYY-MM-DD bounds
	// LoadedSince keeps days first loaded at or after this time.
	LoadedSince time.Time
}

// RunFilter selects runs of one project, newest first.
type RunFilter struct {
	Project   string
	Ingestion string
	Date      string
	Limit     int
}

// Store is the event store.
type Store interface {
	// Migrate creates or upgrades the store's tables. Idempotent.
	Migrate(ctx context.Context) error

	// StageBatches writes the records and the rejected rows
	// (RejectedRows) of ROWS batches under their extraction, in one
	// transaction. A batch (extract_id, seq) staged before is skipped, so
	// redelivery changes nothing. Staged rows are invisible to readers
	// until CompleteRun swaps them in; staged rejected rows are not due
	// until CompleteRun decides their run.
	StageBatches(ctx context.Context, batches []*schemas.MappedBatch) error

	// CompleteRun makes the extraction's staged rows the day's rows, in one
	// transaction with the day's status, counts and the run's history:
	// readers see the old rows or the new ones, never a mix. It refuses
	// (Incomplete) until end.Batches batches holding end.Rows rows are
	// staged, and (Stale) when the day was swapped by a run with a higher
	// fence. The superseded rows are removed. An extraction of a run that
	// has ended (a Terminal status) changes nothing (AlreadyDone): a run swaps,
	// counts usage and records its terminal status once. See DaySwap.
	CompleteRun(ctx context.Context, end RunEnd) (Outcome, error)

	// UpdateRun records a run's progress (scheduled, started, downloaded,
	// failed), creating the run on first sight. A failed run leaves the
	// day's visible rows as they were.
	UpdateRun(ctx context.Context, u RunUpdate) error
	// UpdateRunChanged is UpdateRun that also reports whether u moved the
	// run: false for a redelivery or a late message, when nothing was
	// written. A caller that counts what a run did (the loader's effect
	// counters) counts it only when its own update changed the run.
	UpdateRunChanged(ctx context.Context, u RunUpdate) (changed bool, err error)

	// RecordWarehouseCount keeps the watcher's latest count and fingerprint
	// of a day in the warehouse (the delta ledger).
	RecordWarehouseCount(ctx context.Context, project, ingestion, date string, count int64, fingerprint string, at time.Time) error

	// Days lists days matching f, ordered by ingestion then date.
	Days(ctx context.Context, f DayFilter) ([]Day, error)
	// Runs lists runs matching f, newest first.
	Runs(ctx context.Context, f RunFilter) ([]Run, error)
	// Run returns one run of project, ErrNotFound otherwise.
	Run(ctx context.Context, project, runID string) (Run, error)

	// VisibleEvents and VisibleMetrics return the day's visible records
	// ordered by position: what a reader of the store sees.
	VisibleEvents(ctx context.Context, project, ingestion, date string) ([]schemas.Event, error)
	VisibleMetrics(ctx context.Context, project, ingestion, date string) ([]schemas.Metric, error)

	// Usage returns rows loaded per day for project (reloads and backfills
	// included), the usage ledger: each run that became visible counts
	// once, whatever extractions and redeliveries it took.
	Usage(ctx context.Context, project string, from, to string) ([]UsageRow, error)

	// The notification outbox. A run's notification becomes due in the
	// transaction that gives the run its terminal status (a swap,
	// TooManyRejected, Stale, an UpdateRun to FAILED, SUPERSEDED or
	// NO_DATA_YET), so a terminal run is never lost to a crash and is due
	// once: a run has one terminal status. Runs that ended before the
	// store had the outbox are not due.

	// ClaimNotifications returns up to c.Limit runs of c.Projects whose
	// notification is due and not claimed by a live claim, oldest first
	// (updated_at, then run id), and claims them for c.Owner until
	// c.At+c.Lease: until then no other claim returns them, so concurrent
	// notifiers never deliver one run at once.
	ClaimNotifications(ctx context.Context, c NotificationClaim) ([]Run, error)
	// MarkNotified ends a run's notification (delivered, or none needed):
	// it is never due again. Idempotent.
	MarkNotified(ctx context.Context, project, runID string, at time.Time) error
	// ReleaseNotifications gives back owner's claims, so another notifier
	// (or owner's restart) can claim those runs at once; a notifier
	// calls it when it stops.
	ReleaseNotifications(ctx context.Context, owner string) error

	// The dead-letter outbox. The rejected rows StageBatches kept, keyed
	// (project, extract_id, position), become due in the transaction
	// that decides their run: a swap, or a failure on TooManyRejected.
	// Only the extraction that decided the run (the run's ExtractID)
	// counts: rows of an extraction that decided nothing (stale, a
	// second extraction of an ended run, one abandoned for a retry) are
	// dropped and never due, so a run's dead letters are its rejected
	// rows, once, whatever extractions and redeliveries it took. Runs
	// decided before the store had the outbox are not due.

	// DueDeadLetters returns up to f.Limit runs whose dead letters are
	// due, oldest decision first (updated_at, then run id).
	DueDeadLetters(ctx context.Context, f DeadLetterFilter) ([]Run, error)
	// RunRejects returns up to limit rejected rows of the run's deciding
	// extraction with a position above after, by position: page with the
	// last position seen, starting from -1.
	RunRejects(ctx context.Context, project, runID string, after int64, limit int) ([]schemas.RejectedRow, error)
	// MarkDeadLettersPublished ends a run's dead letters (every one was
	// acknowledged by the topic): they are never due again, and their
	// rows are deleted. Idempotent.
	MarkDeadLettersPublished(ctx context.Context, project, runID string, at time.Time) error

	Checkpoints

	Close() error
}

// NotificationClaim asks ClaimNotifications for due runs.
type NotificationClaim struct {
	Projects []string // at least one
	Owner    string   // the claiming notifier, unique among those running
	At       time.Time
	Lease    time.Duration
	Limit    int
}

// DeadLetterFilter selects runs for DueDeadLetters.
type DeadLetterFilter struct {
	// DecidedBefore keeps runs decided (updated) before it; zero keeps
	// all.
	DecidedBefore time.Time
	Limit         int
}

// UsageRow is one line of the usage ledger.
type UsageRow struct {
	Project    string        `json:"project"`
	Date       string        `json:"ds"`
	Ingestion  string        `json:"source"`
	Trigger    vocab.Trigger `json:"trigger"`
	RowsLoaded int64         `json:"rowsLoaded"`
}
