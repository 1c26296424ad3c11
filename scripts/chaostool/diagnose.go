package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/demo"
)

// stallReportAfter is how long a scenario may go unreconciled before the
// suite logs what it sees (consumer groups, lag, the runs of the days that
// do not match), and how often it logs again: the evidence a stall leaves
// is gone once it recovers, so it is taken while the stall lasts.
const stallReportAfter = 30 * time.Second

// reportStall logs the mismatches, every consumer group as the broker
// describes it, and the newest run of each unreconciled day.
func (r *reconciler) reportStall(ctx context.Context, waited time.Duration, problems []mismatch) {
	logf("not reconciled after %s; %d mismatches, e.g.:", waited.Round(time.Second), len(problems))
	for i, m := range problems {
		if i == 6 {
			break
		}
		logf("  %s", m)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, line := range r.describeGroups(ctx) {
		logf("  %s", line)
	}
	for _, line := range r.unreconciledRuns(ctx, problems) {
		logf("  %s", line)
	}
}

// describeGroups renders each group's state, members (with the address
// they connected from and the partitions they hold) and lag.
func (r *reconciler) describeGroups(ctx context.Context) []string {
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka...))
	if err != nil {
		return []string{"describe groups: " + err.Error()}
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return []string{"list groups: " + err.Error()}
	}
	described, err := adm.DescribeGroups(ctx, listed.Groups()...)
	if err != nil {
		return []string{"describe groups: " + err.Error()}
	}
	lags, err := adm.Lag(ctx, listed.Groups()...)
	if err != nil {
		lags = nil
	}
	var out []string
	for _, g := range described.Sorted() {
		out = append(out, fmt.Sprintf("group %s: %s, protocol %s, %d members", g.Group, g.State, g.Protocol, len(g.Members)))
		for _, m := range g.Members {
			var held []string
			if a, ok := m.Assigned.AsConsumer(); ok {
				for _, t := range a.Topics {
					held = append(held, fmt.Sprintf("%s%v", t.Topic, t.Partitions))
				}
			}
			out = append(out, fmt.Sprintf("  member %s from %s holds %s", m.MemberID, m.ClientHost, strings.Join(held, " ")))
		}
		if l, ok := lags[g.Group]; ok {
			var behind []string
			for _, ml := range l.Lag.Sorted() {
				if ml.Lag > 0 {
					member := "none"
					if ml.Member != nil {
						member = ml.Member.MemberID
					}
					behind = append(behind, fmt.Sprintf("%s/%d lag %d (member %s)", ml.Topic, ml.Partition, ml.Lag, member))
				}
			}
			sort.Strings(behind)
			if len(behind) > 0 {
				out = append(out, "  behind: "+strings.Join(behind, ", "))
			}
		}
	}
	return out
}

// unreconciledRuns renders the newest run of each day that has a mismatch.
func (r *reconciler) unreconciledRuns(ctx context.Context, problems []mismatch) []string {
	seen := map[[2]string]bool{}
	var out []string
	for _, m := range problems {
		key := [2]string{m.ingestion, m.day}
		if seen[key] || m.day == "-" {
			continue
		}
		seen[key] = true
		var runID, status, message, history string
		var updated time.Time
		err := r.pool.QueryRow(ctx, `SELECT run_id, status, message, history::text, updated_at FROM `+
			pgx.Identifier{r.storeSchema, "runs"}.Sanitize()+`
			WHERE project = $1 AND ingestion = $2 AND ds = $3 ORDER BY created_at DESC LIMIT 1`,
			demo.ProjectName, m.ingestion, m.day).Scan(&runID, &status, &message, &history, &updated)
		if err != nil {
			out = append(out, fmt.Sprintf("%s %s: newest run: %v", m.ingestion, m.day, err))
			continue
		}
		out = append(out, fmt.Sprintf("%s %s: newest run %s %s (updated %s) %q history %s",
			m.ingestion, m.day, runID, status, updated.UTC().Format("15:04:05.000"), message, history))
	}
	return out
}
