package extractor

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/api/option"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/kafka"
	"github.com/sluicehq/sluice/pkg/kafka/kafkatest"
	"github.com/sluicehq/sluice/pkg/store"
	duckstore "github.com/sluicehq/sluice/pkg/store/duckdb"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	bqsource "github.com/sluicehq/sluice/pkg/warehouse/bigquery"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery/bqtest"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
	"github.com/sluicehq/sluice/schemas"
)

// The Snowflake day every harness serves: rows per day of table EVENTS,
// read by sfQuery.
const (
	sfProject   = "acme"
	sfIngestion = "sf_events"
	sfQuery     = "SELECT ID, NAME FROM events WHERE day = ?"
	sfPassEnv   = "SLUICE_EXTRACTOR_TEST_SF_PASSWORD"
)

var sfDay = civil.Date{Year: 2024, Month: time.May, Day: 1}

// The BigQuery day newBQHarness serves, in the same project: rows of
// table sluice.events on bqDay, read by bqQuery.
const (
	bqIngestion = "bq_events"
	bqQuery     = "SELECT id, name FROM `sluice.events` WHERE day = @date"
)

var bqDay = sfDay

// harness is an extractor's real surroundings: kfake with Sluice's
// topics, a warehouse (the sftest Snowflake server driven through
// gosnowflake, or bqtest through the BigQuery client), and a DuckDB store.
type harness struct {
	srv      *sftest.Server // the Snowflake harness's
	bq       *bqtest.Server // the BigQuery harness's
	kcfg     kafka.Config
	admin    *kgo.Client
	store    store.Store
	codecs   *schemas.Codecs
	settings *config.File
	pool     *warehouse.Pool
	log      *slog.Logger
}

// newHarness serves days sfDay, sfDay+1, ... (days of them) of rows rows
// each, in result chunks of chunkRows rows.
func newHarness(t *testing.T, partitions int32, days, rows, chunkRows int) *harness {
	t.Helper()
	t.Setenv(sfPassEnv, "secret")
	t.Setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
	t.Setenv("SF_DISABLE_MINICORE", "true")
	srv := sftest.NewServer(t)
	srv.AddUser("sluice", "secret")
	srv.SetChunkRows(chunkRows)
	table := sftest.Table{Name: "EVENTS", Columns: []sftest.Column{{Name: "ID", Type: "INTEGER"}, {Name: "DAY", Type: "DATE"}, {Name: "NAME", Type: "TEXT"}}}
	for d := range days {
		for i := range rows {
			table.Rows = append(table.Rows, []any{i, sfDay.AddDays(d), "name-" + strconv.Itoa(i)})
		}
	}
	if err := srv.AddTable(table); err != nil {
		t.Fatal(err)
	}
	conn := config.Connection{Name: "sf", Kind: "snowflake", Account: sftest.Account, User: "sluice", PasswordEnv: sfPassEnv,
		Warehouse: "XS", Database: "DB", Schema: "PUBLIC", Endpoint: srv.URL, MaxConcurrency: 8}
	ing := config.Ingestion{Name: sfIngestion, Project: sfProject, Connection: "sf", Type: config.TypeEvents, Query: sfQuery,
		Mapping: config.Mapping{EventName: "NAME", Timestamp: "ID", IDs: map[string]string{"userID": "ID"}}}
	h := newHarnessOn(t, partitions, conn, ing, func(ctx context.Context, c config.Connection) (warehouse.Source, error) {
		return snowflake.Open(ctx, c)
	})
	h.srv = srv
	return h
}

