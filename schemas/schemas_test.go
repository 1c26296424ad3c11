package schemas

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hamba/avro/v2"

	"github.com/sluicehq/sluice/pkg/vocab"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenCases hold one representative value per topic. The golden bytes pin
// the wire format: a change that breaks readers of the public topics fails
// here first.
func goldenCases(c *Codecs) []struct {
	name   string
	schema avro.Schema
	value  any
	fresh  func() any
} {
	return []struct {
		name   string
		schema avro.Schema
		value  any
		fresh  func() any
	}{
		{"ingest_request", c.IngestRequest, &IngestRequest{
			RequestID: "req-1", RunID: "run-1", Project: "demo", Ingestion: "web_events", Date: "2023-02-20",
			Trigger: string(vocab.TriggerAPI), Fence: 1676851200000000, RequestedAt: 1676851200123, Reason: "mark_data_ready",
		}, func() any { return new(IngestRequest) }},
		{"raw_rows", c.RawBatch, &RawBatch{
			RunID: "run-1", ExtractID: "x-1", Project: "demo", Ingestion: "web_events", Date: "2023-02-20",
			Trigger: string(vocab.TriggerScheduled), Fence: 7, Kind: KindRows, Seq: 3, FirstRow: 6000, RowCount: 2,
			Columns: []Column{
				{Name: "user_id", Type: TypeString, DBType: "VARCHAR", Nulls: []byte{0, 1}, Bools: []bool{}, Longs: []int64{}, Doubles: []float64{}, Strings: []string{"u1", ""}},
				{Name: "ts", Type: TypeTimestamp, DBType: "TIMESTAMP", Nulls: []byte{0, 0}, Bools: []bool{}, Longs: []int64{1676851200000000, -1}, Doubles: []float64{}, Strings: []string{}},
				{Name: "price", Type: TypeDecimal, DBType: "DECIMAL(38,10)", Nulls: []byte{0, 0}, Bools: []bool{}, Longs: []int64{}, Doubles: []float64{}, Strings: []string{"12345678901234567890.1234567890", "-0.5"}},
				{Name: "score", Type: TypeDouble, DBType: "DOUBLE", Nulls: []byte{0, 0}, Bools: []bool{}, Longs: []int64{}, Doubles: []float64{1.5, -2}, Strings: []string{}},
				{Name: "ok", Type: TypeBoolean, DBType: "BOOLEAN", Nulls: []byte{0, 1}, Bools: []bool{true, false}, Longs: []int64{}, Doubles: []float64{}, Strings: []string{}},
			},
		}, func() any { return new(RawBatch) }},
		{"raw_rows_failed", c.RawBatch, &RawBatch{
			RunID: "run-2", ExtractID: "x-2", Project: "demo", Ingestion: "web_events", Date: "2023-02-21",
			Trigger: string(vocab.TriggerReload), Fence: 8, Kind: KindFailed, Seq: 0, Columns: []Column{},
			ErrorCategory: "QUERY_ERROR", ErrorMessage: `column "x" does not exist`,
		}, func() any { return new(RawBatch) }},
		{"mapped_events", c.MappedBatch, &MappedBatch{
			RunID: "run-1", ExtractID: "x-1", Project: "demo", Ingestion: "web_events", Date: "2023-02-20",
			Trigger: string(vocab.TriggerScheduled), Fence: 7, Kind: KindRows, Type: "events", Seq: 3, RowCount: 3,
			Events: []Event{{Position: 6000, EventName: "purchase", EventValue: "19.99", TimeMs: 1676851200000,
				UnitIDs: []UnitID{{IDType: "userID", Value: "u1"}, {IDType: "stableID", Value: "d1"}}, MetadataJSON: `{"country":"DE"}`}},
			Metrics:  []Metric{},
			Rejected: []ReasonCount{{Reason: "event_name_missing", Count: 2}},
			RejectedRows: []RejectedRow{
				{Position: 6001, Reason: "event_name_missing", Detail: "event_name is null", Values: map[string]string{"user_id": "u2"}},
				// One value per map: Avro writes a map in Go's iteration
				// order, which is random, so two would make the golden
				// bytes differ from run to run.
				{Position: 6002, Reason: "event_name_missing", Detail: "event_name is empty", Values: map[string]string{"event_name": ""}},
			},
		}, func() any { return new(MappedBatch) }},
		{"mapped_metrics", c.MappedBatch, &MappedBatch{
			RunID: "run-3", ExtractID: "x-3", Project: "demo", Ingestion: "daily_metrics", Date: "2023-02-20",
			Trigger: string(vocab.TriggerBackfill), Fence: 9, Kind: KindRows, Type: "metrics", Seq: 0, RowCount: 1,
			Events: []Event{},
			Metrics: []Metric{{Position: 0, UnitID: "42", IDType: "companyID", Date: "2023-02-20", MetricName: "conversion",
				MetricValue: 0.25, IsRatio: true, Numerator: 1, Denominator: 4}},
			Rejected:     []ReasonCount{},
			RejectedRows: []RejectedRow{},
		}, func() any { return new(MappedBatch) }},
		{"reload_candidate", c.ReloadCandidate, &ReloadCandidate{
			Project: "demo", Ingestion: "web_events", Date: "2023-02-20", Reason: "count", LoadedCount: 1000,
			WarehouseCount: 1100, LoadedFingerprint: "a", WarehouseFingerprint: "b", DetectedAt: 1676937600000,
		}, func() any { return new(ReloadCandidate) }},
		{"dead_letter", c.DeadLetter, &DeadLetter{
			SourceTopic: TopicRawRows, Reason: "event_name_too_long", Detail: "event_name has 175 characters; the limit is 127",
			RunID: "run-1", ExtractID: "x-1", Project: "demo", Ingestion: "web_events", Date: "2023-02-20", Position: 17,
			Values: map[string]string{"event_name": "x"}, Raw: []byte{}, At: 1676851200000,
		}, func() any { return new(DeadLetter) }},
	}
}

