// Package storetest is the contract suite every store.Store runs: the
// PostgreSQL store against the real server, the DuckDB store in a temp dir.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// NewStore returns a migrated store for t. Called twice with the same t it
// must open the same database again (the crash test closes the first store
// and reopens); the factory cleans up when t ends.
type NewStore func(t testing.TB) store.Store

var t0 = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// Load describes one extraction of a day for tests and benchmarks.
type Load struct {
	Project, Ingestion, Date, RunID, ExtractID string
	Trigger                                    vocab.Trigger
	Fence                                      int64
	Rows                                       int              // mapped records
	PerBatch                                   int              // records per batch
	Rejected                                   map[string]int64 // rejected rows, put on batch 0
	Metrics                                    bool
	At                                         time.Time
}

func (l Load) withDefaults() Load {
	if l.Project == "" {
		l.Project = "p1"
	}
	if l.Ingestion == "" {
		l.Ingestion = "events_daily"
	}
	if l.Date == "" {
		l.Date = "2024-02-28"
	}
	if l.RunID == "" {
		l.RunID = "run-" + l.ExtractID
	}
	if l.Trigger == "" {
		l.Trigger = vocab.TriggerScheduled
	}
	if l.PerBatch == 0 {
		l.PerBatch = 7
	}
	if l.At.IsZero() {
		l.At = t0
	}
	return l
}

// Batches returns the extraction's ROWS batches, seq 0..n-1. Every event
// carries the extract id as its value, so a reader can tell extractions
// apart. An extraction with only rejected rows still has one batch.
// Batch 0 carries the rejected rows (see Rejects).
func (l Load) Batches() []*schemas.MappedBatch {
	l = l.withDefaults()
	typ := "events"
	if l.Metrics {
		typ = "metrics"
	}
	var out []*schemas.MappedBatch
	for seq, first := int64(0), 0; first < l.Rows || (first == 0 && len(l.Rejected) > 0); seq++ {
		n := min(l.PerBatch, l.Rows-first)
		b := &schemas.MappedBatch{
			RunID: l.RunID, ExtractID: l.ExtractID, Project: l.Project, Ingestion: l.Ingestion,
			Date: l.Date, Trigger: string(l.Trigger), Fence: l.Fence, Kind: schemas.KindRows, Type: typ,
			Seq: seq, RowCount: int64(n),
		}
		if seq == 0 {
			for reason, c := range l.Rejected {
				b.Rejected = append(b.Rejected, schemas.ReasonCount{Reason: reason, Count: c})
				b.RowCount += c
			}
			b.RejectedRows = l.Rejects()
		}
		for i := first; i < first+n; i++ {
			if l.Metrics {
				b.Metrics = append(b.Metrics, l.metric(i))
			} else {
				b.Events = append(b.Events, l.event(i))
			}
		}
		out = append(out, b)
		first += n
		if n == 0 {
			break
		}
	}
	return out
}

// Rejects are the extraction's rejected rows, by position: after the
// mapped rows, by reason in name order. Their values name the extraction,
// so a reader can tell extractions apart.
func (l Load) Rejects() []schemas.RejectedRow {
	l = l.withDefaults()
	reasons := make([]string, 0, len(l.Rejected))
	for reason := range l.Rejected {
		reasons = append(reasons, reason)
	}
	sort.Strings(reasons)
	var out []schemas.RejectedRow
	pos := int64(l.Rows)
	for _, reason := range reasons {
		for range l.Rejected[reason] {
			out = append(out, schemas.RejectedRow{Position: pos, Reason: reason, Detail: reason + " at " + fmt.Sprint(pos),
				Values: map[string]string{"extract": l.ExtractID, "note": `ü \ "q"`}})
			pos++
		}
	}
	return out
}

func (l Load) event(i int) schemas.Event {
	return schemas.Event{
		Position:   int64(i),
		EventName:  "purchase",
		EventValue: l.ExtractID,
		TimeMs:     t0.UnixMilli() + int64(i)*1000,
		UnitIDs: []schemas.UnitID{
			{IDType: "stableID", Value: fmt.Sprintf("d-%d", i)},
			{IDType: "userID", Value: fmt.Sprintf("u-%d\t\"q\"", i)},
		},
		MetadataJSON: fmt.Sprintf(`{"sku":"s%d","note":"ü \\ ok"}`, i%13),
	}
}

func (l Load) metric(i int) schemas.Metric {
	return schemas.Metric{
		Position: int64(i), UnitID: fmt.Sprintf("u-%d", i), IDType: "userID", Date: l.Date,
		MetricName: "revenue", MetricValue: float64(i) * 1.5, IsRatio: i%2 == 1,
		Numerator: float64(i), Denominator: 2,
	}
}

// End returns the extraction's END record.
func (l Load) End() store.RunEnd {
	l = l.withDefaults()
	rows := int64(l.Rows)
	for _, c := range l.Rejected {
		rows += c
	}
	typ := "events"
	if l.Metrics {
		typ = "metrics"
	}
	return store.RunEnd{
		RunID: l.RunID, ExtractID: l.ExtractID, Project: l.Project, Ingestion: l.Ingestion,
		Type: typ, Date: l.Date, Trigger: l.Trigger, Fence: l.Fence,
		Batches: int64(len(l.Batches())), Rows: rows, MaxRejectedShare: 0.5, At: l.At,
	}
}

// Run runs the contract suite.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"StagingRedeliveryIsIdempotent", testStagingRedelivery},
		{"EndBeforeAllBatches", testEndBeforeAllBatches},
		{"RedeliveredEndIsAlreadyDone", testAlreadyDone},
		{"ReloadReplacesDayAndCountsUsage", testReload},
		{"StaleFenceIsRefused", testStale},
		{"ExtractionsDoNotMix", testExtractionsDoNotMix},
		{"TooManyRejected", testTooManyRejected},
		{"EmptyDay", testEmptyDay},
		{"UpdateRunNeverGoesBackwards", testUpdateRun},
		{"FailedReloadKeepsLoadedDay", testFailedReload},
		{"FiltersAndProjectIsolation", testFilters},
		{"DeltaLedger", testDeltaLedger},
		{"MetricsRoundTrip", testMetrics},
		{"ConcurrentReadersSeeWholeDays", testConcurrentReaders},
		{"TwoExtractionsOfOneRunCountOnce", testTwoExtractionsOfOneRun},
		{"EndedRunIgnoresLaterExtractions", testEndedRunIgnoresExtractions},
		{"NotificationOutbox", testNotificationOutbox},
		{"DeadLetterOutbox", testDeadLetterOutbox},
		{"DeadLettersOfOneRunOnce", testDeadLettersOfOneRunOnce},
		{"Checkpoints", testCheckpoints},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
	t.Run("CrashAndRedeliver", func(t *testing.T) {
		t.Parallel()
		testCrash(t, newStore)
	})
}

