package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// The content checksum of a day is the sum of a 60-bit hash of each good
// row's identity (name, time, ids for events; unit, name, value for
// metrics): order does not matter, and a lost, duplicated or altered row
// changes it. The warehouse side classifies good and bad rows with SQL of
// its own, sharing no code with the mapper: an independent oracle.
const (
	isJSONFunc = `CREATE OR REPLACE FUNCTION public.chaos_is_json(t text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF t IS NULL THEN RETURN true; END IF;
	PERFORM t::json;
	RETURN true;
EXCEPTION WHEN others THEN
	RETURN false;
END $$`

	rowHash = `('x' || substr(md5(%s), 1, 15))::bit(60)::bigint`

	eventsIdentityWarehouse = `coalesce(event_name, '') || '|' || (event_time_s * 1000)::text || '|' ||
		coalesce(nullif(user_id, ''), '') || '|' || coalesce(nullif(device_id, ''), '') || '|' || coalesce(company_id::text, '')`
	eventsGoodWarehouse = `event_name IS NOT NULL AND event_name <> '' AND char_length(event_name) < 128
		AND (coalesce(user_id, '') <> '' OR coalesce(device_id, '') <> '' OR company_id IS NOT NULL)
		AND event_time_s <= 100000000000 AND public.chaos_is_json(properties)`
	eventsIdentityStore = `event_name || '|' || (extract(epoch FROM time) * 1000)::bigint::text || '|' ||
		coalesce(unit_ids->>'userID', '') || '|' || coalesce(unit_ids->>'stableID', '') || '|' || coalesce(unit_ids->>'companyID', '')`

	metricsIdentityWarehouse = `unit_id || '|' || id_type || '|' || metric_name || '|' ||
		CASE WHEN numerator IS NOT NULL OR denominator IS NOT NULL THEN numerator::text || '/' || denominator::text
		     ELSE coalesce(metric_value, 0)::text END`
	metricsGoodWarehouse = `id_type IN ('userID', 'stableID', 'companyID')
		AND (numerator IS NULL) = (denominator IS NULL)`
	metricsIdentityStore = `unit_id || '|' || id_type || '|' || metric_name || '|' ||
		CASE WHEN is_ratio THEN numerator::text || '/' || denominator::text ELSE metric_value::text END`
)

// ingestionCheck is how one ingestion is reconciled.
type ingestionCheck struct {
	name                      string
	table                     string // warehouse table in the wh schema
	view                      string // store view
	identityWarehouse, goodWH string
	identityStore             string
}

var checks = []ingestionCheck{
	{demo.WebEvents, demo.TableEvents, "visible_events", eventsIdentityWarehouse, eventsGoodWarehouse, eventsIdentityStore},
	{demo.DailyMetrics, demo.TableMetrics, "visible_metrics", metricsIdentityWarehouse, metricsGoodWarehouse, metricsIdentityStore},
}

// dayFigures are one day's numbers on one side.
type dayFigures struct {
	total, good, bad int64
	checksum         string
}

// storeDay is one day as the store shows it.
type storeDay struct {
	status             string
	extracted, loaded  int64
	rejected           int64
	visible, positions int64
	checksum           string
	extractID          string
}

// reconciler compares the store with the warehouse, day by day.
type reconciler struct {
	pool        *pgxpool.Pool // the suite's database: schemas wh and store
	whSchema    string
	storeSchema string
	kafka       []string
	dlTopic     string
	days        []string
	// effects checks what runs produce besides rows (check_effects.go).
	effects *effects
}

// mismatch is one way a day is wrong.
type mismatch struct {
	ingestion, day, what string
}

func (m mismatch) String() string { return m.ingestion + " " + m.day + ": " + m.what }

