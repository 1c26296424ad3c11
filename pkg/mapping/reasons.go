package mapping

// Reason codes of rejected rows. They are stable: dashboards, dead-letter
// consumers and the per-run counts key on them. REASONS.md documents each.
const (
	ReasonMissingColumn         = "missing_column"
	ReasonTypeMismatch          = "type_mismatch"
	ReasonMalformedBatch        = "malformed_batch"
	ReasonInvalidText           = "invalid_text"
	ReasonEventNameMissing      = "event_name_missing"
	ReasonEventNameTooLong      = "event_name_too_long"
	ReasonTimestampMissing      = "timestamp_missing"
	ReasonTimestampUnparseable  = "timestamp_unparseable"
	ReasonTimestampUnitMismatch = "timestamp_unit_mismatch"
	ReasonTimestampOutOfRange   = "timestamp_out_of_range"
	ReasonUnitIDMissing         = "unit_id_missing"
	ReasonEventValueTooLong     = "event_value_too_long"
	ReasonMetadataJSONInvalid   = "metadata_json_invalid"
	ReasonIDTypeMissing         = "id_type_missing"
	ReasonIDTypeUnknown         = "id_type_unknown"
	ReasonDateMissing           = "date_missing"
	ReasonDateUnparseable       = "date_unparseable"
	ReasonDateOutsideDay        = "date_outside_day"
	ReasonMetricNameMissing     = "metric_name_missing"
	ReasonMetricNameTooLong     = "metric_name_too_long"
	ReasonNumeratorNull         = "numerator_null"
	ReasonDenominatorNull       = "denominator_null"
	ReasonValueNotNumeric       = "value_not_numeric"
)

// reason is a reason code's index in reasonCodes; counting by index keeps
// the per-row path free of map lookups.
type reason uint8

const (
	rNone reason = iota
	rMissingColumn
	rTypeMismatch
	rMalformedBatch
	rInvalidText
	rEventNameMissing
	rEventNameTooLong
	rTimestampMissing
	rTimestampUnparseable
	rTimestampUnitMismatch
	rTimestampOutOfRange
	rUnitIDMissing
	rEventValueTooLong
	rMetadataJSONInvalid
	rIDTypeMissing
	rIDTypeUnknown
	rDateMissing
	rDateUnparseable
	rDateOutsideDay
	rMetricNameMissing
	rMetricNameTooLong
	rNumeratorNull
	rDenominatorNull
	rValueNotNumeric
	numReasons
)

var reasonCodes = [numReasons]string{
	rNone:                  "",
	rMissingColumn:         ReasonMissingColumn,
	rTypeMismatch:          ReasonTypeMismatch,
	rMalformedBatch:        ReasonMalformedBatch,
	rInvalidText:           ReasonInvalidText,
	rEventNameMissing:      ReasonEventNameMissing,
	rEventNameTooLong:      ReasonEventNameTooLong,
	rTimestampMissing:      ReasonTimestampMissing,
	rTimestampUnparseable:  ReasonTimestampUnparseable,
	rTimestampUnitMismatch: ReasonTimestampUnitMismatch,
	rTimestampOutOfRange:   ReasonTimestampOutOfRange,
	rUnitIDMissing:         ReasonUnitIDMissing,
	rEventValueTooLong:     ReasonEventValueTooLong,
	rMetadataJSONInvalid:   ReasonMetadataJSONInvalid,
	rIDTypeMissing:         ReasonIDTypeMissing,
	rIDTypeUnknown:         ReasonIDTypeUnknown,
	rDateMissing:           ReasonDateMissing,
	rDateUnparseable:       ReasonDateUnparseable,
	rDateOutsideDay:        ReasonDateOutsideDay,
	rMetricNameMissing:     ReasonMetricNameMissing,
	rMetricNameTooLong:     ReasonMetricNameTooLong,
	rNumeratorNull:         ReasonNumeratorNull,
	rDenominatorNull:       ReasonDenominatorNull,
	rValueNotNumeric:       ReasonValueNotNumeric,
}

func (r reason) String() string { return reasonCodes[r] }

// Reasons lists every reason code, in a stable order.
func Reasons() []string {
	out := make([]string, 0, numReasons-1)
	for _, c := range reasonCodes[1:] {
		out = append(out, c)
	}
	return out
}
