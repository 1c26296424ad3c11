// Package schemas holds the Avro schema of every Sluice topic, the Go types
// that carry them, and the codecs that turn one into the other.
//
// The .avsc files are the public contract: other systems may publish onto
// ingest-requests or read the dead-letter topics with any Avro library.
package schemas

import (
	_ "embed"
	"fmt"
	"strconv"

	"github.com/hamba/avro/v2"
)

// Topic names, as the design card fixes them.
const (
	TopicIngestRequests   = "ingest-requests"
	TopicRawRows          = "raw-rows"
	TopicMappedEvents     = "mapped-events"
	TopicReloadCandidates = "reload-candidates"
	TopicDeadLetter       = "dead-letters"
)

// Batch kinds on raw-rows and mapped-events.
const (
	KindRows   = "ROWS"
	KindEnd    = "END"
	KindFailed = "FAILED"
)

// Column types on raw-rows.
const (
	TypeBoolean   = "BOOLEAN"
	TypeLong      = "LONG"
	TypeDouble    = "DOUBLE"
	TypeDecimal   = "DECIMAL"
	TypeString    = "STRING"
	TypeBytes     = "BYTES"
	TypeDate      = "DATE"
	TypeTimestamp = "TIMESTAMP"
	TypeJSON      = "JSON"
)

//go:embed ingest_request.avsc
var ingestRequestSchema string

//go:embed raw_rows.avsc
var rawRowsSchema string

//go:embed mapped_events.avsc
var mappedEventsSchema string

//go:embed reload_candidate.avsc
var reloadCandidateSchema string

//go:embed dead_letter.avsc
var deadLetterSchema string

// IngestRequest asks for one day of one ingestion to be loaded.
type IngestRequest struct {
	RequestID   string `avro:"request_id"`
	RunID       string `avro:"run_id"`
	Project     string `avro:"project"`
	Ingestion   string `avro:"ingestion"`
	Date        string `avro:"date"`
	Trigger     string `avro:"trigger"`
	Fence       int64  `avro:"fence"`
	RequestedAt int64  `avro:"requested_at"` // epoch milliseconds
	Reason      string `avro:"reason"`
}

// RawBatch is a columnar batch of typed warehouse rows, or an END/FAILED marker.
type RawBatch struct {
	RunID         string   `avro:"run_id"`
	ExtractID     string   `avro:"extract_id"`
	Project       string   `avro:"project"`
	Ingestion     string   `avro:"ingestion"`
	Date          string   `avro:"date"`
	Trigger       string   `avro:"trigger"`
	Fence         int64    `avro:"fence"`
	Kind          string   `avro:"kind"`
	Seq           int64    `avro:"seq"`
	FirstRow      int64    `avro:"first_row"`
	RowCount      int64    `avro:"row_count"`
	Columns       []Column `avro:"columns"`
	ErrorCategory string   `avro:"error_category"`
	ErrorMessage  string   `avro:"error_message"`
	// Fingerprint (END) is the day's warehouse fingerprint for this
	// extraction: the watcher's baseline for content changes.
	Fingerprint string `avro:"fingerprint"`
}

// Column is one typed column of a RawBatch. Only the slice that matches Type
// is filled; Nulls has one byte per row (1 = null), and the value slice has an
// entry (zero) for null rows too, so row i is always at index i.
type Column struct {
	Name    string    `avro:"name"`
	Type    string    `avro:"type"`
	DBType  string    `avro:"db_type"`
	Nulls   []byte    `avro:"nulls"`
	Bools   []bool    `avro:"bools"`
	Longs   []int64   `avro:"longs"`
	Doubles []float64 `avro:"doubles"`
	Strings []string  `avro:"strings"`
}

// IsNull reports whether row i of the column is null.
func (c *Column) IsNull(i int) bool { return c.Nulls[i] != 0 }