// check returns every mismatch; none means every day reconciles.
func (r *reconciler) check(ctx context.Context) ([]mismatch, error) {
	out, err := r.deadLetters(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range checks {
		want, err := r.warehouse(ctx, c)
		if err != nil {
			return nil, err
		}
		got, err := r.store(ctx, c)
		if err != nil {
			return nil, err
		}
		for _, day := range r.days {
			w, g := want[day], got[day]
			bad := func(format string, args ...any) {
				out = append(out, mismatch{c.name, day, fmt.Sprintf(format, args...)})
			}
			if !vocab.Status(g.status).Loaded() {
				bad("status %q, want loaded", g.status)
				continue
			}
			if g.extracted != w.total {
				bad("extracted %d, warehouse has %d rows", g.extracted, w.total)
			}
			if g.loaded != w.good || g.visible != w.good {
				bad("loaded %d, visible %d, warehouse has %d good rows (lost or duplicated rows)", g.loaded, g.visible, w.good)
			}
			if g.positions != g.visible {
				bad("%d visible rows but %d distinct positions (duplicates)", g.visible, g.positions)
			}
			if g.checksum != w.checksum {
				bad("content checksum %s, warehouse %s", g.checksum, w.checksum)
			}
			if g.rejected != w.bad || g.extracted != g.loaded+g.rejected {
				bad("rejected %d (extracted %d = loaded %d + rejected?), warehouse has %d bad rows", g.rejected, g.extracted, g.loaded, w.bad)
			}
		}
	}
	if r.effects != nil {
		more, err := r.effects.check(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}
	return out, nil
}

func (r *reconciler) warehouse(ctx context.Context, c ingestionCheck) (map[string]dayFigures, error) {
	q := fmt.Sprintf(`SELECT ds::text, count(*), count(*) FILTER (WHERE good),
		coalesce(sum(h) FILTER (WHERE good), 0)::text
		FROM (SELECT ds, (%s) AS good, %s AS h FROM %s) x GROUP BY ds`,
		c.goodWH, fmt.Sprintf(rowHash, c.identityWarehouse), pgx.Identifier{r.whSchema, c.table}.Sanitize())
	rows, err := r.pool.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("read warehouse %s: %w", c.table, err)
	}
	out := map[string]dayFigures{}
	for rows.Next() {
		var day string
		var f dayFigures
		if err := rows.Scan(&day, &f.total, &f.good, &f.checksum); err != nil {
			return nil, err
		}
		f.bad = f.total - f.good
		out[day] = f
	}
	return out, rows.Err()
}

func (r *reconciler) store(ctx context.Context, c ingestionCheck) (map[string]storeDay, error) {
	days := pgx.Identifier{r.storeSchema, "days"}.Sanitize()
	extractions := pgx.Identifier{r.storeSchema, "extractions"}.Sanitize()
	rows, err := r.pool.Query(ctx, `SELECT d.ds::text, d.status, d.extracted, d.rows_loaded, d.rejected::text, coalesce(e.extract_id, '')
		FROM `+days+` d LEFT JOIN `+extractions+` e ON e.xid = d.visible_xid
		WHERE d.project = $1 AND d.ingestion = $2`, demo.ProjectName, c.name)
	if err != nil {
		return nil, fmt.Errorf("read store days of %s: %w", c.name, err)
	}
	out := map[string]storeDay{}
	for rows.Next() {
		var day, rejected string
		var d storeDay
		if err := rows.Scan(&day, &d.status, &d.extracted, &d.loaded, &rejected, &d.extractID); err != nil {
			return nil, err
		}
		var byReason map[string]int64
		if err := json.Unmarshal([]byte(rejected), &byReason); err != nil {
			return nil, fmt.Errorf("rejected counts of %s %s: %w", c.name, day, err)
		}
		for _, n := range byReason {
			d.rejected += n
		}
		out[day] = d
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	q := fmt.Sprintf(`SELECT ds::text, count(*), count(DISTINCT position), coalesce(sum(%s), 0)::text
		FROM %s WHERE project = $1 AND ingestion = $2 GROUP BY ds`,
		fmt.Sprintf(rowHash, c.identityStore), pgx.Identifier{r.storeSchema, c.view}.Sanitize())
	rows, err = r.pool.Query(ctx, q, demo.ProjectName, c.name)
	if err != nil {
		return nil, fmt.Errorf("read visible rows of %s: %w", c.name, err)
	}
	for rows.Next() {
		var day string
		var visible, positions int64
		var sum string
		if err := rows.Scan(&day, &visible, &positions, &sum); err != nil {
			return nil, err
		}
		d := out[day]
		d.visible, d.positions, d.checksum = visible, positions, sum
		out[day] = d
	}
	for day, d := range out {
		if d.checksum == "" {
			d.checksum = "0"
			out[day] = d
		}
	}
	return out, rows.Err()
}

// deadLetters reads the whole dead-letter topic, deduplicates it by its
// documented Kafka key (<project>/<run_id>/<position>: publication is at
// least once, and a repeat carries the same key) and compares each run's
// dead letters with the run's rejected count in the store. A run decided
// by a swap or by too many rejected rows has one per rejected row; any
// other run (superseded, failed otherwise, still running) has none.
func (r *reconciler) deadLetters(ctx context.Context) ([]mismatch, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka...), kgo.ConsumeTopics(r.dlTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, r.dlTopic)
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w", r.dlTopic, err)
	}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			remaining[o.Partition] = o.Offset
		}
	})
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, err
	}
	var out []mismatch
	type letter struct{ ingestion, date string }
	byRun := map[string]map[string]letter{} // run id → key → its row's day
	for len(remaining) > 0 {
		f := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w (partitions left: %v)", r.dlTopic, err, remaining)
		}
		f.EachError(func(_ string, _ int32, err error) {})
		f.EachRecord(func(rec *kgo.Record) {
			if end, ok := remaining[rec.Partition]; ok && rec.Offset+1 >= end {
				delete(remaining, rec.Partition)
			}
			var dl schemas.DeadLetter
			if codecs.Decode(codecs.DeadLetter, rec.Value, &dl) != nil || dl.Position < 0 || dl.Project != demo.ProjectName {
				return
			}
			key := string(rec.Key)
			if want := schemas.DeadLetterKey(dl.Project, dl.RunID, dl.Position); key != want {
				out = append(out, mismatch{dl.Ingestion, dl.Date, fmt.Sprintf("dead letter keyed %q, want %q", key, want)})
			}
			if byRun[dl.RunID] == nil {
				byRun[dl.RunID] = map[string]letter{}
			}
			byRun[dl.RunID][key] = letter{dl.Ingestion, dl.Date}
		})
	}
	runs := pgx.Identifier{r.storeSchema, "runs"}.Sanitize()
	rows, err := r.pool.Query(ctx, `SELECT run_id, ingestion, ds, status, error_category, rejected::text
		FROM `+runs+` WHERE project = $1 AND status <> ''`, demo.ProjectName)
	if err != nil {
		return nil, fmt.Errorf("read store runs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var runID, ingestion, day, status, category, rejected string
		if err := rows.Scan(&runID, &ingestion, &day, &status, &category, &rejected); err != nil {
			return nil, err
		}
		var byReason map[string]int64
		if err := json.Unmarshal([]byte(rejected), &byReason); err != nil {
			return nil, fmt.Errorf("rejected counts of run %s: %w", runID, err)
		}
		var want int64
		decided := vocab.Status(status).Loaded() ||
			(vocab.Status(status) == vocab.StatusFailed && vocab.Category(category) == vocab.CategoryTooManyRejected)
		if decided {
			for _, n := range byReason {
				want += n
			}
		}
		if got := int64(len(byRun[runID])); got != want {
			out = append(out, mismatch{ingestion, day, fmt.Sprintf("dead-letter topic holds %d distinct keys of run %s (%s), the run rejected %d", got, runID, status, want)})
		}
		delete(byRun, runID)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read store runs: %w", err)
	}
	for runID, letters := range byRun {
		for _, l := range letters {
			out = append(out, mismatch{l.ingestion, l.date, fmt.Sprintf("dead-letter topic holds %d rows of run %s, which the store does not have", len(letters), runID)})
			break
		}
	}
	return out, nil
}

// waitReconciled checks until every day reconciles or timeout passes, and
// returns the last mismatches.
func (r *reconciler) waitReconciled(ctx context.Context, timeout time.Duration) ([]mismatch, time.Duration, error) {
	start := time.Now()
	nextReport := start.Add(stallReportAfter)
	var last []mismatch
	for {
		got, err := r.check(ctx)
		if err == nil {
			last = got
			if len(got) == 0 {
				return nil, time.Since(start), nil
			}
		} else {
			logf("reconcile: %v (will retry)", err)
			last = []mismatch{{"-", "-", err.Error()}}
		}
		if time.Now().After(nextReport) {
			r.reportStall(ctx, time.Since(start), last)
			nextReport = time.Now().Add(stallReportAfter)
		}
		if time.Since(start) > timeout || errors.Is(ctx.Err(), context.Canceled) {
			sort.Slice(last, func(i, j int) bool { return last[i].String() < last[j].String() })
			return last, time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return last, time.Since(start), ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
