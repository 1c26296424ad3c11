package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	bq "cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery/bqtest"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
	"github.com/sluicehq/sluice/services/extractor"
)

// A Snowflake day whose extractor dies part-way (K batches acknowledged,
// its offset uncommitted) and whose chunk URLs then expire is finished by
// the next extractor from the run's checkpoint, on the one query, and the
// mapper and loader make it visible once: every row once, usage counted
// once, one IMPORT_SUCCESSFUL in the run's history.
func TestSnowflakeDayResumesThroughThePipeline(t *testing.T) {
	const rows, sfQuery = 1000, "SELECT event_name, event_time_s, user_id FROM events WHERE ds = ?"
	day := civil.Date{Year: 2024, Month: 5, Day: 1}
	t.Setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
	t.Setenv("SF_DISABLE_MINICORE", "true")
	t.Setenv("SLUICE_RESUME_SF_PASSWORD", "s3cret")
	sf := sftest.NewServer(t)
	sf.AddUser("loader", "s3cret")
	sf.SetChunkRows(100)
	table := sftest.Table{Name: "EVENTS", Columns: []sftest.Column{{Name: "ds", Type: "DATE"}, {Name: "event_name", Type: "TEXT"},
		{Name: "event_time_s", Type: "INTEGER"}, {Name: "user_id", Type: "TEXT"}}}
	for i := range rows {
		table.Rows = append(table.Rows, []any{day, "click", 1714521600 + i, "u" + strconv.Itoa(i)})
	}
	if err := sf.AddTable(table); err != nil {
		t.Fatal(err)
	}
	ing := config.Ingestion{Name: "sf_events", Project: demo.ProjectName, Connection: "sf", Type: config.TypeEvents, Query: sfQuery,
		Mapping:  config.Mapping{EventName: "event_name", Timestamp: "event_time_s", TimestampUnit: "seconds", IDs: map[string]string{"userID": "user_id"}},
		Schedule: config.Schedule{Mode: config.ScheduleAPITriggered}}
	s := newWHStack(t, []config.Connection{{Name: "sf", Kind: "snowflake", Account: sftest.Account, User: "loader",
		PasswordEnv: "SLUICE_RESUME_SF_PASSWORD", Database: "DB", Schema: "PUBLIC", Endpoint: sf.URL}},
		[]config.Ingestion{ing}, nil, config.Pipeline{})
	xcfg := extractor.Config{BatchRows: 50, DrainTimeout: 50 * time.Millisecond, RetryBackoff: 10 * time.Millisecond}

	release := sf.HoldChunks()
	defer release()
	crash := s.start(RunOptions{Targets: []string{"extractor"}, Extractor: xcfg})
	s.request(ing.Name, day)
	runID := s.waitCheckpoint(ing.Name, 2, func() bool { return sf.Stats().HeldChunks == 1 })
	crash()
	release()
	sf.ExpireChunkURLsAfter(3)

	s.start(RunOptions{Targets: []string{"extractor", "mapper", "loader"}, Extractor: xcfg})
	s.wantLoadedOnce(ing.Name, day, runID, rows)
	queries := 0
	for _, q := range sf.Queries() {
		if q.SQL == sfQuery {
			queries++
		}
	}
	if queries != 1 || sf.Stats().ExpiredChunks != 1 {
		t.Errorf("%d day queries, server saw %+v; want one query, an expired URL on the way", queries, sf.Stats())
	}
}