func stage(t testing.TB, s store.Store, bs ...*schemas.MappedBatch) {
	t.Helper()
	if err := s.StageBatches(context.Background(), bs); err != nil {
		t.Fatalf("stage: %v", err)
	}
}

func complete(t testing.TB, s store.Store, end store.RunEnd, want store.Outcome) {
	t.Helper()
	got, err := s.CompleteRun(context.Background(), end)
	if err != nil {
		t.Fatalf("complete %s: %v", end.ExtractID, err)
	}
	if got != want {
		t.Fatalf("complete %s: outcome %v, want %v", end.ExtractID, got, want)
	}
}

// load stages every batch of l and completes it, expecting want.
func load(t testing.TB, s store.Store, l Load, want store.Outcome) {
	t.Helper()
	stage(t, s, l.Batches()...)
	complete(t, s, l.End(), want)
}

// checkVisible asserts the day shows exactly l's events, in order.
func checkVisible(t testing.TB, s store.Store, l Load) {
	t.Helper()
	l = l.withDefaults()
	got, err := s.VisibleEvents(context.Background(), l.Project, l.Ingestion, l.Date)
	if err != nil {
		t.Fatalf("visible events: %v", err)
	}
	if len(got) != l.Rows {
		t.Fatalf("visible events of %s: %d rows, want %d", l.Date, len(got), l.Rows)
	}
	for i, e := range got {
		want := l.event(i)
		if e.Position != want.Position || e.EventName != want.EventName || e.EventValue != want.EventValue || e.TimeMs != want.TimeMs {
			t.Fatalf("visible event %d = %+v, want %+v", i, e, want)
		}
		if !reflect.DeepEqual(e.UnitIDs, want.UnitIDs) { // want is already sorted by id type
			t.Fatalf("event %d unit ids = %v, want %v", i, e.UnitIDs, want.UnitIDs)
		}
		if !sameJSON(t, e.MetadataJSON, want.MetadataJSON) {
			t.Fatalf("event %d metadata = %s, want %s", i, e.MetadataJSON, want.MetadataJSON)
		}
	}
}

