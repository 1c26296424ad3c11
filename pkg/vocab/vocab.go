// Package vocab is Sluice's one vocabulary: the run and day statuses, error
// categories, trigger kinds and rejection reasons that services write, the
// store keeps, the API answers and dashboards key on. Each is a typed
// string so a category cannot be passed where a status is wanted, and a
// comparison against a misspelt literal does not compile. Names follow the
// seed product's where it has one, so its users recognise them.
//
// The values are stable: they are stored, sent in webhooks and counted in
// metrics. Add values; never rename one.
package vocab

// Status is where a run stands; a day shows its visible run's status, or
// its latest run's while it has none.
type Status string

// Statuses, in the order a run passes through them.
const (
	StatusScheduled         Status = "IMPORT_SCHEDULED"   // requested, waiting for an extractor
	StatusRescheduled       Status = "IMPORT_RESCHEDULED" // requested again while waiting
	StatusBackfillRequested Status = "BACKFILL_REQUESTED" // part of a user's backfill, waiting
	StatusStarted           Status = "IMPORT_STARTED"     // the extractor runs the query
	StatusFileCreated       Status = "FILE_CREATED"       // the warehouse wrote the result
	StatusDownloaded        Status = "DOWNLOAD_COMPLETED" // every row extracted
	StatusRowsInserted      Status = "ROWS_INSERTED"      // every row staged, not yet visible
	StatusSuccessful        Status = "IMPORT_SUCCESSFUL"  // the day is visible with this run's rows
	StatusLoadedEmpty       Status = "LOADED_EMPTY_DATA"  // the day is visible and has no rows
	StatusNoDataYet         Status = "NO_DATA_YET"        // the schedule window closed without rows
	StatusFailed            Status = "FAILED"             // see the run's Category
	StatusSuperseded        Status = "SUPERSEDED"         // a newer run of the day won
)

// terminalRank is shared by every status that ends a run.
const terminalRank = 10

// Rank orders statuses so a run never moves backwards; 0 means the status
// is unknown. Every terminal status has the same, highest rank.
func (s Status) Rank() int {
	switch s {
	case StatusScheduled, StatusRescheduled, StatusBackfillRequested:
		return 1
	case StatusStarted:
		return 2
	case StatusFileCreated, StatusDownloaded:
		return 3
	case StatusRowsInserted:
		return 4
	case StatusSuccessful, StatusLoadedEmpty, StatusFailed, StatusSuperseded, StatusNoDataYet:
		return terminalRank
	}
	return 0
}

// Terminal reports whether s ends a run: a terminal status is final.
func (s Status) Terminal() bool { return s.Rank() == terminalRank }

// Loaded reports whether s says the day's rows are visible.
func (s Status) Loaded() bool { return s == StatusSuccessful || s == StatusLoadedEmpty }

// Statuses lists every status in rank order.
func Statuses() []Status {
	return []Status{StatusScheduled, StatusRescheduled, StatusBackfillRequested, StatusStarted, StatusFileCreated,
		StatusDownloaded, StatusRowsInserted, StatusSuccessful, StatusLoadedEmpty, StatusNoDataYet, StatusFailed, StatusSuperseded}
}

// Category says why a run failed, in terms a user can act on.
type Category string

// Error categories. The warehouse ones come from the warehouse's own
// errors; the others from Sluice's stages.
const (
	CategoryAuthentication  Category = "AUTHENTICATION_ERROR"
	CategoryConnection      Category = "CONNECTION_ERROR"
	CategoryConfig          Category = "CONNECTION_CONFIG_ERROR"
	CategoryQuery           Category = "QUERY_ERROR"
	CategoryPermission      Category = "PERMISSION_ERROR"
	CategoryTimeout         Category = "QUERY_TIMEOUT"
	CategoryInternal        Category = "INTERNAL_ERROR"
	CategoryRequest         Category = "REQUEST_ERROR"          // the ingest request itself was wrong (a bad date)
	CategorySetup           Category = "SETUP_ERROR"            // the ingestion's mapping cannot be compiled
	CategoryInternalWrite   Category = "INTERNAL_WRITE_ERROR"   // the store did not receive every batch
	CategoryTooManyRejected Category = "TOO_MANY_REJECTED_ROWS" // more rows rejected than the pipeline allows
)

// Categories lists every category.
func Categories() []Category {
	return []Category{CategoryAuthentication, CategoryConnection, CategoryConfig, CategoryQuery, CategoryPermission,
		CategoryTimeout, CategoryInternal, CategoryRequest, CategorySetup, CategoryInternalWrite, CategoryTooManyRejected}
}