// A BigQuery day whose extractor dies part-way (K batches acknowledged,
// its Storage Read stream paused, its offset uncommitted) and whose next
// read session then expires part-way is finished by the next extractor
// from the run's checkpoint, on the first query's kept result table, and
// made visible once, as the Snowflake day above.
func TestBigQueryDayResumesThroughThePipeline(t *testing.T) {
	const rows, bqQuery = 1000, "SELECT event_name, event_time_s, user_id FROM `sluice_e2e.events` WHERE ds = @date"
	day := civil.Date{Year: 2024, Month: 5, Day: 1}
	bqs := bqtest.NewServer(t)
	bqs.SetPageSize(50)
	schema := bq.Schema{{Name: "ds", Type: bq.DateFieldType}, {Name: "event_name", Type: bq.StringFieldType},
		{Name: "event_time_s", Type: bq.IntegerFieldType}, {Name: "user_id", Type: bq.StringFieldType}}
	var data [][]bq.Value
	for i := range rows {
		data = append(data, []bq.Value{day, "click", int64(1714521600 + i), "u" + strconv.Itoa(i)})
	}
	bqs.AddTable("sluice_e2e", "events", schema, data)
	ing := config.Ingestion{Name: "bq_events", Project: demo.ProjectName, Connection: "bq", Type: config.TypeEvents, Query: bqQuery,
		Mapping:  config.Mapping{EventName: "event_name", Timestamp: "event_time_s", TimestampUnit: "seconds", IDs: map[string]string{"userID": "user_id"}},
		Schedule: config.Schedule{Mode: config.ScheduleAPITriggered}}
	// The stack's own opener: Storage Read on the server's port.
	s := newWHStack(t, []config.Connection{{Name: "bq", Kind: "bigquery", ProjectID: "sluice-e2e", Location: "US", Endpoint: bqs.URL}},
		[]config.Ingestion{ing}, nil, config.Pipeline{})
	xcfg := extractor.Config{BatchRows: 50, DrainTimeout: 50 * time.Millisecond, RetryBackoff: 10 * time.Millisecond}

	release := bqs.HoldReads(100)
	defer release()
	crash := s.start(RunOptions{Targets: []string{"extractor"}, Extractor: xcfg})
	s.request(ing.Name, day)
	runID := s.waitCheckpoint(ing.Name, 2, func() bool { return bqs.Stats().HeldReads == 1 })
	crash()
	release()
	bqs.InjectReadFault(bqtest.ReadFault{AfterRows: 300, Expire: true, Times: 1})

	s.start(RunOptions{Targets: []string{"extractor", "mapper", "loader"}, Extractor: xcfg})
	s.wantLoadedOnce(ing.Name, day, runID, rows)
	queries := 0
	for _, q := range bqs.Queries() {
		if q == bqQuery {
			queries++
		}
	}
	// Sessions: the crashed read's, the resume's, its replacement.
	if st := bqs.Stats(); queries != 1 || st.ReadSessions != 3 {
		t.Errorf("%d day queries, server saw %+v; want one query, a session expired on the way", queries, st)
	}
}

// waitCheckpoint waits for the one run of ingestion to checkpoint nextSeq
// batches while held says its stream is paused, and returns the run's id.
func (s *whStack) waitCheckpoint(ingestion string, nextSeq int64, held func() bool) string {
	t := s.t
	t.Helper()
	var runID string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if runs, err := s.in.Store.Runs(t.Context(), store.RunFilter{Project: demo.ProjectName, Ingestion: ingestion}); err == nil && len(runs) == 1 {
			runID = runs[0].RunID
			if cp, err := s.in.Store.Checkpoint(t.Context(), demo.ProjectName, runID); err == nil && cp.NextSeq == nextSeq && held() {
				return runID
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first extractor never acknowledged %d batches with its stream paused (run %q)", nextSeq, runID)
		}
		time.Sleep(10 * time.Millisecond) // polling the running service
	}
}

// wantLoadedOnce checks that day of ingestion is loaded by run runID,
// every one of rows rows visible once (one user each), its usage counted
// once and one IMPORT_SUCCESSFUL in the run's history.
func (s *whStack) wantLoadedOnce(ingestion string, day civil.Date, runID string, rows int) {
	t := s.t
	t.Helper()
	d := s.e2e.waitDay(ingestion, day, "loaded", func(d store.Day) bool { return d.Status == vocab.StatusSuccessful })
	if d.RowsLoaded != int64(rows) || d.VisibleRunID != runID {
		t.Errorf("day %+v, want %d rows of run %s", d, rows, runID)
	}
	events, err := s.in.Store.VisibleEvents(t.Context(), demo.ProjectName, ingestion, day.String())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range events {
		for _, id := range e.UnitIDs {
			seen[id.IDType+"="+id.Value]++
		}
	}
	if len(events) != rows || len(seen) != rows {
		t.Errorf("%d visible events for %d users, want each of %d rows once", len(events), len(seen), rows)
	}
	usage, err := s.in.Store.Usage(t.Context(), demo.ProjectName, day.String(), day.String())
	if err != nil || len(usage) != 1 || usage[0].RowsLoaded != int64(rows) {
		t.Errorf("usage %+v (%v), want %d rows once", usage, err, rows)
	}
	r, err := s.in.Store.Run(context.Background(), demo.ProjectName, runID)
	if err != nil {
		t.Fatal(err)
	}
	successes := 0
	for _, st := range r.History {
		if st.Status == vocab.StatusSuccessful {
			successes++
		}
	}
	if successes != 1 {
		t.Errorf("run history %+v, want one %s", r.History, vocab.StatusSuccessful)
	}
}
