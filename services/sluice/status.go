package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// statusWidth is the terminal width the tables fit.
const statusWidth = 100

// statusOptions are `sluice status`'s inputs.
type statusOptions struct {
	project, source string
	from, to        string // inclusive YYYY-MM-DD; empty = open
	runs            bool
	limit           int
	json            bool
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", "Shows each day of the sources: status, the warehouse's row count at load and now, rows loaded, rows\n"+
		"rejected by reason, when last loaded, and each source's schedule and day boundary. With --runs, the recent\n"+
		"runs: trigger, stage timestamps and errors.", stderr)
	var common commonFlags
	common.register(fs)
	source := fs.String("source", "", "only this source (ingestion)")
	project := fs.String("project", "", "only this project")
	from := fs.String("from", "", "first day, YYYY-MM-DD (default: 14 days before --to)")
	to := fs.String("to", "", "last day, YYYY-MM-DD (default: today, UTC)")
	runs := fs.Bool("runs", false, "show recent runs instead of days")
	limit := fs.Int("limit", 20, "with --runs: how many runs")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	o := statusOptions{project: *project, source: *source, from: *from, to: *to, runs: *runs, limit: *limit, json: *asJSON}
	if !o.runs {
		if o.to == "" {
			o.to = civil.DateOf(time.Now().UTC()).String()
		}
		if o.from == "" {
			if t, err := civil.ParseDate(o.to); err == nil {
				o.from = t.AddDays(-14).String()
			}
		}
		if _, _, err := parseRange(o.from, o.to, 10000); err != nil {
			fmt.Fprintln(stderr, "sluice status:", err)
			return exitUsage
		}
	}
	if o.limit < 1 || o.limit > 1000 {
		fmt.Fprintln(stderr, "sluice status: --limit: want 1 to 1000")
		return exitUsage
	}
	in, code := openInfra(ctx, common, stderr, "status")
	if in == nil {
		return code
	}
	defer in.Close()
	if err := status(ctx, in.Settings, in.Store, o, stdout); err != nil {
		fmt.Fprintln(stderr, "sluice status:", err)
		if _, ok := err.(usageError); ok {
			return exitUsage
		}
		return exitUnhealthy
	}
	return exitOK
}

// statusDay is a day with the schedule that decides its boundary.
type statusDay struct {
	store.Day
	Schedule string `json:"schedule"`
	Timezone string `json:"timezone"`
}

// ScheduleOf describes when an ingestion loads and in which time zone its
// days begin and end.
func ScheduleOf(ing *config.Ingestion) (schedule, timezone string) {
	timezone = ing.Schedule.Timezone
	if timezone == "" {
		timezone = config.DefaultTimezone
	}
	if ing.Schedule.Mode == config.ScheduleAPITriggered {
		return "api_triggered", timezone
	}
	return fmt.Sprintf("daily at %02d:00", ing.Schedule.HourOrDefault()), timezone
}

// status prints the days (or runs) of the selected ingestions.
func status(ctx context.Context, settings *config.File, st store.Store, o statusOptions, w io.Writer) error {
	var ings []*config.Ingestion
	for i := range settings.Ingestions {
		ing := &settings.Ingestions[i]
		if (o.project == "" || ing.Project == o.project) && (o.source == "" || ing.Name == o.source) {
			ings = append(ings, ing)
		}
	}
	if len(ings) == 0 {
		return usageError{fmt.Errorf("no source matches --project %q --source %q", o.project, o.source)}
	}
	if o.runs {
		return printRuns(ctx, st, ings, o, w)
	}
	var days []statusDay
	for _, ing := range ings {
		ds, err := st.Days(ctx, store.DayFilter{Project: ing.Project, Ingestion: ing.Name, From: o.from, To: o.to})
		if err != nil {
			return fmt.Errorf("read days of %s: %w", ing.Name, err)
		}
		sched, tz := ScheduleOf(ing)
		for _, d := range ds {
			days = append(days, statusDay{Day: d, Schedule: sched, Timezone: tz})
		}
	}
	if o.json {
		if days == nil {
			days = []statusDay{}
		}
		return writeJSONTo(w, map[string]any{"days": days})
	}
	for _, ing := range ings {
		sched, tz := ScheduleOf(ing)
		fmt.Fprintln(w, clipLine(fmt.Sprintf("%s/%s (%s): %s, days from midnight to midnight %s", ing.Project, ing.Name, ing.Type, sched, tz)))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "DATE       SOURCE           STATUS               WH@LOAD    WH NOW    LOADED  REJECTED LAST LOAD")
	for _, d := range days {
		last := "-"
		if d.LastLoadedAt != nil {
			last = d.LastLoadedAt.UTC().Format("01-02 15:04")
		}
		now := "-"
		if d.WarehouseCount != nil {
			now = strconv.FormatInt(*d.WarehouseCount, 10)
		}
		atLoad := "-"
		if d.LastLoadedAt != nil || d.Extracted > 0 {
			atLoad = strconv.FormatInt(d.Extracted, 10)
		}
		fmt.Fprintf(w, "%-10s %-16s %-18s %9s %9s %9d %9d %s\n", d.Date, clip(d.Ingestion, 16), clip(string(d.Status), 18), atLoad, now,
			d.RowsLoaded, rejectedTotal(d.Rejected), last)
		if len(d.Rejected) > 0 {
			fmt.Fprintln(w, clipLine("    rejected: "+rejectReasons(d.Rejected)))
		}
		if d.ErrorCategory != "" || d.ErrorMessage != "" {
			fmt.Fprintln(w, clipLine("    error: "+joinNonEmpty(": ", string(d.ErrorCategory), d.ErrorMessage)))
		} else if d.Status == vocab.StatusNoDataYet && d.Message != "" {
			fmt.Fprintln(w, clipLine("    "+d.Message))
		}
	}
	if len(days) == 0 {
		fmt.Fprintf(w, "(no days between %s and %s)\n", o.from, o.to)
	}
	return nil
}

