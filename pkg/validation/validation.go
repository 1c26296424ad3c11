// Package validation checks an ingestion's query and mapping on a sample of
// one recent day before the ingestion is enabled: it runs the query with a
// row limit, maps the rows with the ingestion's current mapping and returns
// mapping.Report, with the query as run and the warehouse's cost estimate
// where it gives one. The CLI (`sluice validate`) and the trigger API
// (`POST /v1/ingestions/{name}/validate`) both answer with it.
package validation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/mapping"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
)

// Limits of one validation.
const (
	DefaultLimit   = 100
	MaxLimit       = 1000
	DefaultTimeout = 30 * time.Second
	// LookbackDays is how far back a validation without a day looks for
	// the most recent day with rows.
	LookbackDays = 7
)

// DryRunner is a Source that estimates a query's cost without running it
// (BigQuery's dry run): the bytes the query would process for day.
type DryRunner interface {
	DryRun(ctx context.Context, query string, day civil.Date) (int64, error)
}

// Deps are the Validator's collaborators.
type Deps struct {
	Settings *config.File
	Sources  *warehouse.Pool
	Clock    func() time.Time
	// Timeout bounds one Validate call, day lookup, dry run and sample
	// together, so the caller gets an answer in seconds; default 30s.
	Timeout time.Duration
}

// Options choose what to sample. Zero values take the defaults.
type Options struct {
	// Day to sample; zero means the most recent day with rows among the
	// last LookbackDays days (counted in the warehouse, newest first).
	Day civil.Date
	// Limit is the most rows sampled: default 100, at most 1000.
	Limit int
}

// ErrUnknownIngestion is returned for an ingestion the project lacks.
var ErrUnknownIngestion = errors.New("unknown ingestion")

// OptionError is an Options field the caller got wrong.
type OptionError struct {
	Field  string // "date" or "limit", as the API spells them
	Reason string
}

func (e *OptionError) Error() string { return e.Field + ": " + e.Reason }

// WarehouseError is a warehouse failure while validating, with the
// category a user can act on. Error() reads "QUERY_ERROR: <the warehouse's
// message>"; Unwrap reaches the warehouse's own error.
type WarehouseError struct {
	Category  vocab.Category
	Transient bool
	Op        string // what was being done: "sample 2026-11-26"
	Err       error
}

func (e *WarehouseError) Error() string {
	msg := e.Err.Error()
	var we *warehouse.Error
	if errors.As(e.Err, &we) && we.Err != nil {
		msg = we.Err.Error()
	}
	return string(e.Category) + ": " + msg
}

func (e *WarehouseError) Unwrap() error { return e.Err }

// Validator samples ingestions. It is safe for concurrent use.
type Validator struct {
	settings *config.File
	sources  *warehouse.Pool
	clock    func() time.Time
	timeout  time.Duration
}

// New builds a Validator.
func New(d Deps) *Validator {
	if d.Clock == nil {
		d.Clock = time.Now
	}
	if d.Timeout <= 0 {
		d.Timeout = DefaultTimeout
	}
	return &Validator{settings: d.Settings, sources: d.Sources, clock: d.Clock, timeout: d.Timeout}
}

// Validate runs project's ingestion's query on one day with a row limit
// and reports on its mapping. Errors are ErrUnknownIngestion (wrapped),
// *OptionError, or *WarehouseError; a mapping that does not fit the
// sample is not an error but a report whose OK is false.
func (v *Validator) Validate(ctx context.Context, project, ingestion string, opts Options) (mapping.Report, error) {
	ing, ok := v.settings.Ingestion(project, ingestion)
	if !ok {
		return mapping.Report{}, fmt.Errorf("validate %s of project %s: %w", ingestion, project, ErrUnknownIngestion)
	}
	p, ok := v.settings.Project(project)
	if !ok {
		return mapping.Report{}, fmt.Errorf("validate %s: project %s: %w", ingestion, project, ErrUnknownIngestion)
	}
	limit := opts.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxLimit:
		return mapping.Report{}, &OptionError{Field: "limit", Reason: fmt.Sprintf("%d is not between 1 and %d", limit, MaxLimit)}
	}
	if !opts.Day.IsZero() && !opts.Day.IsValid() {
		return mapping.Report{}, &OptionError{Field: "date", Reason: fmt.Sprintf("%s is not a valid date", opts.Day)}
	}

	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	src, err := v.sources.Source(ctx, ing.Connection)
	if err != nil {
		return mapping.Report{}, warehouseError("open connection "+ing.Connection, err)
	}
	day, searched := opts.Day, false
	if day.IsZero() {
		if day, searched, err = v.recentDay(ctx, src, ing); err != nil {
			return mapping.Report{}, err
		}
	}

	var cost *mapping.Cost
	var costNote string
	if dr, ok := src.(DryRunner); ok {
		if n, err := dr.DryRun(ctx, ing.Query, day); err != nil {
			// The sample below says the same thing more usefully when the
			// query is wrong; a failing estimate alone is only a warning.
			costNote = "no cost estimate: " + warehouseError("dry run", err).Error()
		} else {
			cost = &mapping.Cost{BytesProcessed: n, Detail: "warehouse dry run of the whole day, without the row limit"}
		}
	}
	sample, err := src.Sample(ctx, ing.Query, day, limit)
	if err != nil {
		return mapping.Report{}, warehouseError("sample "+day.String(), err)
	}
	rep := mapping.Validate(*ing, p.IDTypes, sample, day)
	rep.QueryAsRun = queryAsRun(ing.Query, v.placeholder(ing.Connection), day, limit)
	rep.Cost = cost
	if costNote != "" {
		rep.Warnings = append(rep.Warnings, costNote)
	}
	if searched {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("no day of the last %d had rows; sampled %s", LookbackDays, day))
	}
	return rep, nil
}

// recentDay is the most recent of the last LookbackDays days (in the
// ingestion's schedule time zone, today included) with rows; when none has
// any, yesterday with searched set.
func (v *Validator) recentDay(ctx context.Context, src warehouse.Source, ing *config.Ingestion) (civil.Date, bool, error) {
	now := v.clock()
	if loc, err := ing.Schedule.Location(); err == nil {
		now = now.In(loc)
	}
	today := civil.DateOf(now)
	for i := range LookbackDays {
		d := today.AddDays(-i)
		n, err := src.Count(ctx, ing.Query, d)
		if err != nil {
			return civil.Date{}, false, warehouseError("count "+d.String(), err)
		}
		if n > 0 {
			return d, false, nil
		}
	}
	return today.AddDays(-1), true, nil
}

func warehouseError(op string, err error) error {
	cat, transient := warehouse.Categorize(err)
	return &WarehouseError{Category: cat, Transient: transient, Op: op, Err: err}
}

// placeholder is how the connection's queries spell the date parameter.
func (v *Validator) placeholder(connection string) string {
	c, _ := v.settings.Connection(connection)
	if c == nil {
		return "$1"
	}
	switch c.Kind {
	case "snowflake":
		return "?"
	case "bigquery":
		return "@date"
	}
	return "$1"
}

// queryAsRun is the query exactly as sent, then its bound parameter and
// the row limit as a SQL comment: the day is never pasted into the SQL.
func queryAsRun(query, placeholder string, day civil.Date, limit int) string {
	return fmt.Sprintf("%s\n-- %s = %s (DATE, bound parameter); at most %d rows", query, placeholder, day, limit)
}