func TestGoldenRoundTrip(t *testing.T) {
	c, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range goldenCases(c) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Encode(tc.schema, tc.value)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name+".avro")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./schemas -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding changed: %d bytes, golden %d bytes; a wire-format change breaks readers of the topic", len(got), len(want))
			}
			back := tc.fresh()
			if err := c.Decode(tc.schema, want, back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tc.value) {
				t.Fatalf("round trip changed the value:\n got %+v\nwant %+v", back, tc.value)
			}
		})
	}
}

// An IngestRequest from an outside system may omit run_id, fence and
// reason: readers fill the defaults, so the schema is safe to publish to.
func TestIngestRequestDefaults(t *testing.T) {
	c, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	writer := avro.MustParse(`{"type":"record","name":"IngestRequest","namespace":"sluice.v1","fields":[
		{"name":"request_id","type":"string"},{"name":"project","type":"string"},{"name":"ingestion","type":"string"},
		{"name":"date","type":"string"},{"name":"trigger","type":"string"},
		{"name":"requested_at","type":{"type":"long","logicalType":"timestamp-millis"}}]}`)
	type minimal struct {
		RequestID   string `avro:"request_id"`
		Project     string `avro:"project"`
		Ingestion   string `avro:"ingestion"`
		Date        string `avro:"date"`
		Trigger     string `avro:"trigger"`
		RequestedAt int64  `avro:"requested_at"`
	}
	data, err := avro.Marshal(writer, minimal{"r", "demo", "web_events", "2023-02-20", string(vocab.TriggerRequest), 1})
	if err != nil {
		t.Fatal(err)
	}
	resolved, err := avro.NewSchemaCompatibility().Resolve(c.IngestRequest, writer)
	if err != nil {
		t.Fatalf("the published schema cannot read the minimal request: %v", err)
	}
	var req IngestRequest
	if err := avro.Unmarshal(resolved, data, &req); err != nil {
		t.Fatal(err)
	}
	if req.RunID != "" || req.Fence != 0 || req.Project != "demo" || req.Date != "2023-02-20" {
		t.Fatalf("defaults not applied: %+v", req)
	}
}