// Trigger is what started a run.
type Trigger string

// Trigger kinds.
const (
	TriggerScheduled Trigger = "scheduled" // the daily schedule found the day's data present
	TriggerAPI       Trigger = "api"       // POST /v1/mark_data_ready_dwh
	TriggerBackfill  Trigger = "backfill"  // a user's backfill (API, console or CLI)
	TriggerReload    Trigger = "reload"    // the watcher saw the day's data change
	TriggerRequest   Trigger = "request"   // published onto ingest-requests by an outside system
	TriggerReplay    Trigger = "replay"    // a user re-ran a run's day under the current mapping
)

// Triggers lists every trigger kind.
func Triggers() []Trigger {
	return []Trigger{TriggerScheduled, TriggerAPI, TriggerBackfill, TriggerReload, TriggerRequest, TriggerReplay}
}

// Reason says why a row or a message was rejected; REASONS.md in
// pkg/mapping documents each row reason.
type Reason string

// Row reasons: the mapper rejects a row for one of these.
const (
	ReasonMissingColumn         Reason = "missing_column"
	ReasonTypeMismatch          Reason = "type_mismatch"
	ReasonMalformedBatch        Reason = "malformed_batch"
	ReasonInvalidText           Reason = "invalid_text"
	ReasonEventNameMissing      Reason = "event_name_missing"
	ReasonEventNameTooLong      Reason = "event_name_too_long"
	ReasonTimestampMissing      Reason = "timestamp_missing"
	ReasonTimestampUnparseable  Reason = "timestamp_unparseable"
	ReasonTimestampUnitMismatch Reason = "timestamp_unit_mismatch"
	ReasonTimestampOutOfRange   Reason = "timestamp_out_of_range"
	ReasonUnitIDMissing         Reason = "unit_id_missing"
	ReasonEventValueTooLong     Reason = "event_value_too_long"
	ReasonMetadataJSONInvalid   Reason = "metadata_json_invalid"
	ReasonIDTypeMissing         Reason = "id_type_missing"
	ReasonIDTypeUnknown         Reason = "id_type_unknown"
	ReasonDateMissing           Reason = "date_missing"
	ReasonDateUnparseable       Reason = "date_unparseable"
	ReasonDateOutsideDay        Reason = "date_outside_day"
	ReasonMetricNameMissing     Reason = "metric_name_missing"
	ReasonMetricNameTooLong     Reason = "metric_name_too_long"
	ReasonNumeratorNull         Reason = "numerator_null"
	ReasonDenominatorNull       Reason = "denominator_null"
	ReasonValueNotNumeric       Reason = "value_not_numeric"
)

// Message reasons: a whole Kafka record was sent to the dead-letter topic.
const (
	ReasonUndecodableMessage Reason = "undecodable_message" // not the topic's Avro
	ReasonUndecodableRequest Reason = "undecodable_request" // an ingest request that is not IngestRequest Avro
	ReasonUnknownIngestion   Reason = "unknown_ingestion"   // an ingest request for an ingestion no config has
	ReasonBadDate            Reason = "bad_date"            // an ingest request whose date is not YYYY-MM-DD
	ReasonUnknownConnection  Reason = "unknown_connection"  // an ingestion naming a connection no config has
)

// RowReasons lists every row reason, in a stable order.
func RowReasons() []Reason {
	return []Reason{ReasonMissingColumn, ReasonTypeMismatch, ReasonMalformedBatch, ReasonInvalidText,
		ReasonEventNameMissing, ReasonEventNameTooLong, ReasonTimestampMissing, ReasonTimestampUnparseable,
		ReasonTimestampUnitMismatch, ReasonTimestampOutOfRange, ReasonUnitIDMissing, ReasonEventValueTooLong,
		ReasonMetadataJSONInvalid, ReasonIDTypeMissing, ReasonIDTypeUnknown, ReasonDateMissing, ReasonDateUnparseable,
		ReasonDateOutsideDay, ReasonMetricNameMissing, ReasonMetricNameTooLong, ReasonNumeratorNull,
		ReasonDenominatorNull, ReasonValueNotNumeric}
}

// MessageReasons lists every whole-message reason.
func MessageReasons() []Reason {
	return []Reason{ReasonUndecodableMessage, ReasonUndecodableRequest, ReasonUnknownIngestion, ReasonBadDate, ReasonUnknownConnection}
}
