package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const validYAML = `
store: {kind: duckdb, path: store.duckdb}
projects:
  - name: shop
    id_types: [userID, stableID]
    api_keys: [{name: ci, sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae}]
connections:
  - {name: wh, kind: postgres, dsn_env: WH_DSN}
ingestions:
  - name: web_events
    project: shop
    connection: wh
    type: events
    query: SELECT * FROM events WHERE ds = $1
    mapping: {event_name: name, timestamp: ts, ids: {userID: uid}}
  - name: kpis
    project: shop
    connection: wh
    type: metrics
    query: SELECT * FROM kpis WHERE ds = $1
    mapping: {unit_id: uid, id_type: t, date: ds, metric_name: m, numerator: n, denominator: d}
    schedule: {mode: api_triggered}
`

func TestParseValidFillsDefaults(t *testing.T) {
	f, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Kafka.Brokers; len(got) != 1 || got[0] != "127.0.0.1:9092" {
		t.Errorf("default brokers = %v", got)
	}
	if f.Pipeline.RateLimitWindow != 2*time.Hour || f.Pipeline.WatchDays != 3 || f.Pipeline.ReloadThreshold != 0.05 {
		t.Errorf("pipeline defaults = %+v", f.Pipeline)
	}
	ing, ok := f.Ingestion("shop", "web_events")
	if !ok || ing.Schedule.Mode != ScheduleDaily || ing.Schedule.HourOrDefault() != 10 {
		t.Errorf("schedule defaults = %+v", ing.Schedule)
	}
	loc, err := ing.Schedule.Location()
	if err != nil {
		t.Fatal(err)
	}
	// The seed's clock: PST all year, no daylight saving.
	summer := time.Date(2024, 7, 1, 12, 0, 0, 0, time.UTC).In(loc)
	if _, off := summer.Zone(); off != -8*3600 {
		t.Errorf("default zone offset in July = %d, want -8h", off)
	}
	if c, _ := f.Connection("wh"); c.MaxConcurrency != 4 {
		t.Errorf("max_concurrency default = %d", c.MaxConcurrency)
	}
}

func TestParseNamesTheBadField(t *testing.T) {
	cases := []struct {
		name, from, to, field string
	}{
		{"unknown store kind", "kind: duckdb, path: store.duckdb", "kind: mysql", "store.kind"},
		{"unknown connection kind", "kind: postgres, dsn_env: WH_DSN", "kind: oracle", "connections[0].kind"},
		{"unknown connection", "    connection: wh\n    type: events", "    connection: nope\n    type: events", "ingestions[0].connection"},
		{"unknown project", "    project: shop\n    connection: wh\n    type: events", "    project: other\n    connection: wh\n    type: events", "ingestions[0].project"},
		{"bad type", "type: events", "type: logs", "ingestions[0].type"},
		{"missing event_name", "event_name: name, ", "", "ingestions[0].mapping.event_name"},
		{"id type not in project", "ids: {userID: uid}", "ids: {UserID: uid}", "ingestions[0].mapping.ids.UserID"},
		{"bad hash", "sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", "sha256: secret", "projects[0].api_keys[0].sha256"},
		{"hour out of range", "schedule: {mode: api_triggered}", "schedule: {mode: daily, hour: 24}", "ingestions[1].schedule.hour"},
		{"unknown zone", "schedule: {mode: api_triggered}", "schedule: {timezone: Mars/Olympus}", "ingestions[1].schedule.timezone"},
		{"ratio half mapped", "numerator: n, denominator: d", "numerator: n", "ingestions[1].mapping"},
		{"bad timestamp unit", "timestamp: ts,", "timestamp: ts, timestamp_unit: hours,", "ingestions[0].mapping.timestamp_unit"},
		{"bad duckdb memory limit", "{name: wh, kind: postgres, dsn_env: WH_DSN}", "{name: wh, kind: duckdb, path: wh.duckdb, memory_limit: lots}", "connections[0].memory_limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(validYAML, tc.from) {
				t.Fatalf("test fixture lacks %q", tc.from)
			}
			_, err := Parse([]byte(strings.Replace(validYAML, tc.from, tc.to, 1)))
			if err == nil {
				t.Fatal("bad config accepted")
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
		})
	}
}

func TestParseRejectsUnknownKeys(t *testing.T) {
	_, err := Parse([]byte(validYAML + "\nwat: 1\n"))
	if err == nil || !strings.Contains(err.Error(), "wat") {
		t.Fatalf("unknown key accepted or not named: %v", err)
	}
}

func TestFixedOffsetTimezone(t *testing.T) {
	loc, err := Schedule{Timezone: "-08:00"}.Location()
	if err != nil {
		t.Fatal(err)
	}
	if _, off := time.Date(2024, 7, 1, 0, 0, 0, 0, loc).Zone(); off != -8*3600 {
		t.Fatalf("offset = %d", off)
	}
}

func TestValidMemoryLimit(t *testing.T) {
	for s, want := range map[string]bool{"128MB": true, "1.5GB": true, "512 MiB": true, "2TB": true,
		"": false, "128": false, "lots": false, "1GB'; DROP TABLE x": false, "-1GB": false} {
		if got := ValidMemoryLimit(s); got != want {
			t.Errorf("ValidMemoryLimit(%q) = %v, want %v", s, got, want)
		}
	}
}