func sameJSON(t testing.TB, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("stored metadata %q is not JSON: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("metadata %q is not JSON: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func day(t testing.TB, s store.Store, project, ingestion, date string) store.Day {
	t.Helper()
	days, err := s.Days(context.Background(), store.DayFilter{Project: project, Ingestion: ingestion, From: date, To: date})
	if err != nil {
		t.Fatalf("days: %v", err)
	}
	if len(days) != 1 {
		t.Fatalf("days %s %s: got %d, want 1: %+v", ingestion, date, len(days), days)
	}
	return days[0]
}

func run(t testing.TB, s store.Store, project, runID string) store.Run {
	t.Helper()
	r, err := s.Run(context.Background(), project, runID)
	if err != nil {
		t.Fatalf("run %s: %v", runID, err)
	}
	return r
}

func statuses(r store.Run) []vocab.Status {
	var out []vocab.Status
	for _, h := range r.History {
		out = append(out, h.Status)
	}
	return out
}

func testStagingRedelivery(t *testing.T, s store.Store) {
	l := Load{ExtractID: "x1", Rows: 20, PerBatch: 6, Rejected: map[string]int64{"bad_time": 2}}
	bs := l.Batches()
	stage(t, s, bs[0], bs[1])
	stage(t, s, bs[1], bs[1], bs[2]) // a redelivery and a duplicate within one call
	stage(t, s, bs...)
	complete(t, s, l.End(), store.Swapped)
	checkVisible(t, s, l)
	d := day(t, s, "p1", "events_daily", "2024-02-28")
	if d.Status != vocab.StatusSuccessful || d.RowsLoaded != 20 || d.Extracted != 22 || d.Rejected["bad_time"] != 2 {
		t.Fatalf("day = %+v, want successful with 20 loaded of 22, 2 bad_time", d)
	}
	r := run(t, s, "p1", l.withDefaults().RunID)
	if r.Mapped != 20 || r.Extracted != 22 || r.Rejected["bad_time"] != 2 || r.ExtractID != "x1" {
		t.Fatalf("run counts = %+v", r)
	}
}

func testEndBeforeAllBatches(t *testing.T, s store.Store) {
	l := Load{ExtractID: "x1", Rows: 30, PerBatch: 10}
	bs := l.Batches()
	stage(t, s, bs[0], bs[2])
	complete(t, s, l.End(), store.Incomplete)
	if got, _ := s.VisibleEvents(context.Background(), "p1", "events_daily", "2024-02-28"); len(got) != 0 {
		t.Fatalf("incomplete run shows %d rows", len(got))
	}
	if days, _ := s.Days(context.Background(), store.DayFilter{Project: "p1"}); len(days) != 0 {
		t.Fatalf("incomplete run created days: %+v", days)
	}
	stage(t, s, bs[1])
	complete(t, s, l.End(), store.Swapped)
	checkVisible(t, s, l)
	d := day(t, s, "p1", "events_daily", "2024-02-28")
	if d.FirstLoadedAt == nil || !d.FirstLoadedAt.Equal(t0) || d.VisibleRunID != "run-x1" {
		t.Fatalf("day = %+v", d)
	}
}

func testAlreadyDone(t *testing.T, s store.Store) {
	l := Load{ExtractID: "x1", Rows: 15}
	load(t, s, l, store.Swapped)
	stage(t, s, l.Batches()...)
	complete(t, s, l.End(), store.AlreadyDone)
	checkVisible(t, s, l)
	r := run(t, s, "p1", "run-x1")
	if got := statuses(r); !reflect.DeepEqual(got, []vocab.Status{vocab.StatusSuccessful}) {
		t.Fatalf("history after redelivered end = %v", got)
	}
	usage, err := s.Usage(context.Background(), "p1", "", "")
	if err != nil || len(usage) != 1 || usage[0].RowsLoaded != 15 {
		t.Fatalf("usage after redelivery = %+v, %v; want one row of 15", usage, err)
	}
}

func testReload(t *testing.T, s store.Store) {
	first := Load{ExtractID: "x1", Rows: 40, Fence: 1}
	load(t, s, first, store.Swapped)
	second := Load{ExtractID: "x2", Rows: 55, Fence: 2, Trigger: vocab.TriggerReload, At: t0.Add(time.Hour)}
	load(t, s, second, store.Swapped)
	checkVisible(t, s, second)
	d := day(t, s, "p1", "events_daily", "2024-02-28")
	if d.RowsLoaded != 55 || d.VisibleRunID != "run-x2" || d.Fence != 2 ||
		!d.FirstLoadedAt.Equal(t0) || !d.LastLoadedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("reloaded day = %+v", d)
	}
	usage, err := s.Usage(context.Background(), "p1", "2024-02-28", "2024-02-28")
	if err != nil {
		t.Fatal(err)
	}
	want := []store.UsageRow{
		{Project: "p1", Date: "2024-02-28", Ingestion: "events_daily", Trigger: vocab.TriggerReload, RowsLoaded: 55},
		{Project: "p1", Date: "2024-02-28", Ingestion: "events_daily", Trigger: vocab.TriggerScheduled, RowsLoaded: 40},
	}
	if !reflect.DeepEqual(usage, want) {
		t.Fatalf("usage = %+v, want %+v", usage, want)
	}
	if u, _ := s.Usage(context.Background(), "p1", "2024-03-01", ""); len(u) != 0 {
		t.Fatalf("usage outside the range = %+v", u)
	}
}

func testStale(t *testing.T, s store.Store) {
	newer := Load{ExtractID: "x5", Rows: 10, Fence: 5}
	load(t, s, newer, store.Swapped)
	older := Load{ExtractID: "x3", Rows: 12, Fence: 3}
	load(t, s, older, store.Stale)
	checkVisible(t, s, newer)
	if r := run(t, s, "p1", "run-x3"); r.Status != vocab.StatusSuperseded {
		t.Fatalf("stale run status = %s", r.Status)
	}
	// Its batches redelivered later stay out, and its END stays refused.
	load(t, s, older, store.AlreadyDone)
	checkVisible(t, s, newer)
}

func testExtractionsDoNotMix(t *testing.T, s store.Store) {
	// The first extraction of run r1 died after two of its batches; the
	// retry (a new extract id, the same run) has three.
	dead := Load{ExtractID: "x1", RunID: "r1", Rows: 30, PerBatch: 10}
	stage(t, s, dead.Batches()[:2]...)
	retry := Load{ExtractID: "x2", RunID: "r1", Rows: 25, PerBatch: 10}
	bs := retry.Batches()
	stage(t, s, bs[:2]...)
	complete(t, s, retry.End(), store.Incomplete) // x1's batches never count for x2
	stage(t, s, bs[2])
	complete(t, s, retry.End(), store.Swapped)
	checkVisible(t, s, retry)
	// The abandoned extraction's late batches cannot come back.
	stage(t, s, dead.Batches()...)
	if out, err := s.CompleteRun(context.Background(), dead.End()); err != nil || out == store.Swapped {
		t.Fatalf("abandoned extraction completed: %v, %v", out, err)
	}
	checkVisible(t, s, retry)
}

func testTooManyRejected(t *testing.T, s store.Store) {
	t.Run("never loaded day fails", func(t *testing.T) {
		l := Load{ExtractID: "x1", Rows: 4, Rejected: map[string]int64{"bad_time": 4, "missing_id": 2}}
		load(t, s, l, store.TooManyRejected)
		r := run(t, s, "p1", "run-x1")
		if r.Status != vocab.StatusFailed || r.ErrorCategory != vocab.CategoryTooManyRejected ||
			!strings.Contains(r.ErrorMessage, "60.0%") || !strings.Contains(r.ErrorMessage, "bad_time 4") {
			t.Fatalf("run = %+v", r)
		}
		d := day(t, s, "p1", "events_daily", "2024-02-28")
		if d.Status != vocab.StatusFailed || d.ErrorCategory != vocab.CategoryTooManyRejected {
			t.Fatalf("day = %+v", d)
		}
		if got, _ := s.VisibleEvents(context.Background(), "p1", "events_daily", "2024-02-28"); len(got) != 0 {
			t.Fatalf("failed run shows %d rows", len(got))
		}
	})
	t.Run("loaded day keeps its rows", func(t *testing.T) {
		good := Load{ExtractID: "g1", Date: "2024-02-27", Rows: 9}
		load(t, s, good, store.Swapped)
		bad := Load{ExtractID: "g2", Date: "2024-02-27", Rows: 1, Fence: 1, Rejected: map[string]int64{"bad_name": 5}}
		load(t, s, bad, store.TooManyRejected)
		checkVisible(t, s, good)
		d := day(t, s, "p1", "events_daily", "2024-02-27")
		if d.Status != vocab.StatusSuccessful || d.RowsLoaded != 9 || d.ErrorCategory != vocab.CategoryTooManyRejected {
			t.Fatalf("day = %+v", d)
		}
	})
}

func testEmptyDay(t *testing.T, s store.Store) {
	full := Load{ExtractID: "x1", Rows: 8}
	load(t, s, full, store.Swapped)
	empty := Load{ExtractID: "x2", Rows: 0, Fence: 1}
	if n := len(empty.Batches()); n != 0 {
		t.Fatalf("empty load has %d batches", n)
	}
	complete(t, s, empty.End(), store.Swapped)
	checkVisible(t, s, empty)
	d := day(t, s, "p1", "events_daily", "2024-02-28")
	if d.Status != vocab.StatusLoadedEmpty || d.RowsLoaded != 0 || d.VisibleRunID != "run-x2" {
		t.Fatalf("day = %+v", d)
	}
	if r := run(t, s, "p1", "run-x2"); r.Status != vocab.StatusLoadedEmpty {
		t.Fatalf("run status = %s", r.Status)
	}
}

func update(t testing.TB, s store.Store, u store.RunUpdate) {
	t.Helper()
	if u.Project == "" {
		u.Project = "p1"
	}
	if u.Ingestion == "" {
		u.Ingestion = "events_daily"
	}
	if u.Date == "" {
		u.Date = "2024-02-28"
	}
	if u.Type == "" {
		u.Type = "events"
	}
	if err := s.UpdateRun(context.Background(), u); err != nil {
		t.Fatalf("update run %s to %s: %v", u.RunID, u.Status, err)
	}
}

func testUpdateRun(t *testing.T, s store.Store) {
	steps := []struct {
		status  vocab.Status
		want    vocab.Status // run status after the step
		changed bool         // what UpdateRunChanged says
	}{
		{vocab.StatusScheduled, vocab.StatusScheduled, true},
		{vocab.StatusStarted, vocab.StatusStarted, true},
		{vocab.StatusScheduled, vocab.StatusStarted, false}, // a redelivery: ignored
		{vocab.StatusDownloaded, vocab.StatusDownloaded, true},
		{vocab.StatusStarted, vocab.StatusDownloaded, false},
		{vocab.StatusFailed, vocab.StatusFailed, true},
		{vocab.StatusFailed, vocab.StatusFailed, false},     // a redelivered FAILED decides nothing
		{vocab.StatusStarted, vocab.StatusFailed, false},    // nothing follows FAILED
		{vocab.StatusSuccessful, vocab.StatusFailed, false}, // not even another terminal status
	}
	for i, st := range steps {
		u := store.RunUpdate{RunID: "r1", Project: "p1", Ingestion: "events_daily", Type: "events", Date: "2024-02-28",
			Trigger: vocab.TriggerAPI, Status: st.status, At: t0.Add(time.Duration(i) * time.Minute)}
		if st.status == vocab.StatusFailed {
			u.ErrorCategory, u.ErrorMessage = vocab.CategoryQuery, "relation does not exist"
		}
		changed, err := s.UpdateRunChanged(context.Background(), u)
		if err != nil {
			t.Fatalf("step %d (%s): %v", i, st.status, err)
		}
		if changed != st.changed {
			t.Errorf("step %d (%s): changed %v, want %v", i, st.status, changed, st.changed)
		}
		if got := run(t, s, "p1", "r1").Status; got != st.want {
			t.Fatalf("step %d (%s): status %s, want %s", i, st.status, got, st.want)
		}
	}
	r := run(t, s, "p1", "r1")
	wantHistory := []vocab.Status{vocab.StatusScheduled, vocab.StatusStarted, vocab.StatusDownloaded, vocab.StatusFailed}
	if got := statuses(r); !reflect.DeepEqual(got, wantHistory) {
		t.Fatalf("history = %v, want %v", got, wantHistory)
	}
	if !r.History[2].At.Equal(t0.Add(3*time.Minute)) || !r.CreatedAt.Equal(t0) || r.Trigger != vocab.TriggerAPI {
		t.Fatalf("run = %+v", r)
	}
	d := day(t, s, "p1", "events_daily", "2024-02-28")
	if d.Status != vocab.StatusFailed || d.ErrorCategory != vocab.CategoryQuery || d.ErrorMessage != "relation does not exist" {
		t.Fatalf("day of a failed first run = %+v", d)
	}
	if err := s.UpdateRun(context.Background(), store.RunUpdate{RunID: "r2", Project: "p1", Status: "BOGUS"}); !errors.Is(err, store.ErrUnknownStatus) {
		t.Fatalf("unknown status: err = %v", err)
	}
	update(t, s, store.RunUpdate{RunID: "r3", Date: "2024-02-20", Status: vocab.StatusNoDataYet, Message: "no rows by 12:00"})
	if d := day(t, s, "p1", "events_daily", "2024-02-20"); d.Status != vocab.StatusNoDataYet || d.Message != "no rows by 12:00" {
		t.Fatalf("no-data day = %+v", d)
	}
}

func testFailedReload(t *testing.T, s store.Store) {
	good := Load{ExtractID: "x1", Rows: 6, Fence: 1}
	load(t, s, good, store.Swapped)
	update(t, s, store.RunUpdate{RunID: "r2", Fence: 2, Status: vocab.StatusStarted})
	if d := day(t, s, "p1", "events_daily", "2024-02-28"); d.Status != vocab.StatusSuccessful {
		t.Fatalf("a started reload changed the loaded day's status to %s", d.Status)
	}
	update(t, s, store.RunUpdate{RunID: "r2", Fence: 2, Status: vocab.StatusFailed, ErrorCategory: vocab.CategoryConnection, ErrorMessage: "timeout"})
	checkVisible(t, s, good)
	d := day(t, s, "p1", "events_daily", "2024-02-28")
	if d.Status != vocab.StatusSuccessful || d.RowsLoaded != 6 || d.ErrorCategory != vocab.CategoryConnection || d.ErrorMessage != "timeout" {
		t.Fatalf("day after a failed reload = %+v", d)
	}
	// A later successful load clears the error.
	load(t, s, Load{ExtractID: "x3", Rows: 7, Fence: 3}, store.Swapped)
	if d := day(t, s, "p1", "events_daily", "2024-02-28"); d.ErrorCategory != "" || d.RowsLoaded != 7 {
		t.Fatalf("day after a good reload = %+v", d)
	}
}

func testFilters(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i, l := range []Load{
		{Project: "pa", Ingestion: "ev", Date: "2024-02-01", ExtractID: "a1", Rows: 3, At: t0},
		{Project: "pa", Ingestion: "ev", Date: "2024-02-02", ExtractID: "a2", Rows: 4, At: t0.Add(48 * time.Hour)},
		{Project: "pa", Ingestion: "mt", Date: "2024-02-01", ExtractID: "a3", Rows: 5, Metrics: true, At: t0.Add(time.Hour)},
		{Project: "pb", Ingestion: "ev", Date: "2024-02-01", ExtractID: "b1", Rows: 6, At: t0.Add(72 * time.Hour)},
	} {
		update(t, s, store.RunUpdate{RunID: l.withDefaults().RunID, Project: l.Project, Ingestion: l.Ingestion,
			Date: l.Date, Status: vocab.StatusScheduled, At: t0.Add(time.Duration(i) * time.Minute)})
		load(t, s, l, store.Swapped)
	}
	dayKeys := func(f store.DayFilter) []string {
		t.Helper()
		days, err := s.Days(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, d := range days {
			keys = append(keys, d.Project+"/"+d.Ingestion+"/"+d.Date)
		}
		return keys
	}
	cases := []struct {
		name string
		f    store.DayFilter
		want []string
	}{
		{"project", store.DayFilter{Project: "pa"}, []string{"pa/ev/2024-02-01", "pa/ev/2024-02-02", "pa/mt/2024-02-01"}},
		{"other project", store.DayFilter{Project: "pb"}, []string{"pb/ev/2024-02-01"}},
		{"all projects", store.DayFilter{Ingestion: "ev", To: "2024-02-01"}, []string{"pa/ev/2024-02-01", "pb/ev/2024-02-01"}},
		{"type", store.DayFilter{Project: "pa", Type: "metrics"}, []string{"pa/mt/2024-02-01"}},
		{"range", store.DayFilter{Project: "pa", From: "2024-02-02", To: "2024-02-09"}, []string{"pa/ev/2024-02-02"}},
		{"loaded since", store.DayFilter{LoadedSince: t0.Add(47 * time.Hour)}, []string{"pb/ev/2024-02-01", "pa/ev/2024-02-02"}},
		{"unknown project", store.DayFilter{Project: "pc"}, nil},
	}
	for _, c := range cases {
		t.Run("days/"+c.name, func(t *testing.T) {
			if got := dayKeys(c.f); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("days = %v, want %v", got, c.want)
			}
		})
	}
	runCases := []struct {
		name string
		f    store.RunFilter
		want []string
	}{
		{"project newest first", store.RunFilter{Project: "pa"}, []string{"run-a3", "run-a2", "run-a1"}},
		{"limit", store.RunFilter{Project: "pa", Limit: 1}, []string{"run-a3"}},
		{"date", store.RunFilter{Project: "pa", Date: "2024-02-01"}, []string{"run-a3", "run-a1"}},
		{"ingestion", store.RunFilter{Project: "pa", Ingestion: "ev"}, []string{"run-a2", "run-a1"}},
		{"other project", store.RunFilter{Project: "pb"}, []string{"run-b1"}},
	}
	for _, c := range runCases {
		t.Run("runs/"+c.name, func(t *testing.T) {
			runs, err := s.Runs(ctx, c.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range runs {
				got = append(got, r.RunID)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("runs = %v, want %v", got, c.want)
			}
		})
	}
	if _, err := s.Run(ctx, "pa", "run-b1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("project pa reads pb's run: err = %v", err)
	}
	if ev, _ := s.VisibleEvents(ctx, "pa", "ev", "2024-02-01"); len(ev) != 3 || ev[0].EventValue != "a1" {
		t.Fatalf("pa's events = %d rows", len(ev))
	}
	if ev, _ := s.VisibleEvents(ctx, "pc", "ev", "2024-02-01"); len(ev) != 0 {
		t.Fatalf("unknown project sees %d events", len(ev))
	}
	if u, _ := s.Usage(ctx, "pb", "", ""); len(u) != 1 || u[0].RowsLoaded != 6 || u[0].Project != "pb" {
		t.Fatalf("pb usage = %+v", u)
	}
}

func testDeltaLedger(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.RecordWarehouseCount(ctx, "p1", "events_daily", "2024-02-28", 10, "f0", t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("count of an unknown day: err = %v", err)
	}
	load(t, s, Load{ExtractID: "x1", Rows: 10}, store.Swapped)
	steps := []struct {
		count             int64
		finger            string
		wantFinger, wantW string
	}{
		{10, "f1", "f1", "f1"}, // the first check after the load is the baseline
		{12, "f2", "f1", "f2"},
	}
	for i, st := range steps {
		at := t0.Add(time.Duration(i+1) * time.Hour)
		if err := s.RecordWarehouseCount(ctx, "p1", "events_daily", "2024-02-28", st.count, st.finger, at); err != nil {
			t.Fatal(err)
		}
		d := day(t, s, "p1", "events_daily", "2024-02-28")
		if d.WarehouseCount == nil || *d.WarehouseCount != st.count || !d.WarehouseAt.Equal(at) ||
			d.Fingerprint != st.wantFinger || d.WarehouseFinger != st.wantW || d.RowsLoaded != 10 {
			t.Fatalf("step %d: day = %+v", i, d)
		}
	}
	// A reload resets the baseline.
	load(t, s, Load{ExtractID: "x2", Rows: 12, Fence: 1}, store.Swapped)
	if d := day(t, s, "p1", "events_daily", "2024-02-28"); d.Fingerprint != "" || d.RowsLoaded != 12 {
		t.Fatalf("day after reload = %+v", d)
	}
}

func testMetrics(t *testing.T, s store.Store) {
	l := Load{ExtractID: "m1", Ingestion: "metrics_daily", Rows: 11, PerBatch: 4, Metrics: true}
	load(t, s, l, store.Swapped)
	got, err := s.VisibleMetrics(context.Background(), "p1", "metrics_daily", "2024-02-28")
	if err != nil {
		t.Fatal(err)
	}
	var want []schemas.Metric
	for i := range 11 {
		want = append(want, l.withDefaults().metric(i))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("metrics = %+v\nwant %+v", got, want)
	}
	if ev, _ := s.VisibleEvents(context.Background(), "p1", "metrics_daily", "2024-02-28"); len(ev) != 0 {
		t.Fatalf("a metrics day shows %d events", len(ev))
	}
	if d := day(t, s, "p1", "metrics_daily", "2024-02-28"); d.Type != "metrics" || d.RowsLoaded != 11 {
		t.Fatalf("day = %+v", d)
	}
}

// testConcurrentReaders reloads one day over and over while a reader
// checks that every read shows exactly one whole extraction.
func testConcurrentReaders(t *testing.T, s store.Store) {
	const reloads = 12
	loads := make(map[string]Load)
	for i := range reloads {
		l := Load{ExtractID: fmt.Sprintf("x%02d", i), Fence: int64(i), Rows: 50 + 17*i, PerBatch: 16}
		loads[l.ExtractID] = l
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var reads, nonEmpty int
	var readErr error
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			ev, err := s.VisibleEvents(context.Background(), "p1", "events_daily", "2024-02-28")
			if err != nil {
				readErr = err
				return
			}
			reads++
			if len(ev) == 0 {
				continue
			}
			nonEmpty++
			l, ok := loads[ev[0].EventValue]
			if !ok || len(ev) != l.Rows {
				readErr = fmt.Errorf("read %d rows starting with extraction %q", len(ev), ev[0].EventValue)
				return
			}
			for i, e := range ev {
				if e.EventValue != l.ExtractID || e.Position != int64(i) {
					readErr = fmt.Errorf("row %d of a read of %s: extraction %s position %d", i, l.ExtractID, e.EventValue, e.Position)
					return
				}
			}
		}
	})
	for i := range reloads {
		l := loads[fmt.Sprintf("x%02d", i)]
		bs := l.Batches()
		// Stage in two polls, as a loader would.
		stage(t, s, bs[:len(bs)/2]...)
		stage(t, s, bs[len(bs)/2:]...)
		complete(t, s, l.End(), store.Swapped)
	}
	// Keep reading until the reader has seen the final day at least once.
	last := loads[fmt.Sprintf("x%02d", reloads-1)]
	checkVisible(t, s, last)
	close(done)
	wg.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	t.Logf("%d reads during %d reloads, %d non-empty", reads, reloads, nonEmpty)
	if reads == 0 {
		t.Fatal("the reader never read")
	}
}

