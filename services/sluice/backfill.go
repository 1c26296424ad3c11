package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	daydispatch "github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// MaxBackfillDays bounds one backfill, as the HTTP API does.
const MaxBackfillDays = 366

// backfillOptions are `sluice backfill`'s inputs.
type backfillOptions struct {
	project, source string
	from, to        civil.Date
	wait            bool
	poll            time.Duration
	timeout         time.Duration // with wait; 0 = until ctx ends
}

func runBackfill(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("backfill", "Loads a range of days of one source (ingestion), one run per day, replacing days already loaded atomically.\n"+
		"Runs go through the dispatcher: one run per day in flight, a busy day queued once. The extractor\n"+
		"bounds concurrent queries per connection by its max_concurrency. Prints one line per day: date and run id.\n"+
		"With --wait, shows progress on stderr and exits 0 only if every day loaded.", stderr)
	var common commonFlags
	common.register(fs)
	source := fs.String("source", "", "the source (ingestion) to load (required)")
	project := fs.String("project", "", "the source's project (needed when two projects have a source of that name)")
	from := fs.String("from", "", "first day, YYYY-MM-DD (required)")
	to := fs.String("to", "", "last day, YYYY-MM-DD, inclusive (required; at most 366 days after --from)")
	wait := fs.Bool("wait", false, "wait for every day to finish, showing progress")
	timeout := fs.Duration("timeout", 0, "with --wait: give up after this long (0: wait until interrupted)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	o := backfillOptions{project: *project, source: *source, wait: *wait, poll: time.Second, timeout: *timeout}
	var err error
	if o.from, o.to, err = parseRange(*from, *to, MaxBackfillDays); err != nil || *source == "" {
		if err == nil {
			err = errors.New("--source is required")
		}
		fmt.Fprintln(stderr, "sluice backfill:", err)
		return exitUsage
	}
	in, code := openInfra(ctx, common, stderr, "backfill")
	if in == nil {
		return code
	}
	defer in.Close()
	if err := backfill(ctx, in, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "sluice backfill:", err)
		var usage usageError
		if errors.As(err, &usage) {
			return exitUsage
		}
		return exitFailure
	}
	return exitOK
}

// usageError is a mistake in the command line found after parsing.
type usageError struct{ error }

// openInfra loads the config and connects; on failure it prints why and
// returns the exit code.
func openInfra(ctx context.Context, common commonFlags, stderr io.Writer, verb string) (*Infra, int) {
	logger, err := common.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", verb, err)
		return nil, exitUsage
	}
	settings, err := config.Load(common.configPath)
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", verb, err)
		return nil, exitConfig
	}
	in, err := NewInfra(ctx, settings, logger)
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", verb, err)
		return nil, exitUnhealthy
	}
	return in, exitOK
}

// parseRange reads an inclusive range of at most maxDays days.
func parseRange(from, to string, maxDays int) (civil.Date, civil.Date, error) {
	f, err := civil.ParseDate(from)
	if err != nil {
		return civil.Date{}, civil.Date{}, fmt.Errorf("--from %q: want YYYY-MM-DD", from)
	}
	t, err := civil.ParseDate(to)
	if err != nil {
		return civil.Date{}, civil.Date{}, fmt.Errorf("--to %q: want YYYY-MM-DD", to)
	}
	if t.Before(f) {
		return civil.Date{}, civil.Date{}, fmt.Errorf("--to %s is before --from %s", t, f)
	}
	if n := f.DaysSince(civil.Date{}) - t.DaysSince(civil.Date{}); -n+1 > maxDays {
		return civil.Date{}, civil.Date{}, fmt.Errorf("%s..%s is %d days; at most %d per backfill", f, t, -n+1, maxDays)
	}
	return f, t, nil
}

// backfillDay is one day of a backfill and the run that loads it.
type backfillDay struct {
	date  string
	runID string
}

// backfill starts one run per day of o's range and, with o.wait, follows
// them to the end.
func backfill(ctx context.Context, in *Infra, o backfillOptions, stdout, stderr io.Writer) error {
	ing, err := findIngestion(in.Settings, o.project, o.source)
	if err != nil {
		return usageError{err}
	}
	d, closeFn, err := newDispatcher(ctx, in, "backfill-"+runid.New()[:8])
	if err != nil {
		return err
	}
	defer closeFn()
	id := "bf-" + runid.New()[:12]
	reason := fmt.Sprintf("backfill %s of %s..%s", id, o.from, o.to)
	var days []backfillDay
	for day := o.from; !day.After(o.to); day = day.AddDays(1) {
		runID, err := d.Dispatch(ctx, daydispatch.Request{Project: ing.Project, Ingestion: ing.Name, Date: day.String(),
			Trigger: vocab.TriggerBackfill, Reason: reason})
		if err != nil {
			return fmt.Errorf("start run of %s (%d of %d days started): %w", day, len(days), o.to.DaysSince(o.from)+1, err)
		}
		days = append(days, backfillDay{day.String(), runID})
		fmt.Fprintf(stdout, "%s\t%s\n", day, runID)
	}
	in.Logger.Info("backfill started", "backfill", id, "ingestion", ing.Name, "project", ing.Project, "days", len(days))
	if !o.wait {
		return nil
	}
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	return followBackfill(ctx, in.Store, ing.Project, days, o.poll, newBackfillProgress(stderr))
}