// Decoding into a reused value must not leak the previous batch's rows.
func TestDecodeReusesWithoutLeaking(t *testing.T) {
	c, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	big := &MappedBatch{Kind: KindRows, Events: make([]Event, 5), Metrics: []Metric{}, Rejected: []ReasonCount{{"a", 1}, {"b", 2}}}
	for i := range big.Events {
		big.Events[i].UnitIDs = []UnitID{{"userID", "u"}}
	}
	small := &MappedBatch{Kind: KindEnd, Events: []Event{}, Metrics: []Metric{}, Rejected: []ReasonCount{}}
	var reused MappedBatch
	for _, v := range []*MappedBatch{big, small} {
		data, err := c.Encode(c.MappedBatch, v)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Decode(c.MappedBatch, data, &reused); err != nil {
			t.Fatal(err)
		}
	}
	if len(reused.Events) != 0 || len(reused.Rejected) != 0 || reused.Kind != KindEnd {
		t.Fatalf("reused decode kept old data: %d events, %d reasons, kind %s", len(reused.Events), len(reused.Rejected), reused.Kind)
	}
}

func TestDecodeRawBatchReuseClearsColumns(t *testing.T) {
	c, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	first := &RawBatch{Kind: KindRows, Columns: []Column{{Name: "a", Type: TypeString, Nulls: []byte{0}, Strings: []string{"old"}}}}
	second := &RawBatch{Kind: KindRows, Columns: []Column{{Name: "a", Type: TypeLong, Nulls: []byte{0}, Longs: []int64{7}}}}
	var reused RawBatch
	for _, v := range []*RawBatch{first, second} {
		data, err := c.Encode(c.RawBatch, v)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Decode(c.RawBatch, data, &reused); err != nil {
			t.Fatal(err)
		}
	}
	col := reused.Columns[0]
	if len(col.Strings) != 0 || len(col.Longs) != 1 || col.Longs[0] != 7 {
		t.Fatalf("reused column kept the previous batch's values: %+v", col)
	}
}

// A mapped batch written before rejected_rows existed (a mapper of the
// previous release, still running during an upgrade) reads with no
// rejected rows.
func TestMappedBatchWithoutRejectedRows(t *testing.T) {
	c, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(mappedEventsSchema), &doc); err != nil {
		t.Fatal(err)
	}
	fields := doc["fields"].([]any)
	last := fields[len(fields)-1].(map[string]any)
	if last["name"] != "rejected_rows" {
		t.Fatalf("last field of MappedBatch is %v, want rejected_rows", last["name"])
	}
	doc["fields"] = fields[:len(fields)-1]
	text, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	writer, err := avro.Parse(string(text))
	if err != nil {
		t.Fatal(err)
	}
	old := &MappedBatch{RunID: "r", Kind: KindRows, Type: "events", Events: []Event{}, Metrics: []Metric{},
		Rejected: []ReasonCount{{Reason: "event_name_missing", Count: 1}}}
	data, err := avro.Marshal(writer, old)
	if err != nil {
		t.Fatal(err)
	}
	resolved, err := avro.NewSchemaCompatibility().Resolve(c.MappedBatch, writer)
	if err != nil {
		t.Fatalf("the schema cannot read a batch of the previous release: %v", err)
	}
	var got MappedBatch
	if err := avro.Unmarshal(resolved, data, &got); err != nil {
		t.Fatal(err)
	}
	if got.RunID != "r" || len(got.RejectedRows) != 0 || len(got.Rejected) != 1 {
		t.Fatalf("old batch read as %+v", got)
	}
}

// Reused decodes must not carry a rejected row's values into the next
// batch's row at the same index.
func TestDecodeReusesRejectedRowsWithoutLeaking(t *testing.T) {
	c, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	first := &MappedBatch{Kind: KindRows, RejectedRows: []RejectedRow{{Position: 1, Reason: "a", Values: map[string]string{"old": "x"}}}}
	second := &MappedBatch{Kind: KindRows, RejectedRows: []RejectedRow{{Position: 2, Reason: "b", Values: map[string]string{"new": "y"}}}}
	var reused MappedBatch
	for _, v := range []*MappedBatch{first, second} {
		data, err := c.Encode(c.MappedBatch, v)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Decode(c.MappedBatch, data, &reused); err != nil {
			t.Fatal(err)
		}
	}
	if len(reused.RejectedRows) != 1 || !reflect.DeepEqual(reused.RejectedRows[0].Values, map[string]string{"new": "y"}) {
		t.Fatalf("reused decode kept old values: %+v", reused.RejectedRows)
	}
}

func TestDeadLetterKey(t *testing.T) {
	if got := DeadLetterKey("demo", "run-1", 17); got != "demo/run-1/17" {
		t.Fatalf("DeadLetterKey = %q, want demo/run-1/17", got)
	}
}