// newBQHarness serves bqDay of rows rows from bqtest, read through the
// Storage Read API (on the server's own port, unencrypted HTTP/2) in
// record batches of pageRows rows.
func newBQHarness(t *testing.T, rows, pageRows int) *harness {
	t.Helper()
	bq := bqtest.NewServer(t)
	bq.SetPageSize(pageRows)
	schema := bigquery.Schema{{Name: "id", Type: bigquery.IntegerFieldType}, {Name: "day", Type: bigquery.DateFieldType},
		{Name: "name", Type: bigquery.StringFieldType}}
	var data [][]bigquery.Value
	for i := range rows {
		data = append(data, []bigquery.Value{int64(i), bqDay, "name-" + strconv.Itoa(i)})
	}
	bq.AddTable("sluice", "events", schema, data)
	conn := config.Connection{Name: "bq", Kind: "bigquery", ProjectID: "sluice-extractor", Endpoint: bq.URL, MaxConcurrency: 8}
	ing := config.Ingestion{Name: bqIngestion, Project: sfProject, Connection: "bq", Type: config.TypeEvents, Query: bqQuery,
		Mapping: config.Mapping{EventName: "name", Timestamp: "id", IDs: map[string]string{"userID": "id"}}}
	h := newHarnessOn(t, 1, conn, ing, func(ctx context.Context, c config.Connection) (warehouse.Source, error) {
		return bqsource.Open(ctx, c, option.WithoutAuthentication())
	})
	h.bq = bq
	return h
}

// newHarnessOn is the harness around one connection and its ingestion,
// in project sfProject.
func newHarnessOn(t *testing.T, partitions int32, conn config.Connection, ing config.Ingestion, open warehouse.Opener) *harness {
	t.Helper()
	h := &harness{log: slog.New(slog.DiscardHandler)}
	h.kcfg, h.admin = kafkatest.Start(t, kafka.Config{TopicPrefix: "t.", Partitions: partitions})
	h.settings = &config.File{
		Projects:    []config.Project{{Name: sfProject, IDTypes: []string{"userID"}}},
		Connections: []config.Connection{conn},
		Ingestions:  []config.Ingestion{ing},
	}
	h.pool = warehouse.NewPool(h.settings.Connections, map[string]warehouse.Opener{conn.Kind: open})
	t.Cleanup(func() { h.pool.Close() })
	st, err := duckstore.Open(t.Context(), filepath.Join(t.TempDir(), "store.duckdb"), duckstore.Options{Logger: h.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.store = st
	if h.codecs, err = schemas.NewCodecs(); err != nil {
		t.Fatal(err)
	}
	return h
}

// start runs an extractor until the returned stop is called (or the test
// ends); stop returns once Run has.
func (h *harness) start(t *testing.T, cfg Config) (*Service, func()) {
	t.Helper()
	if cfg.BatchRows == 0 {
		cfg.BatchRows = 100
	}
	svc, err := New(cfg, Deps{Kafka: h.kcfg, Codecs: h.codecs, Sources: h.pool, Settings: h.settings, Store: h.store, Logger: h.log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("extractor run: %v", err)
		}
	}
	t.Cleanup(stop)
	return svc, stop
}

func request(runID string, day civil.Date) schemas.IngestRequest {
	return schemas.IngestRequest{RequestID: "q-" + runID, RunID: runID, Project: sfProject, Ingestion: sfIngestion,
		Date: day.String(), Trigger: string(vocab.TriggerScheduled), Fence: 1}
}

// bqRequest is request for the BigQuery harness's ingestion and day.
func bqRequest(runID string) schemas.IngestRequest {
	req := request(runID, bqDay)
	req.Ingestion = bqIngestion
	return req
}

// publish puts req on ingest-requests, on partition when it is >= 0.
func (h *harness) publish(t *testing.T, req schemas.IngestRequest, partition int32) {
	t.Helper()
	data, err := h.codecs.Encode(h.codecs.IngestRequest, &req)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kcfg.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rec := &kgo.Record{Topic: h.kcfg.Topic(schemas.TopicIngestRequests), Partition: max(partition, 0), Value: data}
	if err := cl.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// rewind puts the extractor group's committed offsets of ingest-requests
// back to the start: what the group would read had the extractor crashed
// before committing. The group must have no members.
func (h *harness) rewind(t *testing.T, group string, partitions int32) {
	t.Helper()
	offsets := kadm.Offsets{}
	for p := range partitions {
		offsets.Add(kadm.Offset{Topic: h.kcfg.Topic(schemas.TopicIngestRequests), Partition: p, At: 0, LeaderEpoch: -1})
	}
	resp, err := kadm.NewClient(h.admin).CommitOffsets(t.Context(), group, offsets)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("rewind group %s: %v", group, err)
	}
}

// rawRows reads everything on raw-rows so far, in order per partition.
func (h *harness) rawRows(t *testing.T) []schemas.RawBatch {
	t.Helper()
	topic := h.kcfg.Topic(schemas.TopicRawRows)
	ends, err := kadm.NewClient(h.admin).ListEndOffsets(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kcfg.Brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var out []schemas.RawBatch
	for len(left) > 0 {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("raw-rows: still waiting for partitions %v", left)
		}
		f.EachRecord(func(r *kgo.Record) {
			var b schemas.RawBatch
			if err := h.codecs.Decode(h.codecs.RawBatch, r.Value, &b); err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
		})
	}
	return out
}

// dayQueries counts the day queries the warehouse ran (not the pings and
// fingerprints around them).
func (h *harness) dayQueries() int {
	n := 0
	if h.bq != nil {
		for _, q := range h.bq.Queries() {
			if q == bqQuery {
				n++
			}
		}
		return n
	}
	for _, q := range h.srv.Queries() {
		if q.SQL == sfQuery {
			n++
		}
	}
	return n
}

// eventually polls the running services until ok, failing after 30 s.
func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling the running services
	}
}