// testCrash stops a store in the middle of a run, reopens it and replays
// the whole extraction: nothing is lost and nothing doubles.
func testCrash(t *testing.T, newStore NewStore) {
	s1 := newStore(t)
	l := Load{ExtractID: "x1", Rows: 40, PerBatch: 10}
	bs := l.Batches()
	update(t, s1, store.RunUpdate{RunID: "run-x1", Status: vocab.StatusStarted, At: t0})
	stage(t, s1, bs[:3]...)
	complete(t, s1, l.End(), store.Incomplete)
	// A cancelled StageBatches writes nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s1.StageBatches(ctx, bs[3:]); err == nil {
		t.Fatal("staging with a cancelled context succeeded")
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := newStore(t)
	stage(t, s2, bs...) // the consumer restarts from its last committed offset
	complete(t, s2, l.End(), store.Swapped)
	checkVisible(t, s2, l)
	// The swap committed but the offsets did not: everything comes again.
	stage(t, s2, bs...)
	complete(t, s2, l.End(), store.AlreadyDone)
	checkVisible(t, s2, l)
	if got := statuses(run(t, s2, "p1", "run-x1")); !reflect.DeepEqual(got, []vocab.Status{vocab.StatusStarted, vocab.StatusSuccessful}) {
		t.Fatalf("history = %v", got)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
}

// snapshot is everything a run's completion may change, to compare
// before and after one that must change nothing.
type snapshot struct {
	Day    store.Day
	Run    store.Run
	Usage  []store.UsageRow
	Events []schemas.Event
}

func snap(t testing.TB, s store.Store, project, runID, ingestion, date string) snapshot {
	t.Helper()
	ctx := context.Background()
	var sn snapshot
	days, err := s.Days(ctx, store.DayFilter{Project: project, Ingestion: ingestion, From: date, To: date})
	if err != nil {
		t.Fatalf("days: %v", err)
	}
	if len(days) == 1 {
		sn.Day = days[0]
	}
	if sn.Run, err = s.Run(ctx, project, runID); err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("run %s: %v", runID, err)
	}
	if sn.Usage, err = s.Usage(ctx, project, "", ""); err != nil {
		t.Fatalf("usage: %v", err)
	}
	if sn.Events, err = s.VisibleEvents(ctx, project, ingestion, date); err != nil {
		t.Fatalf("visible events: %v", err)
	}
	return sn
}

