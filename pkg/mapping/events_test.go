package mapping

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// eventBase is one good row for eventsIngestion.
func eventBase(tb testing.TB) []schemas.Column {
	return []schemas.Column{
		col(tb, "name", schemas.TypeString, "purchase"),
		col(tb, "ts", schemas.TypeLong, noon),
		col(tb, "user_id", schemas.TypeString, "u1"),
		col(tb, "device_id", schemas.TypeString, "d1"),
		col(tb, "value", schemas.TypeString, "9.99"),
		col(tb, "plan", schemas.TypeString, "pro"),
		col(tb, "country", schemas.TypeString, nil),
		col(tb, "meta", schemas.TypeJSON, `{"b": 1, "a": "x"}`),
	}
}

func TestMapEvents(t *testing.T) {
	t.Parallel()
	S, L, D, B := schemas.TypeString, schemas.TypeLong, schemas.TypeDouble, schemas.TypeBoolean
	noonMs := int64(noon) * 1000
	long127 := strings.Repeat("x", 127)
	accents127 := strings.Repeat("é", 127) // 254 bytes, 127 characters
	type want struct {
		reason vocab.Reason // "" when the row maps
		detail string       // substring of the rejection's detail
		field  string
		name   string
		timeMs int64
		value  *string
		ids    string // "type=value,..."
		meta   string
	}
	str := func(s string) *string { return &s }
	tests := []struct {
		name  string
		unit  string
		edit  func(*config.Mapping)
		cols  func(tb testing.TB) []schemas.Column
		want  want
		nilOK bool
	}{
		{name: "good row", want: want{name: "purchase", timeMs: noonMs, value: str("9.99"), ids: "stableID=d1,userID=u1", meta: `{"a":"x","b":"1","plan":"pro"}`}},

		{name: "event_name null", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "name", S, nil)} },
			want: want{reason: vocab.ReasonEventNameMissing, field: "event_name", detail: "is null"}},
		{name: "event_name empty", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "name", S, "")} },
			want: want{reason: vocab.ReasonEventNameMissing, detail: "is empty"}},
		{name: "event_name blank", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "name", S, "  \t")} },
			want: want{reason: vocab.ReasonEventNameMissing}},
		{name: "event_name 127 chars", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "name", S, long127)} },
			want: want{name: long127, timeMs: noonMs, value: str("9.99")}},
		{name: "event_name 127 two-byte chars", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "name", S, accents127)} },
			want: want{name: accents127, timeMs: noonMs}},
		{name: "event_name 128 chars", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "name", S, long127+"y")} },
			want: want{reason: vocab.ReasonEventNameTooLong, detail: "has 128 characters, more than 127"}},
		{name: "event_name BOOLEAN column", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "name", B, true)} },
			want: want{reason: vocab.ReasonTypeMismatch, field: "event_name", detail: `column "name" mapped to event_name is BOOLEAN (test_BOOLEAN); event_name needs STRING`}},
		{name: "event_name invalid UTF-8", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "name", S, "bad\xff")} },
			want: want{reason: vocab.ReasonInvalidText}},
		{name: "event_name NUL", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "name", S, "a\x00b")} },
			want: want{reason: vocab.ReasonInvalidText}},

		{name: "timestamp null", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, nil)} },
			want: want{reason: vocab.ReasonTimestampMissing}},
		{name: "timestamp TIMESTAMP column", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "ts", schemas.TypeTimestamp, time.Unix(noon, 123456789))}
		}, want: want{name: "purchase", timeMs: noonMs + 123}},
		{name: "timestamp TIMESTAMP ignores unit", unit: UnitMilliseconds, cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "ts", schemas.TypeTimestamp, time.Unix(noon, 0))}
		}, want: want{name: "purchase", timeMs: noonMs}},
		{name: "timestamp DOUBLE seconds", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", D, float64(noon)+0.25)} },
			want: want{name: "purchase", timeMs: noonMs + 250}},
		{name: "timestamp numeric STRING", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", S, " 1710072000 ")} },
			want: want{name: "purchase", timeMs: noonMs}},
		{name: "timestamp DECIMAL fraction", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "ts", schemas.TypeDecimal, "1710072000.500")}
		}, want: want{name: "purchase", timeMs: noonMs + 500}},
		{name: "timestamp RFC 3339 STRING", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "ts", S, "2024-03-10T12:00:00.5Z")}
		}, want: want{name: "purchase", timeMs: noonMs + 500}},
		{name: "timestamp unparseable", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", S, "yesterday")} },
			want: want{reason: vocab.ReasonTimestampUnparseable, detail: `"yesterday" is neither a number of epoch seconds`}},
		{name: "timestamp milliseconds with unit seconds", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, noonMs)} },
			want: want{reason: vocab.ReasonTimestampUnitMismatch, detail: "looks like milliseconds, not seconds; set timestamp_unit: milliseconds"}},
		{name: "timestamp microseconds with unit seconds", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, noonMs*1000)} },
			want: want{reason: vocab.ReasonTimestampUnitMismatch, detail: "looks like microseconds"}},
		{name: "timestamp ms as DOUBLE with unit seconds", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", D, float64(noonMs))} },
			want: want{reason: vocab.ReasonTimestampUnitMismatch, detail: "looks like milliseconds"}},
		{name: "timestamp seconds with unit milliseconds", unit: UnitMilliseconds, cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, noon)} },
			want: want{reason: vocab.ReasonTimestampUnitMismatch, detail: "looks like seconds, not milliseconds; set timestamp_unit: seconds"}},
		{name: "timestamp unit milliseconds", unit: UnitMilliseconds, cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, noonMs+7)} },
			want: want{name: "purchase", timeMs: noonMs + 7}},
		{name: "timestamp unit microseconds", unit: UnitMicroseconds, cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "ts", S, "1710072000007000")}
		}, want: want{name: "purchase", timeMs: noonMs + 7}},
		{name: "timestamp auto seconds", unit: UnitAuto, want: want{name: "purchase", timeMs: noonMs}},
		{name: "timestamp auto milliseconds", unit: UnitAuto, cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, noonMs+1)} },
			want: want{name: "purchase", timeMs: noonMs + 1}},
		{name: "timestamp auto microseconds", unit: UnitAuto, cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, noonMs*1000+1999)} },
			want: want{name: "purchase", timeMs: noonMs + 1}},
		{name: "timestamp auto nanoseconds", unit: UnitAuto, cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, noonMs*1_000_000)} },
			want: want{name: "purchase", timeMs: noonMs}},
		{name: "timestamp nanoseconds with unit seconds", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, noonMs*1_000_000)} },
			want: want{reason: vocab.ReasonTimestampUnitMismatch, detail: "looks like nanoseconds"}},
		{name: "timestamp zero", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, 0)} },
			want: want{reason: vocab.ReasonTimestampOutOfRange, detail: "before 2000-01-01"}},
		{name: "timestamp negative", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, -5)} },
			want: want{reason: vocab.ReasonTimestampOutOfRange, detail: "negative"}},
		{name: "timestamp end of next day", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, noon+36*3600-1)} },
			want: want{name: "purchase", timeMs: (noon + 36*3600 - 1) * 1000}},
		{name: "timestamp two days after", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", L, noon+36*3600)} },
			want: want{reason: vocab.ReasonTimestampOutOfRange, detail: "more than a day after the run's day 2024-03-10"}},
		{name: "timestamp NaN", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", D, nan())} },
			want: want{reason: vocab.ReasonTimestampUnparseable}},
		{name: "timestamp BOOLEAN column", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ts", B, true)} },
			want: want{reason: vocab.ReasonTypeMismatch, field: "timestamp"}},

		{name: "integer id cast", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "user_id", L, 42)} },
			want: want{name: "purchase", ids: "stableID=d1,userID=42"}},
		{name: "decimal id cast", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "user_id", schemas.TypeDecimal, "00123.000")}
		}, want: want{name: "purchase", ids: "stableID=d1,userID=123"}},
		{name: "double id cast", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "user_id", D, 1e6)} },
			want: want{name: "purchase", ids: "stableID=d1,userID=1000000"}},
		{name: "empty id skipped", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "user_id", S, "")} },
			want: want{name: "purchase", ids: "stableID=d1"}},
		{name: "null id skipped", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "device_id", S, nil)} },
			want: want{name: "purchase", ids: "userID=u1"}},
		{name: "no id left", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "device_id", S, nil), col(tb, "user_id", S, " ")}
		}, want: want{reason: vocab.ReasonUnitIDMissing, detail: `columns "device_id", "user_id" are all empty or null`}},
		{name: "id BOOLEAN column", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "user_id", B, true)} },
			want: want{reason: vocab.ReasonTypeMismatch, field: "ids.userID"}},

		{name: "event_value null", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", S, nil)} },
			want: want{name: "purchase", value: str("")}},
		{name: "event_value integer double", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", D, 5.0)} },
			want: want{name: "purchase", value: str("5")}},
		{name: "event_value fractional double", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", D, 0.1)} },
			want: want{name: "purchase", value: str("0.1")}},
		{name: "event_value LONG", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", L, -7)} },
			want: want{name: "purchase", value: str("-7")}},
		{name: "event_value DECIMAL", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "value", schemas.TypeDecimal, "12.50")}
		}, want: want{name: "purchase", value: str("12.5")}},
		{name: "event_value string kept verbatim", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", S, "007")} },
			want: want{name: "purchase", value: str("007")}},
		{name: "event_value 128 chars", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", S, long127+"z")} },
			want: want{reason: vocab.ReasonEventValueTooLong}},

		{name: "metadata fixed columns, typed", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "plan", L, 3), col(tb, "country", S, "NZ"), col(tb, "meta", S, nil)}
		}, want: want{name: "purchase", meta: `{"country":"NZ","plan":"3"}`}},
		{name: "metadata json one level", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "plan", S, nil), col(tb, "meta", S,
				`{"s":"x\"y","n":1.50,"t":true,"z":null,"o":{"k": [1, {"a": "b c"}]},"arr":[ ],"u":"\u00e9\ud83d\ude00"}`)}
		}, want: want{name: "purchase", meta: `{"arr":"[]","n":"1.50","o":"{\"k\":[1,{\"a\":\"b c\"}]}","s":"x\"y","t":"true","u":"é😀"}`}},
		{name: "metadata fixed column wins over json key", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "meta", S, `{"plan":"free","x":"1"}`)}
		}, want: want{name: "purchase", meta: `{"plan":"pro","x":"1"}`}},
		{name: "metadata json duplicate key: last wins", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "plan", S, nil), col(tb, "meta", S, `{"k":"1","k":"2"}`)}
		}, want: want{name: "purchase", meta: `{"k":"2"}`}},
		{name: "metadata json empty cell", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "plan", S, nil), col(tb, "meta", S, "")}
		}, want: want{name: "purchase", meta: `{}`}},
		{name: "metadata control characters escaped", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "plan", S, "a\nb\x01\\"), col(tb, "meta", S, nil)}
		}, want: want{name: "purchase", meta: `{"plan":"a\nb\u0001\\"}`}},
		{name: "metadata json invalid", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "meta", S, `{"a":`)} },
			want: want{reason: vocab.ReasonMetadataJSONInvalid, detail: "not valid JSON"}},
		{name: "metadata json array", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "meta", S, `[1,2]`)} },
			want: want{reason: vocab.ReasonMetadataJSONInvalid, detail: "is a JSON array, not an object"}},
		{name: "metadata json NUL escape", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "meta", S, `{"a":"\u0000"}`)} },
			want: want{reason: vocab.ReasonInvalidText}},
		{name: "metadata_json LONG column", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "meta", L, 1)} },
			want: want{reason: vocab.ReasonTypeMismatch, field: "metadata_json"}},

		{name: "missing column", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{{Name: "device_id"}} },
			want: want{reason: vocab.ReasonMissingColumn, field: "ids.stableID", detail: `mapped column "device_id" (ids.stableID) not in the query result`}},
		{name: "column names matched case-insensitively", edit: func(m *config.Mapping) { m.EventName = "NAME" },
			want: want{name: "purchase"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ing := eventsIngestion()
			ing.Mapping.TimestampUnit = tt.unit
			if tt.edit != nil {
				tt.edit(&ing.Mapping)
			}
			cols := eventBase(t)
			if tt.cols != nil {
				cols = withColumns(cols, tt.cols(t)...)
			}
			out, rejected := mapAll(t, ing, rawBatch(t, cols...))
			if tt.want.reason != "" {
				if len(rejected) != 1 || len(out.Events) != 0 {
					t.Fatalf("got %d events and rejections %+v, want one %s rejection", len(out.Events), rejected, tt.want.reason)
				}
				r := rejected[0]
				if r.Reason != string(tt.want.reason) || !strings.Contains(r.Detail, tt.want.detail) {
					t.Fatalf("rejected %s %q, want %s containing %q", r.Reason, r.Detail, tt.want.reason, tt.want.detail)
				}
				if tt.want.field != "" && r.Field != tt.want.field {
					t.Errorf("rejection field %q, want %q", r.Field, tt.want.field)
				}
				if r.Position != 1000 {
					t.Errorf("position %d, want 1000", r.Position)
				}
				if len(out.Rejected) != 1 || out.Rejected[0] != (schemas.ReasonCount{Reason: string(tt.want.reason), Count: 1}) {
					t.Errorf("out.Rejected = %+v", out.Rejected)
				}
				return
			}
			if len(rejected) != 0 {
				t.Fatalf("rejected %s: %s", rejected[0].Reason, rejected[0].Detail)
			}
			ev := out.Events[0]
			if ev.Position != 1000 {
				t.Errorf("position %d, want 1000", ev.Position)
			}
			if tt.want.name != "" && ev.EventName != tt.want.name {
				t.Errorf("event_name %q, want %q", ev.EventName, tt.want.name)
			}
			if tt.want.timeMs != 0 && ev.TimeMs != tt.want.timeMs {
				t.Errorf("time_ms %d, want %d", ev.TimeMs, tt.want.timeMs)
			}
			if tt.want.value != nil && ev.EventValue != *tt.want.value {
				t.Errorf("event_value %q, want %q", ev.EventValue, *tt.want.value)
			}
			if tt.want.ids != "" {
				var got []string
				for _, id := range ev.UnitIDs {
					got = append(got, id.IDType+"="+id.Value)
				}
				if g := strings.Join(got, ","); g != tt.want.ids {
					t.Errorf("unit ids %s, want %s", g, tt.want.ids)
				}
			}
			if tt.want.meta != "" && ev.MetadataJSON != tt.want.meta {
				t.Errorf("metadata_json\n got %s\nwant %s", ev.MetadataJSON, tt.want.meta)
			}
		})
	}
}
