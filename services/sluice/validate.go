package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/mapping"
	"github.com/sluicehq/sluice/pkg/validation"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
)

// runValidate is `sluice validate`: it samples one day of an ingestion and
// prints the mapping report. Exit 0 when the mapping can be enabled, 1 when
// it cannot (or the query itself is wrong), 3 on a bad config, 4 when the
// warehouse cannot be reached.
func runValidate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", "Runs an ingestion's query on one recent day with a row limit and checks its mapping:\n"+
		"the query as run, the result's columns and types, each mapped field, the first mapped records\n"+
		"and rejected rows with reasons. Exits 0 when the mapping can be enabled, 1 when it cannot.", stderr)
	var common commonFlags
	common.register(fs)
	source := fs.String("source", "", "the ingestion (source) to validate (required)")
	project := fs.String("project", "", "the ingestion's project (needed only when two projects have an ingestion of that name)")
	date := fs.String("date", "", "the day to sample, YYYY-MM-DD (default: the most recent day with rows among the last 7)")
	limit := fs.Int("limit", validation.DefaultLimit, fmt.Sprintf("the most rows to sample (at most %d)", validation.MaxLimit))
	asJSON := fs.Bool("json", false, "print the report as JSON")
	timeout := fs.Duration("timeout", validation.DefaultTimeout, "how long the warehouse may take")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "sluice validate: "+format+"\n", a...)
		return code
	}
	if *source == "" {
		return fail(exitUsage, "--source is required")
	}
	var opts validation.Options
	if *date != "" {
		d, err := civil.ParseDate(*date)
		if err != nil {
			return fail(exitUsage, "--date %q: want YYYY-MM-DD", *date)
		}
		opts.Day = d
	}
	opts.Limit = *limit
	settings, err := config.Load(common.configPath)
	if err != nil {
		return fail(exitConfig, "%v", err)
	}
	ing, err := findIngestion(settings, *project, *source)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	sources := warehouse.NewPool(settings.Connections, Openers())
	defer sources.Close()
	v := validation.New(validation.Deps{Settings: settings, Sources: sources, Timeout: *timeout})
	rep, err := v.Validate(ctx, ing.Project, ing.Name, opts)
	if err != nil {
		var oe *validation.OptionError
		var we *validation.WarehouseError
		switch {
		case errors.As(err, &oe):
			return fail(exitUsage, "--%s", oe.Error())
		case errors.As(err, &we):
			// The query being wrong is the ingestion's fault (1); anything
			// else means the warehouse could not answer (4).
			code := exitUnhealthy
			if we.Category == vocab.CategoryQuery {
				code = exitFailure
			}
			if *asJSON {
				_ = writeJSON(stdout, map[string]string{"ingestion": ing.Name, "category": string(we.Category), "error": we.Error()})
			}
			return fail(code, "%s of %s (%s): %v", ing.Name, ing.Project, we.Op, we)
		}
		return fail(exitFailure, "%v", err)
	}
	if *asJSON {
		if err := writeJSON(stdout, rep); err != nil {
			return fail(exitFailure, "write report: %v", err)
		}
	} else {
		fmt.Fprint(stdout, rep.Text())
	}
	if !rep.OK {
		return exitFailure
	}
	return exitOK
}

// findIngestion finds the ingestion named name, in project when given; a
// name two projects share needs the project.
func findIngestion(settings *config.File, project, name string) (*config.Ingestion, error) {
	var found []*config.Ingestion
	var names []string
	for i := range settings.Ingestions {
		ing := &settings.Ingestions[i]
		if project != "" && ing.Project != project {
			continue
		}
		names = append(names, ing.Name)
		if ing.Name == name {
			found = append(found, ing)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		where := "the config"
		if project != "" {
			where = "project " + project
		}
		slices.Sort(names)
		return nil, fmt.Errorf("--source %q: %s has no such ingestion; it has: %s", name, where, strings.Join(slices.Compact(names), ", "))
	}
	projects := make([]string, len(found))
	for i, ing := range found {
		projects[i] = ing.Project
	}
	return nil, fmt.Errorf("--source %q: projects %s each have one; add --project", name, strings.Join(projects, ", "))
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// validateAdapter lets the trigger service validate through a
// validation.Validator without either package knowing the other.
type validateAdapter struct{ v *validation.Validator }

func (a validateAdapter) Validate(ctx context.Context, project, ingestion string, day civil.Date, limit int) (mapping.Report, error) {
	return a.v.Validate(ctx, project, ingestion, validation.Options{Day: day, Limit: limit})
}