// MappedBatch carries the canonical records mapped from one RawBatch.
type MappedBatch struct {
	RunID         string        `avro:"run_id"`
	ExtractID     string        `avro:"extract_id"`
	Project       string        `avro:"project"`
	Ingestion     string        `avro:"ingestion"`
	Date          string        `avro:"date"`
	Trigger       string        `avro:"trigger"`
	Fence         int64         `avro:"fence"`
	Kind          string        `avro:"kind"`
	Type          string        `avro:"type"`
	Seq           int64         `avro:"seq"`
	RowCount      int64         `avro:"row_count"`
	Events        []Event       `avro:"events"`
	Metrics       []Metric      `avro:"metrics"`
	Rejected      []ReasonCount `avro:"rejected"`
	ErrorCategory string        `avro:"error_category"`
	ErrorMessage  string        `avro:"error_message"`
	Fingerprint   string        `avro:"fingerprint"` // END: passed on from raw-rows
	// RejectedRows (ROWS) are the batch's rejected rows: the loader stages
	// them with the batch and publishes them as dead letters once the run
	// is decided, so a redone extraction or a redelivered batch does not
	// publish them again.
	RejectedRows []RejectedRow `avro:"rejected_rows"`
}

// RejectedRow is one row the mapper rejected, with its original values.
type RejectedRow struct {
	Position int64             `avro:"position"`
	Reason   string            `avro:"reason"`
	Detail   string            `avro:"detail"`
	Values   map[string]string `avro:"values"`
}

// Event is one event in the shape the platform's SDK sends.
type Event struct {
	Position     int64    `avro:"position"`
	EventName    string   `avro:"event_name"`
	EventValue   string   `avro:"event_value"`
	TimeMs       int64    `avro:"time_ms"`
	UnitIDs      []UnitID `avro:"unit_ids"`
	MetadataJSON string   `avro:"metadata_json"`
}

// UnitID is one id of an event's unit (userID, stableID, a custom id type).
type UnitID struct {
	IDType string `avro:"id_type"`
	Value  string `avro:"value"`
}

// Metric is one pre-computed metric value for one unit and day.
type Metric struct {
	Position    int64   `avro:"position"`
	UnitID      string  `avro:"unit_id"`
	IDType      string  `avro:"id_type"`
	Date        string  `avro:"date"`
	MetricName  string  `avro:"metric_name"`
	MetricValue float64 `avro:"metric_value"`
	IsRatio     bool    `avro:"is_ratio"`
	Numerator   float64 `avro:"numerator"`
	Denominator float64 `avro:"denominator"`
}

// ReasonCount counts the rows of a batch rejected for one reason.
type ReasonCount struct {
	Reason string `avro:"reason"`
	Count  int64  `avro:"count"`
}

// ReloadCandidate says a loaded day changed in the warehouse.
type ReloadCandidate struct {
	Project              string `avro:"project"`
	Ingestion            string `avro:"ingestion"`
	Date                 string `avro:"date"`
	Reason               string `avro:"reason"`
	LoadedCount          int64  `avro:"loaded_count"`
	WarehouseCount       int64  `avro:"warehouse_count"`
	LoadedFingerprint    string `avro:"loaded_fingerprint"`
	WarehouseFingerprint string `avro:"warehouse_fingerprint"`
	DetectedAt           int64  `avro:"detected_at"` // epoch milliseconds
}

// DeadLetter is a rejected row or an undecodable message.
//
// A rejected row is published once its run is decided (its rows became
// visible, or it failed with too many rejected rows), under the Kafka key
// DeadLetterKey(project, run_id, position). Publication is at least once:
// a relay that stopped between producing and recording it produces the
// same keys again, so a consumer that keeps the last record per key (or
// reads a compacted topic) sees each rejected row of a run once. An
// undecodable message (Position -1) has no run and keeps its source
// record's key.
type DeadLetter struct {
	SourceTopic string            `avro:"source_topic"`
	Reason      string            `avro:"reason"`
	Detail      string            `avro:"detail"`
	RunID       string            `avro:"run_id"`
	ExtractID   string            `avro:"extract_id"`
	Project     string            `avro:"project"`
	Ingestion   string            `avro:"ingestion"`
	Date        string            `avro:"date"`
	Position    int64             `avro:"position"`
	Values      map[string]string `avro:"values"`
	Raw         []byte            `avro:"raw"`
	At          int64             `avro:"at"` // epoch milliseconds
}

