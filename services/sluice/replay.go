package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	daydispatch "github.com/sluicehq/sluice/pkg/dispatch"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/mapping"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// replayOptions are `sluice replay`'s flags.
type replayOptions struct {
	runID   string
	project string
	wait    bool
	timeout time.Duration // with wait: how long the new run may take
	poll    time.Duration // with wait: between looks at the new run
}

// runReplay is `sluice replay`: after a mapping is fixed, it gets a run's
// rejected rows into their day by re-running the day under the current
// mapping. The store swaps the day atomically, so its rows are replaced,
// never added twice.
func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("replay", "Re-runs the day of a run under the current mapping (trigger replay), so the rows that run rejected\n"+
		"load once the mapping is fixed. The day is replaced atomically: no row is loaded twice.", stderr)
	var common commonFlags
	common.register(fs)
	var o replayOptions
	fs.StringVar(&o.runID, "run", "", "the run whose rejected rows to replay (required)")
	fs.StringVar(&o.project, "project", "", "the run's project (default: look in every project)")
	fs.BoolVar(&o.wait, "wait", false, "wait for the new run to finish and compare its counts with the old run's")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "with --wait: how long the new run may take")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	o.poll = 500 * time.Millisecond
	if o.runID == "" {
		fmt.Fprintln(stderr, "sluice replay: --run is required")
		return exitUsage
	}
	logger, err := common.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "sluice replay:", err)
		return exitUsage
	}
	settings, err := config.Load(common.configPath)
	if err != nil {
		fmt.Fprintln(stderr, "sluice replay:", err)
		return exitConfig
	}
	in, err := NewInfra(ctx, settings, logger)
	if err != nil {
		fmt.Fprintln(stderr, "sluice replay:", err)
		return exitUnhealthy
	}
	defer in.Close()
	return replay(ctx, in, o, stdout, stderr)
}

// replayError carries the exit code of a replay that cannot go on.
type replayError struct {
	code int
	err  error
}

func (e *replayError) Error() string { return e.err.Error() }

func replayFail(code int, format string, a ...any) error {
	return &replayError{code: code, err: fmt.Errorf(format, a...)}
}

func replay(ctx context.Context, in *Infra, o replayOptions, stdout, stderr io.Writer) int {
	code, err := replayRun(ctx, in, o, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "sluice replay:", err)
		var re *replayError
		if errors.As(err, &re) {
			return re.code
		}
		return exitUnhealthy
	}
	return code
}

func replayRun(ctx context.Context, in *Infra, o replayOptions, stdout io.Writer) (int, error) {
	old, err := findRun(ctx, in, o.project, o.runID)
	if err != nil {
		return 0, err
	}
	ing, ok := in.Settings.Ingestion(old.Project, old.Ingestion)
	if !ok {
		return 0, replayFail(exitConfig, "run %s loaded ingestion %s of project %s, which the config no longer has", old.RunID, old.Ingestion, old.Project)
	}
	printRun(stdout, "Run", old)
	if !old.Status.Terminal() {
		return 0, replayFail(exitFailure, "run %s is still %s; replay it once it has finished", old.RunID, old.Status)
	}
	rejected := sum(old.Rejected)
	if rejected == 0 && old.Status != vocab.StatusFailed {
		fmt.Fprintf(stdout, "Run %s rejected no rows: nothing to replay.\n", old.RunID)
		return exitOK, nil
	}
	// A mapping that still does not compile would only fail the new run.
	p, _ := in.Settings.Project(old.Project)
	if _, err := mapping.New(*ing, p.IDTypes); err != nil {
		return 0, replayFail(exitConfig, "the current mapping cannot run: %v", err)
	}

	d, closeDispatcher, err := newDispatcher(ctx, in, "replay")
	if err != nil {
		return 0, err
	}
	defer closeDispatcher()
	reason := fmt.Sprintf("replay of run %s (%d rows rejected) under the current mapping", old.RunID, rejected)
	newID, err := d.Dispatch(ctx, daydispatch.Request{Project: old.Project, Ingestion: old.Ingestion, Date: old.Date,
		Trigger: vocab.TriggerReplay, Reason: reason})
	if err != nil {
		return 0, fmt.Errorf("start the replay of %s on %s: %w", old.Ingestion, old.Date, err)
	}
	fmt.Fprintf(stdout, "\nReplaying %s on %s under the current mapping: new run %s (trigger %s).\n"+
		"When it completes, the store swaps the day's rows in one transaction: replaced, never added twice.\n",
		old.Ingestion, old.Date, newID, vocab.TriggerReplay)
	if !o.wait {
		return exitOK, nil
	}

	cur, err := waitRun(ctx, in.Store, old.Project, newID, o.timeout, o.poll)
	if err != nil {
		return 0, err
	}
	fmt.Fprintln(stdout)
	printComparison(stdout, old, cur)
	if cur.Status != vocab.StatusSuccessful && cur.Status != vocab.StatusLoadedEmpty {
		return exitFailure, nil
	}
	return exitOK, nil
}

