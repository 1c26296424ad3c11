// Command sluice is the one Sluice binary: `sluice dev` runs the whole
// system in one process on embedded defaults, `sluice run --target=...`
// runs any subset of the services against real Kafka, Redis and
// PostgreSQL, and the other verbs are the operator's tools.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // schedules name time zones; don't depend on the host's tzdata
)

// Exit codes scripts can rely on.
const (
	exitOK        = 0
	exitFailure   = 1 // the work failed (a day did not reconcile, a run failed)
	exitUsage     = 2 // bad flags or arguments
	exitConfig    = 3 // the config file is invalid
	exitUnhealthy = 4 // a dependency could not be reached
)

type verb struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func verbs() []verb {
	return []verb{
		{"dev", "run the whole system in one process on embedded defaults", runDev},
		{"run", "run services (--target=planner,extractor,mapper,loader,watcher,trigger|all)", runServices},
		{"validate", "check an ingestion's query and mapping on a sample", runValidate},
		{"replay", "re-run a run's day under the current mapping so its rejected rows load", runReplay},
		{"backfill", "load a range of days of an ingestion", runBackfill},
		{"request", "publish one ingest request onto ingest-requests", runRequest},
		{"status", "show the status of an ingestion's days", runStatus},
		{"hash-key", "print the SHA-256 to store in the config for an API key", runHashKey},
		{"version", "print the version and commit this binary was built from", runVersion},
		{"kafka", "run a standalone kfake Kafka broker persisted to --data-dir", runKafka},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts the ordered, bounded shutdown; a second one
	// gets the default handling and ends the process at once.
	context.AfterFunc(ctx, stop)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 2 && args[0] == "help" {
		// `sluice help VERB` is `sluice VERB --help`.
		args = []string{args[1], "--help"}
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, v := range verbs() {
		if v.name == args[0] {
			return v.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Sluice loads events and metrics from your data warehouse into the event store, one day at a time.")
	fmt.Fprintln(w, "\nUsage: sluice <command> [flags]\n\nCommands:")
	for _, v := range verbs() {
		fmt.Fprintf(w, "  %-10s %s\n", v.name, v.summary)
	}
	fmt.Fprintln(w, "\nRun 'sluice <command> --help' for a command's flags.")
	fmt.Fprintf(w, "\nExit codes:\n"+
		"  %d  success\n"+
		"  %d  the work failed (a run failed, a day did not reconcile, a check found problems)\n"+
		"  %d  bad command, flags or arguments\n"+
		"  %d  the config file is invalid\n"+
		"  %d  a dependency (Kafka, Redis, the store, a warehouse) could not be reached\n",
		exitOK, exitFailure, exitUsage, exitConfig, exitUnhealthy)
}
