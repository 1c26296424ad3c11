package mapping

import "github.com/sluicehq/sluice/pkg/vocab"

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

// reasonCodes lists vocab.RowReasons in the same order (a test holds them
// in step).
var reasonCodes = [numReasons]vocab.Reason{
	rNone:                  "",
	rMissingColumn:         vocab.ReasonMissingColumn,
	rTypeMismatch:          vocab.ReasonTypeMismatch,
	rMalformedBatch:        vocab.ReasonMalformedBatch,
	rInvalidText:           vocab.ReasonInvalidText,
	rEventNameMissing:      vocab.ReasonEventNameMissing,
	rEventNameTooLong:      vocab.ReasonEventNameTooLong,
	rTimestampMissing:      vocab.ReasonTimestampMissing,
	rTimestampUnparseable:  vocab.ReasonTimestampUnparseable,
	rTimestampUnitMismatch: vocab.ReasonTimestampUnitMismatch,
	rTimestampOutOfRange:   vocab.ReasonTimestampOutOfRange,
	rUnitIDMissing:         vocab.ReasonUnitIDMissing,
	rEventValueTooLong:     vocab.ReasonEventValueTooLong,
	rMetadataJSONInvalid:   vocab.ReasonMetadataJSONInvalid,
	rIDTypeMissing:         vocab.ReasonIDTypeMissing,
	rIDTypeUnknown:         vocab.ReasonIDTypeUnknown,
	rDateMissing:           vocab.ReasonDateMissing,
	rDateUnparseable:       vocab.ReasonDateUnparseable,
	rDateOutsideDay:        vocab.ReasonDateOutsideDay,
	rMetricNameMissing:     vocab.ReasonMetricNameMissing,
	rMetricNameTooLong:     vocab.ReasonMetricNameTooLong,
	rNumeratorNull:         vocab.ReasonNumeratorNull,
	rDenominatorNull:       vocab.ReasonDenominatorNull,
	rValueNotNumeric:       vocab.ReasonValueNotNumeric,
}

func (r reason) String() string { return string(reasonCodes[r]) }
