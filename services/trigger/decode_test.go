package trigger

import (
	"net/http"
	"slices"
	"testing"
	"time"
	"unicode/utf8"
)

var fuzzToday = time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC)

func TestDecodeMarkDataReady(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		body      string
		want      markRequest
		wantField string
	}{
		{"single", `{"datestamps":"2024-02-29","type":"events"}`, markRequest{Dates: []string{"2024-02-29"}, Type: "events"}, ""},
		{"list dedupes in order", `{"datestamps":["2024-03-02","2024-03-01","2024-03-02"],"type":"metrics"}`,
			markRequest{Dates: []string{"2024-03-02", "2024-03-01"}, Type: "metrics"}, ""},
		{"sources dedupe", `{"datestamps":"2024-03-01","type":"events","sources":["a","b","a"]}`,
			markRequest{Dates: []string{"2024-03-01"}, Type: "events", Sources: []string{"a", "b"}}, ""},
		{"tomorrow is allowed", `{"datestamps":"2024-03-11","type":"events"}`, markRequest{Dates: []string{"2024-03-11"}, Type: "events"}, ""},
		{"not a leap day", `{"datestamps":"2023-02-29","type":"events"}`, markRequest{}, "datestamps"},
		{"unicode digits", `{"datestamps":"２０２４-03-01","type":"events"}`, markRequest{}, "datestamps"},
		{"null date", `{"datestamps":null,"type":"events"}`, markRequest{}, "datestamps"},
		{"null in list", `{"datestamps":[null],"type":"events"}`, markRequest{}, "datestamps"},
		{"empty source", `{"datestamps":"2024-03-01","type":"events","sources":[""]}`, markRequest{}, "sources"},
		{"type case matters", `{"datestamps":"2024-03-01","type":"Events"}`, markRequest{}, "type"},
		{"null type", `{"datestamps":"2024-03-01","type":null}`, markRequest{}, "type"},
		{"nested unknown", `{"datestamps":"2024-03-01","type":"events","x":{"y":1}}`, markRequest{}, "x"},
		{"top-level string", `"2024-03-01"`, markRequest{}, "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, e := decodeMarkDataReady([]byte(tt.body), fuzzToday, 31)
			if tt.wantField != "" {
				if e == nil || e.Field != tt.wantField || e.Status != http.StatusBadRequest {
					t.Fatalf("err %+v, want a 400 naming %q", e, tt.wantField)
				}
				return
			}
			if e != nil {
				t.Fatalf("unexpected error %+v", e)
			}
			if !slices.Equal(got.Dates, tt.want.Dates) || got.Type != tt.want.Type || !slices.Equal(got.Sources, tt.want.Sources) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRetrySeconds(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   time.Duration
		want int64
	}{{0, 1}, {time.Millisecond, 1}, {time.Second, 1}, {time.Second + time.Millisecond, 2}, {2 * time.Hour, 7200}} {
		if got := retrySeconds(tt.in); got != tt.want {
			t.Errorf("retrySeconds(%s) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// FuzzDecodeMarkDataReady: any body is either a valid request (a known
// type, 1 to 31 real, distinct, not-future dates, non-empty source names)
// or a 400 naming a field; never a panic.
func FuzzDecodeMarkDataReady(f *testing.F) {
	for _, seed := range []string{
		`{"datestamps": "2023-02-20", "type": "events"}`,
		`{"datestamps": ["2023-02-20", "2023-02-21"], "type": "metrics", "sources": ["a"]}`,
		`{"datestamps": "2023-02-20'; DROP TABLE x;--", "type": "events"}`,
		`{"datestamps": [], "type": "events"}`,
		`{"datestamps": 1, "type": []}`,
		`{"a": 1}`,
		`[]`, `null`, ``, `{`, `{"datestamps": "2023-02-20", "type": "events"} x`,
		"{\"datestamps\": \"\xff\", \"type\": \"events\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, e := decodeMarkDataReady(body, fuzzToday, 31)
		if e != nil {
			if e.Status != http.StatusBadRequest || e.Field == "" || e.Reason == "" {
				t.Fatalf("error %+v: want a 400 with a field and a reason", e)
			}
			if !utf8.ValidString(e.Error) && !utf8.ValidString(e.Reason) {
				t.Fatalf("error %+v is not text", e)
			}
			return
		}
		if req.Type != "events" && req.Type != "metrics" {
			t.Fatalf("accepted type %q", req.Type)
		}
		if len(req.Dates) == 0 || len(req.Dates) > 31 {
			t.Fatalf("accepted %d dates", len(req.Dates))
		}
		seen := map[string]bool{}
		for _, d := range req.Dates {
			p, err := time.Parse(dateLayout, d)
			if err != nil || p.Format(dateLayout) != d || p.After(fuzzToday.AddDate(0, 0, 1)) || seen[d] {
				t.Fatalf("accepted date %q (err %v)", d, err)
			}
			seen[d] = true
		}
		for _, s := range req.Sources {
			if s == "" {
				t.Fatal("accepted an empty source name")
			}
		}
	})
}