// DeadLetterKey is the Kafka key of a rejected row's dead letter,
// "<project>/<run_id>/<position>": one key per rejected row of a run,
// whichever extraction of the run was decided and however often it was
// published.
func DeadLetterKey(project, runID string, position int64) string {
	return project + "/" + runID + "/" + strconv.FormatInt(position, 10)
}

// Codecs holds the parsed schema of every topic. Parse once at start-up and
// share: encoding and decoding are safe for concurrent use.
type Codecs struct {
	IngestRequest   avro.Schema
	RawBatch        avro.Schema
	MappedBatch     avro.Schema
	ReloadCandidate avro.Schema
	DeadLetter      avro.Schema
	api             avro.API
}

// NewCodecs parses every schema.
func NewCodecs() (*Codecs, error) {
	cache := &avro.SchemaCache{}
	parse := func(name, text string) (avro.Schema, error) {
		s, err := avro.ParseWithCache(text, "", cache)
		if err != nil {
			return nil, fmt.Errorf("parse schema %s: %w", name, err)
		}
		return s, nil
	}
	var c Codecs
	var err error
	if c.IngestRequest, err = parse("ingest_request", ingestRequestSchema); err != nil {
		return nil, err
	}
	if c.RawBatch, err = parse("raw_rows", rawRowsSchema); err != nil {
		return nil, err
	}
	if c.MappedBatch, err = parse("mapped_events", mappedEventsSchema); err != nil {
		return nil, err
	}
	if c.ReloadCandidate, err = parse("reload_candidate", reloadCandidateSchema); err != nil {
		return nil, err
	}
	if c.DeadLetter, err = parse("dead_letter", deadLetterSchema); err != nil {
		return nil, err
	}
	// Batches reach tens of MB; lift the default 1 MiB slice guard.
	c.api = avro.Config{MaxByteSliceSize: 256 << 20, MaxSliceAllocSize: 64 << 20}.Freeze()
	return &c, nil
}

// Encode marshals v with schema s.
func (c *Codecs) Encode(s avro.Schema, v any) ([]byte, error) {
	return c.api.Marshal(s, v)
}

// Decode unmarshals data with schema s into v. Slices in v are reused where
// their capacity allows, so callers can decode into one value per loop.
func (c *Codecs) Decode(s avro.Schema, data []byte, v any) error {
	if r, ok := v.(resetter); ok {
		r.reset()
	}
	return c.api.Unmarshal(s, data, v)
}

// resetter is implemented by the values whose slices Decode reuses.
type resetter interface{ reset() }

// reset empties the batch's slices, keeping their capacity. The decoder
// leaves a slice untouched when the encoded array is empty, so without this
// a reused value would keep the previous message's rows.
func (b *RawBatch) reset() {
	cols := b.Columns[:cap(b.Columns)]
	for i := range cols {
		c := &cols[i]
		c.Nulls, c.Bools, c.Longs, c.Doubles, c.Strings = c.Nulls[:0], c.Bools[:0], c.Longs[:0], c.Doubles[:0], c.Strings[:0]
	}
	b.Columns = b.Columns[:0]
}

func (b *MappedBatch) reset() {
	evs := b.Events[:cap(b.Events)]
	for i := range evs {
		evs[i].UnitIDs = evs[i].UnitIDs[:0]
	}
	rows := b.RejectedRows[:cap(b.RejectedRows)]
	for i := range rows {
		rows[i].Values = nil // the decoder adds to a map it is given
	}
	b.Events, b.Metrics, b.Rejected, b.RejectedRows = b.Events[:0], b.Metrics[:0], b.Rejected[:0], b.RejectedRows[:0]
}

func (d *DeadLetter) reset() {
	d.Values = nil
	d.Raw = d.Raw[:0]
}