func unchanged(t testing.TB, what string, before, after snapshot) {
	t.Helper()
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("%s changed the store:\nbefore %+v\nafter  %+v", what, before, after)
	}
}

// terminals counts the terminal statuses in a run's history.
func terminals(r store.Run) int {
	n := 0
	for _, h := range r.History {
		if h.Status.Terminal() {
			n++
		}
	}
	return n
}

// testTwoExtractionsOfOneRun: a redelivered request extracted the day
// again under the same run. Whichever extraction completes first is the
// run's; the other, and every redelivered END, changes nothing: the rows,
// the usage (once per run), the run's one terminal status.
func testTwoExtractionsOfOneRun(t *testing.T, s store.Store) {
	for i, tc := range []struct {
		name          string
		firstComplete string // extract id that completes first
		lateLoser     bool   // the other starts only after that completion
	}{
		{"first extraction completes first", "a", false},
		{"second extraction completes first", "b", false},
		{"second extraction starts after the run ended", "a", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			date := fmt.Sprintf("2024-01-%02d", i+1)
			runID := fmt.Sprintf("run-twice-%d", i)
			loads := map[string]Load{
				"a": {ExtractID: runID + "-a", RunID: runID, Date: date, Rows: 20, PerBatch: 6},
				"b": {ExtractID: runID + "-b", RunID: runID, Date: date, Rows: 23, PerBatch: 5},
			}
			winner, loser := loads[tc.firstComplete], loads["a"]
			if tc.firstComplete == "a" {
				loser = loads["b"]
			}
			update(t, s, store.RunUpdate{RunID: runID, Date: date, Status: vocab.StatusStarted, At: t0})
			if tc.lateLoser {
				load(t, s, winner, store.Swapped)
				stage(t, s, loser.Batches()...)
			} else {
				// a registers first, then b; both stream, interleaved,
				// before either END arrives.
				wa, wb := loads["a"].Batches(), loads["b"].Batches()
				stage(t, s, wa[:2]...)
				stage(t, s, wb[:2]...)
				stage(t, s, wa[2:]...)
				stage(t, s, wb[2:]...)
				complete(t, s, winner.End(), store.Swapped)
			}
			want := snap(t, s, "p1", runID, "events_daily", date)
			checkVisible(t, s, winner)
			complete(t, s, loser.End(), store.AlreadyDone)
			unchanged(t, "the other extraction's END", want, snap(t, s, "p1", runID, "events_daily", date))
			// Both ENDs again, and the loser's batches again.
			stage(t, s, loser.Batches()...)
			complete(t, s, loser.End(), store.AlreadyDone)
			complete(t, s, winner.End(), store.AlreadyDone)
			unchanged(t, "redelivered ENDs", want, snap(t, s, "p1", runID, "events_daily", date))
			checkVisible(t, s, winner)

			r := run(t, s, "p1", runID)
			if got := statuses(r); !reflect.DeepEqual(got, []vocab.Status{vocab.StatusStarted, vocab.StatusSuccessful}) {
				t.Fatalf("history = %v, want started then one success", got)
			}
			if r.ExtractID != winner.ExtractID || r.Mapped != int64(winner.Rows) {
				t.Fatalf("run counts = %+v, want the first-completed extraction's", r)
			}
			if d := day(t, s, "p1", "events_daily", date); d.RowsLoaded != int64(winner.Rows) || d.VisibleRunID != runID {
				t.Fatalf("day = %+v", d)
			}
			usage, err := s.Usage(context.Background(), "p1", date, date)
			if err != nil || len(usage) != 1 || usage[0].RowsLoaded != int64(winner.Rows) {
				t.Fatalf("usage = %+v, %v; want one row of %d", usage, err, winner.Rows)
			}
		})
	}
}