// findRun looks the run up in project, or in every project of the config.
func findRun(ctx context.Context, in *Infra, project, runID string) (store.Run, error) {
	projects := []string{project}
	if project == "" {
		projects = projects[:0]
		for _, p := range in.Settings.Projects {
			projects = append(projects, p.Name)
		}
	}
	for _, p := range projects {
		r, err := in.Store.Run(ctx, p, runID)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.Run{}, fmt.Errorf("look up run %s: %w", runID, err)
		}
	}
	where := "any project of the config"
	if project != "" {
		where = "project " + project
	}
	return store.Run{}, replayFail(exitUsage, "run %s: not found in %s", runID, where)
}

// newDispatcher builds a Dispatcher on in as Build does; close releases
// its Kafka client.
func newDispatcher(ctx context.Context, in *Infra, name string) (*daydispatch.Dispatcher, func(), error) {
	if err := ensureTopics(ctx, in); err != nil {
		return nil, nil, fmt.Errorf("reach kafka: %w", err)
	}
	cl, err := kafka.NewClient(in.Kafka, name, in.Logger, nil)
	if err != nil {
		return nil, nil, err
	}
	d, err := newDispatch(in, daydispatch.Config{LeaseTTL: in.Settings.Pipeline.LeaseTTL}, cl)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return d, cl.Close, nil
}

// waitRun polls the run until it has finished or timeout passes.
func waitRun(ctx context.Context, st store.Store, project, runID string, timeout, poll time.Duration) (store.Run, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		r, err := st.Run(ctx, project, runID)
		switch {
		case err == nil && r.Status.Terminal():
			return r, nil
		case err != nil && !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil:
			return store.Run{}, fmt.Errorf("wait for run %s: %w", runID, err)
		}
		select {
		case <-ctx.Done():
			status := r.Status
			if status == "" {
				status = "not started"
			}
			return store.Run{}, replayFail(exitFailure, "run %s is still %s after %s; follow it with sluice status", runID, status, timeout)
		case <-t.C:
		}
	}
}

func printRun(w io.Writer, title string, r store.Run) {
	fmt.Fprintf(w, "%s %s: %s of %s on %s (trigger %s), %s: %d rows extracted, %d mapped, %d rejected\n",
		title, r.RunID, r.Type, r.Ingestion, r.Date, r.Trigger, r.Status, r.Extracted, r.Mapped, sum(r.Rejected))
	if r.ErrorMessage != "" {
		fmt.Fprintf(w, "  error: %s %s\n", r.ErrorCategory, r.ErrorMessage)
	}
	if len(r.Rejected) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  REJECTED BY REASON\tROWS")
	for _, k := range sortedReasons(r.Rejected) {
		fmt.Fprintf(tw, "  %s\t%d\n", k, r.Rejected[k])
	}
	tw.Flush()
}

// printComparison shows the old and the new run side by side.
func printComparison(w io.Writer, old, cur store.Run) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\tOLD RUN\tNEW RUN\t\n")
	fmt.Fprintf(tw, "run\t%s\t%s\t\n", old.RunID, cur.RunID)
	fmt.Fprintf(tw, "status\t%s\t%s\t\n", old.Status, cur.Status)
	fmt.Fprintf(tw, "extracted\t%d\t%d\t\n", old.Extracted, cur.Extracted)
	fmt.Fprintf(tw, "mapped (loaded)\t%d\t%d\t\n", old.Mapped, cur.Mapped)
	fmt.Fprintf(tw, "rejected\t%d\t%d\t\n", sum(old.Rejected), sum(cur.Rejected))
	reasons := map[string]bool{}
	for k := range old.Rejected {
		reasons[k] = true
	}
	for k := range cur.Rejected {
		reasons[k] = true
	}
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "  %s\t%d\t%d\t\n", k, old.Rejected[k], cur.Rejected[k])
	}
	tw.Flush()
	if cur.ErrorMessage != "" {
		fmt.Fprintf(w, "new run error: %s %s\n", cur.ErrorCategory, cur.ErrorMessage)
	}
}

func sortedReasons(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
