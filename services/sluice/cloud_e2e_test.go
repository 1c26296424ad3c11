package main

import (
	"context"
	"net"
	"testing"
	"time"

	bq "cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"google.golang.org/api/option"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery/bqtest"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
)

// snowflakeEvents is the demo events table as Snowflake types it.
var snowflakeEvents = []sftest.Column{
	{Name: "event_id", Type: "TEXT"}, {Name: "ds", Type: "DATE"}, {Name: "event_ts", Type: "TIMESTAMP_NTZ"},
	{Name: "event_time_s", Type: "NUMBER(38,0)"}, {Name: "event_name", Type: "TEXT"}, {Name: "event_value", Type: "TEXT"},
	{Name: "user_id", Type: "TEXT"}, {Name: "device_id", Type: "TEXT"}, {Name: "company_id", Type: "NUMBER(38,0)"},
	{Name: "country", Type: "TEXT"}, {Name: "platform", Type: "TEXT"}, {Name: "properties", Type: "TEXT"},
}

// bigqueryEvents is the demo events table as BigQuery types it.
var bigqueryEvents = bq.Schema{
	{Name: "event_id", Type: bq.StringFieldType}, {Name: "ds", Type: bq.DateFieldType}, {Name: "event_ts", Type: bq.TimestampFieldType},
	{Name: "event_time_s", Type: bq.IntegerFieldType}, {Name: "event_name", Type: bq.StringFieldType}, {Name: "event_value", Type: bq.StringFieldType},
	{Name: "user_id", Type: bq.StringFieldType}, {Name: "device_id", Type: bq.StringFieldType}, {Name: "company_id", Type: bq.IntegerFieldType},
	{Name: "country", Type: bq.StringFieldType}, {Name: "platform", Type: bq.StringFieldType}, {Name: "properties", Type: bq.StringFieldType},
}

const eventColumns = "event_id, event_time_s, event_ts, event_name, event_value, user_id, device_id, company_id, country, platform, properties"

// eventRows generates spec's events as table rows, nil for NULL.
func eventRows(tb testing.TB, spec demo.Spec) [][]any {
	tb.Helper()
	var rows [][]any
	orNil := func(v any, null bool) any {
		if null {
			return nil
		}
		return v
	}
	for _, day := range spec.Dates() {
		err := demo.Events(spec, day, func(ev *demo.Event) error {
			rows = append(rows, []any{ev.EventID, ev.Date, ev.TS, ev.TimeS, orNil(ev.Name, ev.NameNull), orNil(ev.Value, ev.ValueNull),
				orNil(ev.UserID, ev.UserNull), orNil(ev.DeviceID, ev.DeviceNull), orNil(ev.CompanyID, ev.CompanyNull),
				ev.Country, ev.Platform, ev.Properties})
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	return rows
}

// TestSnowflakeAndBigQueryEndToEnd runs every service, the planner's
// schedule included, with a Snowflake connection (sftest: password login,
// Arrow results in chunks of a few hundred rows) and a BigQuery connection
// (bqtest: the Storage Read API), each feeding an events ingestion, and
// compares each loaded day with the warehouse row by row.
func TestSnowflakeAndBigQueryEndToEnd(t *testing.T) {
	t.Setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
	t.Setenv("SF_DISABLE_MINICORE", "true")
	t.Setenv("SLUICE_E2E_SF_PASSWORD", "s3cret")
	spec := demo.Spec{Days: 3, LastDay: civil.DateOf(time.Now().UTC()).AddDays(-1), EventsPerDay: 1200, MetricsPerDay: 10, BadRowEvery: 60, Seed: 21}
	rows := eventRows(t, spec)

	sf := sftest.NewServer(t)
	sf.AddUser("loader", "s3cret")
	sf.SetChunkRows(300)
	if err := sf.AddTable(sftest.Table{Name: "DB.PUBLIC.EVENTS", Columns: snowflakeEvents, Rows: rows}); err != nil {
		t.Fatal(err)
	}
	bqs := bqtest.NewServer(t)
	bqs.SetPageSize(250) // a first page with a page token: Query.Read takes the Storage Read path
	bqRows := make([][]bq.Value, len(rows))
	for i, r := range rows {
		bqRows[i] = make([]bq.Value, len(r))
		for j, v := range r {
			bqRows[i][j] = v
		}
	}
	bqs.AddTable("sluice_e2e", "events", bigqueryEvents, bqRows)
	storage := bqs.StorageConn(t)

	hour := 0
	daily := config.Schedule{Mode: config.ScheduleDaily, Hour: &hour, Timezone: "UTC"}
	sfEvents := eventsIngestion("sf_events", "sf", "SELECT "+eventColumns+" FROM EVENTS WHERE ds = ?")
	bqEvents := eventsIngestion("bq_events", "bq", "SELECT "+eventColumns+" FROM `sluice_e2e.events` WHERE ds = @date")
	sfEvents.Schedule, bqEvents.Schedule = daily, daily
	s := newWHStack(t, []config.Connection{
		{Name: "sf", Kind: "snowflake", Account: sftest.Account, User: "loader", PasswordEnv: "SLUICE_E2E_SF_PASSWORD",
			Role: "SLUICE", Warehouse: "XS", Database: "DB", Schema: "PUBLIC", Endpoint: sf.URL},
		{Name: "bq", Kind: "bigquery", ProjectID: "sluice-e2e", Location: "US", Endpoint: bqs.URL},
	}, []config.Ingestion{sfEvents, bqEvents}, map[string]warehouse.Opener{
		// The Storage Read API of bqtest listens in memory: its connection
		// is handed to the source here, explicitly.
		"bigquery": func(ctx context.Context, c config.Connection) (warehouse.Source, error) {
			return bigquery.OpenWith(ctx, c, bigquery.Options{
				ClientOptions:  []option.ClientOption{option.WithoutAuthentication()},
				StorageOptions: []option.ClientOption{option.WithGRPCConn(storage), option.WithoutAuthentication()},
			})
		},
	}, config.Pipeline{CatchUpDays: spec.Days})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.start(RunOptions{Targets: Targets, PlannerTick: 100 * time.Millisecond, WatcherTick: 100 * time.Millisecond, TriggerListener: ln})

	expected := demo.Expected(spec)
	for _, ing := range []string{"sf_events", "bq_events"} {
		for _, day := range spec.Dates() {
			t.Run(ing+" "+day.String(), func(t *testing.T) {
				s.t = t
				s.e2e.t = t
				d := s.assertLoaded(ing, spec, day)
				if want := expected[day].Events; d.Extracted != want.Rows || d.RowsLoaded != want.Good() {
					t.Errorf("extracted %d, loaded %d; the generator made %d rows, %d good", d.Extracted, d.RowsLoaded, want.Rows, want.Good())
				}
			})
		}
	}
	s.t, s.e2e.t = t, t
	if st := sf.Stats(); st.Logins == 0 || st.ChunkDownloads == 0 {
		t.Errorf("snowflake: %d logins, %d chunk downloads; want password logins and chunked results", st.Logins, st.ChunkDownloads)
	}
	for _, q := range sf.Queries() {
		if b, ok := q.Bindings["1"]; ok && b.Type != "TEXT" && b.Type != "DATE" {
			t.Errorf("snowflake query %q bound the day as %s", q.SQL, b.Type)
		}
	}
	if st := bqs.Stats(); st.ReadSessions == 0 || st.RecordBatches == 0 {
		t.Errorf("bigquery: %d read sessions, %d record batches; want the Storage Read path", st.ReadSessions, st.RecordBatches)
	}
}
