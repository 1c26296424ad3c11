package trigger

import (
	"testing"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// TestStatusNamesTheDayBoundary: each status row says the schedule of its
// source and the time zone whose midnight bounds the day.
func TestStatusNamesTheDayBoundary(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	seedRuns(t, f.store, []store.RunUpdate{
		{RunID: "a-1", Project: "alpha", Ingestion: "ev_api", Type: "events", Date: "2024-03-08", Trigger: vocab.TriggerAPI},
		{RunID: "a-2", Project: "alpha", Ingestion: "ev_daily", Type: "events", Date: "2024-03-09", Trigger: vocab.TriggerScheduled},
	})
	w := f.do(t, "GET", "/v1/ingestions/status", statsigKey(keyAlpha), "")
	if w.Code != 200 {
		t.Fatalf("code %d: %s", w.Code, w.Body)
	}
	type row struct {
		Source   string `json:"source"`
		Date     string `json:"ds"`
		Schedule string `json:"schedule"`
		Timezone string `json:"timezone"`
		UTCStart string `json:"utcStart"`
		Status   string `json:"status"`
	}
	got := decodeJSON[struct {
		Data []row `json:"data"`
	}](t, w).Data
	want := map[string]row{
		"ev_api":   {"ev_api", "2024-03-08", "api_triggered", "Etc/GMT+8", "2024-03-08T08:00:00Z", ""},
		"ev_daily": {"ev_daily", "2024-03-09", "daily at 10:00", "Etc/GMT+8", "2024-03-09T08:00:00Z", ""},
	}
	if len(got) != len(want) {
		t.Fatalf("rows %+v, want %d", got, len(want))
	}
	for _, r := range got {
		w := want[r.Source]
		w.Status = r.Status
		if r != w || r.Status == "" {
			t.Errorf("row %+v, want %+v with a status", r, w)
		}
	}
}