func printRuns(ctx context.Context, st store.Store, ings []*config.Ingestion, o statusOptions, w io.Writer) error {
	var runs []store.Run
	for _, ing := range ings {
		rs, err := st.Runs(ctx, store.RunFilter{Project: ing.Project, Ingestion: ing.Name, Limit: o.limit})
		if err != nil {
			return fmt.Errorf("read runs of %s: %w", ing.Name, err)
		}
		runs = append(runs, rs...)
	}
	sort.SliceStable(runs, func(i, j int) bool { return runs[i].CreatedAt.After(runs[j].CreatedAt) })
	if len(runs) > o.limit {
		runs = runs[:o.limit]
	}
	if o.json {
		if runs == nil {
			runs = []store.Run{}
		}
		return writeJSONTo(w, map[string]any{"runs": runs})
	}
	fmt.Fprintf(w, "%-32s %-10s %-14s %-9s %-18s %9s\n", "RUN ID", "DATE", "SOURCE", "TRIGGER", "STATUS", "LOADED")
	for _, r := range runs {
		fmt.Fprintf(w, "%-32s %-10s %-14s %-9s %-18s %9d\n", clip(r.RunID, 32), clip(r.Date, 10), clip(r.Ingestion, 14), clip(string(r.Trigger), 9),
			clip(string(r.Status), 18), r.Mapped)
		for _, line := range wrap(stages(r.History), statusWidth, "    ") {
			fmt.Fprintln(w, line)
		}
		if r.Extracted > 0 || len(r.Rejected) > 0 {
			line := fmt.Sprintf("    extracted %d, loaded %d, rejected %d", r.Extracted, r.Mapped, rejectedTotal(r.Rejected))
			if len(r.Rejected) > 0 {
				line += " (" + rejectReasons(r.Rejected) + ")"
			}
			fmt.Fprintln(w, clipLine(line))
		}
		if r.ErrorCategory != "" || r.ErrorMessage != "" {
			fmt.Fprintln(w, clipLine("    error: "+joinNonEmpty(": ", string(r.ErrorCategory), r.ErrorMessage)))
		}
	}
	if len(runs) == 0 {
		fmt.Fprintln(w, "(no runs)")
	}
	return nil
}

// stages renders a run's history: "scheduled 03-20 18:00:01 → started 18:00:02 → …".
func stages(h []store.Stage) []string {
	out := make([]string, 0, len(h))
	var day string
	for _, s := range h {
		name := strings.ToLower(strings.TrimPrefix(string(s.Status), "IMPORT_"))
		at := s.At.UTC()
		stamp := at.Format("15:04:05")
		if d := at.Format("01-02"); d != day {
			stamp = d + " " + stamp
			day = d
		}
		out = append(out, name+" "+stamp)
	}
	return out
}

// wrap joins parts with arrows into lines of at most width runes.
func wrap(parts []string, width int, indent string) []string {
	var lines []string
	line := indent
	for i, p := range parts {
		piece := p
		if i > 0 {
			piece = " → " + p
		}
		if utf8.RuneCountInString(line)+utf8.RuneCountInString(piece) > width && line != indent {
			lines = append(lines, line)
			line = indent + "→ " + p
			continue
		}
		line += piece
	}
	if line != indent {
		lines = append(lines, clipLine(line))
	}
	return lines
}

func rejectReasons(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func rejectedTotal(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}

// clip shortens s to n runes, marking the cut.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func clipLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return clip(s, statusWidth)
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