// testEndedRunIgnoresExtractions: once a run has a terminal status, no
// extraction of it changes anything, however the run ended.
func testEndedRunIgnoresExtractions(t *testing.T, s store.Store) {
	t.Run("too many rejected, then another extraction", func(t *testing.T) {
		bad := Load{ExtractID: "tm-1", RunID: "run-tm", Date: "2024-01-10", Rows: 2, Rejected: map[string]int64{"bad_time": 8}}
		load(t, s, bad, store.TooManyRejected)
		before := snap(t, s, "p1", "run-tm", "events_daily", "2024-01-10")
		again := Load{ExtractID: "tm-2", RunID: "run-tm", Date: "2024-01-10", Rows: 10}
		load(t, s, again, store.AlreadyDone)
		complete(t, s, bad.End(), store.AlreadyDone)
		unchanged(t, "an extraction of a run that failed on rejects", before, snap(t, s, "p1", "run-tm", "events_daily", "2024-01-10"))
		r := run(t, s, "p1", "run-tm")
		if r.Status != vocab.StatusFailed || r.ErrorCategory != vocab.CategoryTooManyRejected || terminals(r) != 1 {
			t.Fatalf("run = %+v, want FAILED %s with one terminal status", r, vocab.CategoryTooManyRejected)
		}
		if len(before.Usage) != 0 || len(before.Events) != 0 {
			t.Fatalf("a failed run counted usage %+v or shows %d rows", before.Usage, len(before.Events))
		}
	})
	t.Run("stale, then another extraction", func(t *testing.T) {
		load(t, s, Load{ExtractID: "st-new", Date: "2024-01-11", Rows: 5, Fence: 9}, store.Swapped)
		old := Load{ExtractID: "st-old-1", RunID: "run-st-old", Date: "2024-01-11", Rows: 6, Fence: 4}
		load(t, s, old, store.Stale)
		before := snap(t, s, "p1", "run-st-old", "events_daily", "2024-01-11")
		load(t, s, Load{ExtractID: "st-old-2", RunID: "run-st-old", Date: "2024-01-11", Rows: 6, Fence: 4}, store.AlreadyDone)
		complete(t, s, old.End(), store.AlreadyDone)
		unchanged(t, "an extraction of a superseded run", before, snap(t, s, "p1", "run-st-old", "events_daily", "2024-01-11"))
		if r := run(t, s, "p1", "run-st-old"); r.Status != vocab.StatusSuperseded || terminals(r) != 1 {
			t.Fatalf("run = %+v, want SUPERSEDED once", r)
		}
		if before.Day.VisibleRunID != "run-st-new" || len(before.Usage) != 1 || before.Usage[0].RowsLoaded != 5 {
			t.Fatalf("day %+v, usage %+v; want the fence-9 run's 5 rows only", before.Day, before.Usage)
		}
	})
	t.Run("failed by an update, then an extraction", func(t *testing.T) {
		update(t, s, store.RunUpdate{RunID: "run-fu", Date: "2024-01-12", Status: vocab.StatusFailed,
			ErrorCategory: vocab.CategoryQuery, ErrorMessage: "timeout"})
		before := snap(t, s, "p1", "run-fu", "events_daily", "2024-01-12")
		load(t, s, Load{ExtractID: "fu-1", RunID: "run-fu", Date: "2024-01-12", Rows: 3}, store.AlreadyDone)
		unchanged(t, "an extraction of a failed run", before, snap(t, s, "p1", "run-fu", "events_daily", "2024-01-12"))
	})
}