func (h *harness) runStatus(runID string) vocab.Status {
	r, err := h.store.Run(context.Background(), sfProject, runID)
	if err != nil {
		return ""
	}
	return r.Status
}

func (h *harness) checkpoint(runID string) store.Checkpoint {
	cp, _ := h.store.Checkpoint(context.Background(), sfProject, runID)
	return cp
}

func counterValue(t *testing.T, svc *Service, outcome string) float64 {
	t.Helper()
	var m dto.Metric
	if err := svc.metrics.runs.WithLabelValues(outcome).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// extraction is what raw-rows holds of one run's extract id.
type extraction struct {
	batches map[int64]schemas.RawBatch // by seq; a re-sent seq must be identical
	ends    []schemas.RawBatch
	resent  int
}

// extractions groups raw-rows by run, then extract id, failing on a
// re-sent batch that differs from the first.
func extractions(t *testing.T, raw []schemas.RawBatch) map[string]map[string]*extraction {
	t.Helper()
	out := map[string]map[string]*extraction{}
	for _, b := range raw {
		if out[b.RunID] == nil {
			out[b.RunID] = map[string]*extraction{}
		}
		x := out[b.RunID][b.ExtractID]
		if x == nil {
			x = &extraction{batches: map[int64]schemas.RawBatch{}}
			out[b.RunID][b.ExtractID] = x
		}
		switch b.Kind {
		case schemas.KindEnd:
			x.ends = append(x.ends, b)
		case schemas.KindRows:
			if prev, ok := x.batches[b.Seq]; ok {
				x.resent++
				if prev.FirstRow != b.FirstRow || prev.RowCount != b.RowCount || !slices.Equal(prev.Columns[0].Longs, b.Columns[0].Longs) {
					t.Fatalf("run %s extraction %s re-sent batch %d with other rows", b.RunID, b.ExtractID, b.Seq)
				}
				continue
			}
			x.batches[b.Seq] = b
		default:
			t.Fatalf("run %s: unexpected %s record", b.RunID, b.Kind)
		}
	}
	return out
}

// complete checks x holds the whole day once: seqs 0..n-1, rows 0..rows-1
// each once in order, and one END counting them.
func (x *extraction) complete(t *testing.T, rows int) {
	t.Helper()
	if len(x.ends) != 1 || x.ends[0].RowCount != int64(rows) || x.ends[0].Seq != int64(len(x.batches)) {
		t.Fatalf("END records %+v for %d batches, want one counting %d rows", x.ends, len(x.batches), rows)
	}
	next := int64(0)
	for seq := range int64(len(x.batches)) {
		b, ok := x.batches[seq]
		if !ok {
			t.Fatalf("batch %d missing of %d", seq, len(x.batches))
		}
		if b.FirstRow != next {
			t.Fatalf("batch %d starts at row %d, want %d", seq, b.FirstRow, next)
		}
		for _, id := range b.Columns[0].Longs {
			if id != next {
				t.Fatalf("batch %d holds ID %d at row %d", seq, id, next)
			}
			next++
		}
	}
	if next != int64(rows) {
		t.Fatalf("%d rows in the batches, want %d", next, rows)
	}
}
