package trigger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/pkg/config"
)

// apiError is every non-2xx answer: JSON naming the field at fault.
type apiError struct {
	Status int    `json:"-"`
	Error  string `json:"error"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
	// RetryAfter is the 429's wait, in whole seconds.
	RetryAfter int64 `json:"retry_after_seconds,omitempty"`
}

func badField(field, format string, args ...any) *apiError {
	reason := fmt.Sprintf(format, args...)
	return &apiError{Status: http.StatusBadRequest, Error: "invalid " + field + ": " + reason, Field: field, Reason: reason}
}

const dateLayout = "2006-01-02"

var datePattern = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)

// quote shows a bad value back to the caller, shortened so a huge or hostile
// value does not fill the answer.
func quote(s string) string {
	const max = 40
	if len(s) > max {
		s = s[:max] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// parseDate accepts exactly YYYY-MM-DD naming a real calendar day.
func parseDate(field, s string) (time.Time, *apiError) {
	if !datePattern.MatchString(s) {
		return time.Time{}, badField(field, "%s is not a date: want YYYY-MM-DD", quote(s))
	}
	d, err := time.Parse(dateLayout, s)
	if err != nil {
		return time.Time{}, badField(field, "%s is not a calendar date", quote(s))
	}
	return d, nil
}

func parseType(s string) *apiError {
	switch s {
	case config.TypeEvents, config.TypeMetrics:
		return nil
	case "":
		return badField("type", "required: events or metrics")
	default:
		return badField("type", "%s is not a type: want events or metrics", quote(s))
	}
}

// decodeStrict decodes one JSON object into v: unknown fields, a wrong
// value type and trailing data are 400s naming the field ("body" when the
// body as a whole is wrong).
func decodeStrict(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return badField("body", "trailing data after the JSON object")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err == nil {
		return badField("body", "trailing data after the JSON object")
	}
	return nil
}

func jsonError(err error) *apiError {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		field, _, _ := strings.Cut(typeErr.Field, ".")
		if field == "" {
			return badField("body", "want a JSON object")
		}
		return badField(field, "want %s, got JSON %s", jsonTypeName(field), typeErr.Value)
	}
	// encoding/json reports unknown fields only in its message.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		if name == "" || len(name) > 64 || !utf8.ValidString(name) {
			return badField("body", "unknown field %s", quote(name))
		}
		return badField(name, "unknown field")
	}
	if errors.Is(err, io.EOF) {
		return badField("body", "empty body: want a JSON object")
	}
	return badField("body", "malformed JSON")
}

func jsonTypeName(field string) string {
	switch field {
	case "sources":
		return "a list of source names"
	case "datestamps":
		return "a date or a list of dates"
	default:
		return "a string"
	}
}

// markRequest is a decoded, validated mark_data_ready_dwh call.
type markRequest struct {
	Dates   []string
	Type    string
	Sources []string // empty: every api-triggered source of the type
}

type markBody struct {
	Datestamps json.RawMessage `json:"datestamps"`
	Type       *string         `json:"type"`
	Sources    []string        `json:"sources"`
}

// decodeMarkDataReady validates a mark_data_ready_dwh body. today is the
// current UTC date: dates after tomorrow are refused (a day whose data
// cannot be ready yet), a day's slack covering every customer time zone.
func decodeMarkDataReady(body []byte, today time.Time, maxDates int) (markRequest, *apiError) {
	var b markBody
	if e := decodeStrict(body, &b); e != nil {
		return markRequest{}, e
	}
	var req markRequest
	if b.Type == nil {
		return req, badField("type", "required: events or metrics")
	}
	if e := parseType(*b.Type); e != nil {
		return req, e
	}
	req.Type = *b.Type

	raw, e := decodeDatestamps(b.Datestamps)
	if e != nil {
		return req, e
	}
	if len(raw) > maxDates {
		return req, badField("datestamps", "at most %d dates per call, got %d", maxDates, len(raw))
	}
	latest := today.AddDate(0, 0, 1)
	seen := make(map[string]bool, len(raw))
	for _, s := range raw {
		d, e := parseDate("datestamps", s)
		if e != nil {
			return req, e
		}
		if d.After(latest) {
			return req, badField("datestamps", "%s is in the future", s)
		}
		if !seen[s] {
			seen[s] = true
			req.Dates = append(req.Dates, s)
		}
	}

	names := make(map[string]bool, len(b.Sources))
	for _, s := range b.Sources {
		if s == "" {
			return req, badField("sources", "a source name must not be empty")
		}
		if !names[s] {
			names[s] = true
			req.Sources = append(req.Sources, s)
		}
	}
	return req, nil
}

// decodeDatestamps takes one date string or a non-empty list of them.
func decodeDatestamps(raw json.RawMessage) ([]string, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, badField("datestamps", "required: a YYYY-MM-DD date or a list of them")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badField("datestamps", "want a date or a list of dates")
		}
		return []string{s}, nil
	case '[':
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, badField("datestamps", "want a list of YYYY-MM-DD strings")
		}
		if len(list) == 0 {
			return nil, badField("datestamps", "the list is empty: give at least one date")
		}
		return list, nil
	default:
		return nil, badField("datestamps", "want a date or a list of dates")
	}
}

// backfillRequest is a decoded, validated backfill call.
type backfillRequest struct {
	Dates  []string // every day from start to end, inclusive
	Type   string
	Source string // empty: every source of the type
}

type backfillBody struct {
	Start   *string `json:"datestamp_start"`
	End     *string `json:"datestamp_end"`
	Type    *string `json:"type"`
	Dataset *string `json:"dataset"` // accepted for compatibility with the seed API
	Source  *string `json:"source"`
}

// decodeBackfill validates a backfill body: start <= end <= today, at most
// maxDays days.
func decodeBackfill(body []byte, today time.Time, maxDays int) (backfillRequest, *apiError) {
	var b backfillBody
	if e := decodeStrict(body, &b); e != nil {
		return backfillRequest{}, e
	}
	var req backfillRequest
	if b.Type == nil {
		return req, badField("type", "required: events or metrics")
	}
	if e := parseType(*b.Type); e != nil {
		return req, e
	}
	req.Type = *b.Type
	if b.Start == nil {
		return req, badField("datestamp_start", "required: a YYYY-MM-DD date")
	}
	if b.End == nil {
		return req, badField("datestamp_end", "required: a YYYY-MM-DD date")
	}
	start, e := parseDate("datestamp_start", *b.Start)
	if e != nil {
		return req, e
	}
	end, e := parseDate("datestamp_end", *b.End)
	if e != nil {
		return req, e
	}
	if end.Before(start) {
		return req, badField("datestamp_end", "%s is before datestamp_start %s", *b.End, *b.Start)
	}
	if end.After(today) {
		return req, badField("datestamp_end", "%s is in the future", *b.End)
	}
	days := int(end.Sub(start)/(24*time.Hour)) + 1
	if days > maxDays {
		return req, badField("datestamp_end", "the range holds %d days: at most %d per request", days, maxDays)
	}
	req.Dates = make([]string, 0, days)
	for d := start; !d.After(end); d = d.AddDate(0, 0, 1) {
		req.Dates = append(req.Dates, d.Format(dateLayout))
	}
	if b.Source != nil {
		if *b.Source == "" {
			return req, badField("source", "must not be empty when given")
		}
		req.Source = *b.Source
	}
	return req, nil
}