// CheckUpgrade migrates s, a store a backend test filled as the code of
// commit cd14462 did: run r1 (project p1, ingestion ev, 2024-02-01) with
// two usage rows of 50000 (swapped in twice), run r2 (2024-02-02) with one
// of 7, and r1 IMPORT_SUCCESSFUL in runs. After Migrate (twice) the
// ledger holds each run once and r1 cannot count again.
func CheckUpgrade(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	for range 2 {
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("migrate a store of cd14462: %v", err)
		}
	}
	want := []store.UsageRow{
		{Project: "p1", Date: "2024-02-01", Ingestion: "ev", Trigger: vocab.TriggerScheduled, RowsLoaded: 50000},
		{Project: "p1", Date: "2024-02-02", Ingestion: "ev", Trigger: vocab.TriggerScheduled, RowsLoaded: 7},
	}
	usage, err := s.Usage(ctx, "p1", "", "")
	if err != nil || !reflect.DeepEqual(usage, want) {
		t.Fatalf("usage after the upgrade = %+v, %v; want %+v", usage, err, want)
	}
	// Runs that ended before the outbox existed are not notified.
	if due := claim(t, s, "upgrade", t0, "p1"); len(due) != 0 {
		t.Fatalf("an upgraded store notifies its old runs: %v", due)
	}
	// A third extraction of r1 changes nothing: the run has ended.
	load(t, s, Load{Project: "p1", Ingestion: "ev", Date: "2024-02-01", RunID: "r1", ExtractID: "x3", Rows: 4}, store.AlreadyDone)
	if usage, _ := s.Usage(ctx, "p1", "2024-02-01", "2024-02-01"); len(usage) != 1 || usage[0].RowsLoaded != 50000 {
		t.Fatalf("usage of r1 = %+v", usage)
	}
	// Runs decided before the dead-letter outbox existed are not due.
	if due := dueDeadLetters(t, s, time.Time{}); len(due) != 0 {
		t.Fatalf("an upgraded store dead-letters its old runs: %v", due)
	}
	// A new run still counts, and its rejected row is due.
	load(t, s, Load{Project: "p1", Ingestion: "ev", Date: "2024-02-03", RunID: "r3", ExtractID: "x4", Rows: 4,
		Rejected: map[string]int64{"bad_time": 1}}, store.Swapped)
	if due := dueDeadLetters(t, s, time.Time{}); !reflect.DeepEqual(due, []string{"r3"}) {
		t.Fatalf("dead letters due after the upgrade = %v, want the new run r3 only", due)
	}
	if usage, _ := s.Usage(ctx, "p1", "2024-02-03", ""); len(usage) != 1 || usage[0].RowsLoaded != 4 {
		t.Fatalf("usage of r3 = %+v", usage)
	}
	if due := claim(t, s, "upgrade", t0, "p1"); !reflect.DeepEqual(due, []string{"r3"}) {
		t.Fatalf("due after the upgrade = %v, want the new run r3 only", due)
	}
}

