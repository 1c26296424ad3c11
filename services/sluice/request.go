package main

import (
	"context"
	"fmt"
	"io"

	"cloud.google.com/go/civil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// Publishing an ingest request from another system
//
// The topic ingest-requests (with the config's kafka.topic_prefix) and its
// Avro schema, schemas/ingest_request.avsc (record sluice.v1.IngestRequest),
// are a public interface: an orchestrator or a dbt job may publish onto it
// directly, as `sluice request` does. A request must have:
//
//   - request_id: unique per request; it names the run ("req-<request_id>"),
//     so publishing the same request twice is one run;
//   - run_id: empty ("" is the default) — Sluice gives the run its id and
//     takes the day's lease, so one run per day and fencing hold as for its
//     own requests; a request for a day already running is queued once and
//     started when the day frees (a newer request replaces a queued one);
//   - project, ingestion: names from the config;
//   - date: the day, YYYY-MM-DD;
//   - trigger: anything (recorded as "request"); fence: 0 (the default);
//   - requested_at: epoch milliseconds; reason: free text, optional.
//
// The record key should be "project/ingestion/date" so a day's records stay
// on one partition; the value is the bare Avro binary encoding (no schema
// registry framing). A request that does not decode, names an unknown
// project or ingestion, or has a bad date goes to the dead-letter topic with
// its reason; a bad date of a known ingestion also shows as a FAILED run
// with error category REQUEST_ERROR in `sluice status --runs` and
// GET /v1/ingestions/runs.

// requestOptions are `sluice request`'s inputs.
type requestOptions struct {
	project, source, reason string
	date                    civil.Date
}

func runRequest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("request", "Publishes one ingest request onto ingest-requests, as an outside system (an orchestrator, a dbt job) would:\n"+
		"an empty run_id, so the extractor leases the day itself. Prints the request id and the run id it becomes.", stderr)
	var common commonFlags
	common.register(fs)
	source := fs.String("source", "", "the source (ingestion) to load (required)")
	project := fs.String("project", "", "the source's project (needed when two projects have a source of that name)")
	date := fs.String("date", "", "the day to load, YYYY-MM-DD (required)")
	reason := fs.String("reason", "sluice request", "why, recorded on the run")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	day, err := civil.ParseDate(*date)
	if err != nil || *source == "" {
		fmt.Fprintln(stderr, "sluice request: --source NAME and --date YYYY-MM-DD are required")
		return exitUsage
	}
	in, code := openInfra(ctx, common, stderr, "request")
	if in == nil {
		return code
	}
	defer in.Close()
	if err := request(ctx, in, requestOptions{project: *project, source: *source, reason: *reason, date: day}, stdout); err != nil {
		fmt.Fprintln(stderr, "sluice request:", err)
		if _, ok := err.(usageError); ok {
			return exitUsage
		}
		return exitUnhealthy
	}
	return exitOK
}

// request publishes one raw ingest request and prints what it became.
func request(ctx context.Context, in *Infra, o requestOptions, stdout io.Writer) error {
	ing, err := findIngestion(in.Settings, o.project, o.source)
	if err != nil {
		return usageError{err}
	}
	if err := ensureTopics(ctx, in); err != nil {
		return fmt.Errorf("reach kafka: %w", err)
	}
	req := schemas.IngestRequest{RequestID: runid.New(), Project: ing.Project, Ingestion: ing.Name, Date: o.date.String(),
		Trigger: string(vocab.TriggerRequest), RequestedAt: in.Clock().UnixMilli(), Reason: o.reason}
	data, err := in.Codecs.Encode(in.Codecs.IngestRequest, &req)
	if err != nil {
		return fmt.Errorf("encode ingest request: %w", err)
	}
	cl, err := kafka.NewClient(in.Kafka, "request-"+req.RequestID[:8], in.Logger, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	rec := &kgo.Record{Topic: in.Kafka.Topic(schemas.TopicIngestRequests), Key: kafka.DayKey(req.Project, req.Ingestion, req.Date), Value: data}
	if err := kafka.ProduceSync(ctx, cl, rec); err != nil {
		return fmt.Errorf("publish ingest request: %w", err)
	}
	fmt.Fprintf(stdout, "request_id\t%s\nrun_id\treq-%s\n", req.RequestID, req.RequestID)
	return nil
}