// dayOutcome is where a backfilled day stands.
type dayOutcome struct {
	done, loaded bool
	rows         int64
	reason       string // why it did not load
}

// outcome reads the day's run; a run superseded by a newer one counts as
// loaded when the day is loaded (the newer data won).
func outcome(ctx context.Context, st store.Store, project string, d backfillDay, ingestion string) (dayOutcome, error) {
	r, err := st.Run(ctx, project, d.runID)
	if errors.Is(err, store.ErrNotFound) {
		return dayOutcome{}, nil
	}
	if err != nil {
		return dayOutcome{}, err
	}
	switch r.Status {
	case vocab.StatusSuccessful, vocab.StatusLoadedEmpty:
		return dayOutcome{done: true, loaded: true, rows: r.Mapped}, nil
	case vocab.StatusFailed:
		msg := string(r.ErrorCategory)
		if r.ErrorMessage != "" {
			msg += ": " + r.ErrorMessage
		}
		return dayOutcome{done: true, reason: msg}, nil
	case vocab.StatusSuperseded:
		days, err := st.Days(ctx, store.DayFilter{Project: project, Ingestion: ingestion, From: d.date, To: d.date})
		if err != nil {
			return dayOutcome{}, err
		}
		if len(days) == 1 && (days[0].Status == vocab.StatusSuccessful || days[0].Status == vocab.StatusLoadedEmpty) {
			return dayOutcome{done: true, loaded: true, rows: days[0].RowsLoaded}, nil
		}
		if len(days) == 1 && days[0].Status != vocab.StatusFailed {
			return dayOutcome{}, nil // the newer run is still going
		}
		return dayOutcome{done: true, reason: "superseded by a newer run of the day, which did not load"}, nil
	}
	return dayOutcome{}, nil
}

// followBackfill polls the runs until every day is done, reporting progress.
func followBackfill(ctx context.Context, st store.Store, project string, days []backfillDay, poll time.Duration, p *backfillProgress) error {
	ingestion := ""
	if len(days) > 0 {
		r, err := st.Run(ctx, project, days[0].runID)
		if err == nil {
			ingestion = r.Ingestion
		}
	}
	outcomes := make([]dayOutcome, len(days))
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		pending := 0
		for i, d := range days {
			if outcomes[i].done {
				continue
			}
			o, err := outcome(ctx, st, project, d, ingestion)
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("read run %s: %w", d.runID, err)
			}
			outcomes[i] = o
			if o.done {
				p.dayDone(d.date, o)
			} else {
				pending++
			}
		}
		p.redraw(len(days))
		if pending == 0 {
			p.finish()
			if p.failed > 0 {
				return fmt.Errorf("%d of %d days did not load", p.failed, len(days))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			p.finish()
			return fmt.Errorf("stopped waiting with %d of %d days unfinished (they keep running): %w", pending, len(days), ctx.Err())
		case <-t.C:
		}
	}
}

// backfillProgress draws a backfill's progress on stderr: a bar redrawn in place
// on a terminal, one line per finished day otherwise (logs, CI).
type backfillProgress struct {
	w              io.Writer
	tty            bool
	done, failed   int
	rows           int64
	drawn, lastLen int
}

func newBackfillProgress(w io.Writer) *backfillProgress {
	return &backfillProgress{w: w, tty: isTerminal(w)}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (p *backfillProgress) dayDone(date string, o dayOutcome) {
	p.done++
	p.rows += o.rows
	if !o.loaded {
		p.failed++
	}
	if p.tty {
		if !o.loaded { // failures stay on screen above the bar
			p.clear()
			fmt.Fprintf(p.w, "%s failed: %s\n", date, o.reason)
		}
		return
	}
	if o.loaded {
		fmt.Fprintf(p.w, "%s loaded %d rows\n", date, o.rows)
	} else {
		fmt.Fprintf(p.w, "%s failed: %s\n", date, o.reason)
	}
}

const barWidth = 30

// Bar renders the progress line: bar, days done/total, rows, failures.
func (p *backfillProgress) Bar(total int) string {
	filled := 0
	if total > 0 {
		filled = p.done * barWidth / total
	}
	return fmt.Sprintf("[%s%s] %d/%d days  %d rows loaded  %d failed",
		strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), p.done, total, p.rows, p.failed)
}

func (p *backfillProgress) redraw(total int) {
	if !p.tty {
		return
	}
	line := p.Bar(total)
	pad := max(p.lastLen-len(line), 0)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
	p.lastLen = len(line)
	p.drawn++
}

func (p *backfillProgress) clear() {
	if p.lastLen > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.lastLen))
		p.lastLen = 0
	}
}

func (p *backfillProgress) finish() {
	if p.tty && p.lastLen > 0 {
		fmt.Fprintln(p.w)
		p.lastLen = 0
	}
}