const lease = time.Minute

// claim claims due runs of projects for owner at at and returns their ids.
func claim(t testing.TB, s store.Store, owner string, at time.Time, projects ...string) []string {
	t.Helper()
	runs, err := s.ClaimNotifications(context.Background(), store.NotificationClaim{
		Projects: projects, Owner: owner, At: at, Lease: lease, Limit: 100})
	if err != nil {
		t.Fatalf("claim notifications: %v", err)
	}
	var ids []string
	for _, r := range runs {
		if !r.Status.Terminal() {
			t.Fatalf("claimed run %s is %s, not terminal", r.RunID, r.Status)
		}
		ids = append(ids, r.RunID)
	}
	return ids
}

func markNotified(t testing.TB, s store.Store, project string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := s.MarkNotified(context.Background(), project, id, t0); err != nil {
			t.Fatalf("mark %s notified: %v", id, err)
		}
	}
}

// testNotificationOutbox: every terminal transition makes the run's
// notification due, once; a claim keeps other notifiers off until its
// lease ends or is released; MarkNotified ends it.
func testNotificationOutbox(t *testing.T, s store.Store) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	update(t, s, store.RunUpdate{RunID: "n-started", Date: "2024-01-20", Status: vocab.StatusStarted, At: at(0)})
	load(t, s, Load{ExtractID: "n-ok-x", RunID: "n-ok", Date: "2024-01-21", Rows: 3, At: at(1)}, store.Swapped)
	update(t, s, store.RunUpdate{RunID: "n-failed", Date: "2024-01-22", Status: vocab.StatusFailed, ErrorCategory: vocab.CategoryQuery, At: at(2)})
	load(t, s, Load{ExtractID: "n-rej-x", RunID: "n-rej", Date: "2024-01-23", Rows: 1, Rejected: map[string]int64{"bad_time": 9}, At: at(3)}, store.TooManyRejected)
	load(t, s, Load{ExtractID: "n-new-x", RunID: "n-new", Date: "2024-01-24", Rows: 2, Fence: 5, At: at(4)}, store.Swapped)
	load(t, s, Load{ExtractID: "n-old-x", RunID: "n-old", Date: "2024-01-24", Rows: 2, Fence: 1, At: at(5)}, store.Stale)
	load(t, s, Load{Project: "other", ExtractID: "n-o-x", RunID: "n-other", Rows: 1, At: at(6)}, store.Swapped)
	// Redeliveries and a second extraction of a done run add nothing.
	load(t, s, Load{ExtractID: "n-ok-x", RunID: "n-ok", Date: "2024-01-21", Rows: 3, At: at(7)}, store.AlreadyDone)
	load(t, s, Load{ExtractID: "n-ok-y", RunID: "n-ok", Date: "2024-01-21", Rows: 3, At: at(7)}, store.AlreadyDone)
	update(t, s, store.RunUpdate{RunID: "n-failed", Date: "2024-01-22", Status: vocab.StatusFailed, At: at(8)})

	want := []string{"n-ok", "n-failed", "n-rej", "n-new", "n-old"}
	if got := claim(t, s, "a", at(10), "p1"); !reflect.DeepEqual(got, want) {
		t.Fatalf("claimed %v, want %v (oldest first, terminal runs of p1 only)", got, want)
	}
	if got := claim(t, s, "b", at(10), "p1", "other"); !reflect.DeepEqual(got, []string{"n-other"}) {
		t.Fatalf("a second notifier claimed %v, want only the run a did not claim", got)
	}
	markNotified(t, s, "p1", "n-ok", "n-failed")
	markNotified(t, s, "p1", "n-ok") // idempotent
	// a's lease has ended: another notifier takes what a did not finish.
	if got := claim(t, s, "b", at(10).Add(lease), "p1"); !reflect.DeepEqual(got, want[2:]) {
		t.Fatalf("after a's lease, b claimed %v, want %v", got, want[2:])
	}
	if err := s.ReleaseNotifications(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if got := claim(t, s, "a", at(10).Add(lease), "p1"); !reflect.DeepEqual(got, want[2:]) {
		t.Fatalf("after b released, a claimed %v, want %v", got, want[2:])
	}
	markNotified(t, s, "p1", want[2:]...)
	markNotified(t, s, "other", "n-other")
	if got := claim(t, s, "c", at(100), "p1", "other"); len(got) != 0 {
		t.Fatalf("notified runs are due again: %v", got)
	}
	if r := run(t, s, "p1", "n-ok"); r.Status != vocab.StatusSuccessful || terminals(r) != 1 {
		t.Fatalf("run after its notification = %+v", r)
	}
}
