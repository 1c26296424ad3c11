package demo

import (
	"encoding/json"
	"maps"
	"reflect"
	"testing"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/vocab"
)

func testSpec() Spec {
	return Spec{
		Days:          3,
		LastDay:       civil.Date{Year: 2024, Month: 3, Day: 10},
		EventsPerDay:  2000,
		MetricsPerDay: 600,
		BadRowEvery:   97,
		Seed:          7,
	}
}

// classifyEvent judges a row from its values alone, as the mapper would
// with the demo mapping, independently of the generator's own Reason.
func classifyEvent(ev *Event) vocab.Reason {
	switch {
	case ev.NameNull:
		return ReasonMissingEventName
	case len(ev.Name) >= 128:
		return ReasonEventNameTooLong
	case ev.UserNull && ev.DeviceNull && ev.CompanyNull:
		return ReasonMissingIDs
	case !isJSONObject(ev.Properties):
		return ReasonInvalidMetadataJSON
	case ev.TimeS > 1e11:
		return ReasonTimestampUnit
	}
	return ""
}

func isJSONObject(s string) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal([]byte(s), &m) == nil
}

func classifyMetric(m *Metric) vocab.Reason {
	switch {
	case m.IDType != "userID" && m.IDType != "stableID" && m.IDType != "companyID":
		return ReasonUnknownIDType
	case !m.NumNull && m.DenNull:
		return ReasonNullDenominator
	}
	return ""
}

// counter tallies rows and rejected rows by class.
type counter struct{ c TableCounts }

func newCounter() *counter { return &counter{c: TableCounts{Rejected: map[string]int64{}}} }

func (k *counter) add(reason vocab.Reason) {
	k.c.Rows++
	if reason != "" {
		k.c.Rejected[string(reason)]++
	}
}

func generated(tb testing.TB, s Spec) map[civil.Date]Day {
	tb.Helper()
	out := map[civil.Date]Day{}
	for _, d := range s.Dates() {
		ev, mt := newCounter(), newCounter()
		if err := Events(s, d, func(e *Event) error {
			if got := classifyEvent(e); got != e.Reason {
				tb.Fatalf("%s event %s: generator says %q, values say %q: %+v", d, e.EventID, e.Reason, got, *e)
			}
			if e.Date != d || (e.Reason != ReasonTimestampUnit && civil.DateOf(e.TS) != d) || e.TS.Unix() != e.TimeS && e.Reason != ReasonTimestampUnit {
				tb.Fatalf("%s event %s: date %s ts %s time_s %d do not agree", d, e.EventID, e.Date, e.TS, e.TimeS)
			}
			if !e.ValueNull && len(e.Value) >= 128 {
				tb.Fatalf("event value %q too long", e.Value)
			}
			ev.add(e.Reason)
			return nil
		}); err != nil {
			tb.Fatal(err)
		}
		if err := Metrics(s, d, func(m *Metric) error {
			if got := classifyMetric(m); got != m.Reason {
				tb.Fatalf("%s metric %s/%s: generator says %q, values say %q", d, m.UnitID, m.Name, m.Reason, got)
			}
			mt.add(m.Reason)
			return nil
		}); err != nil {
			tb.Fatal(err)
		}
		out[d] = Day{Events: ev.c, Metrics: mt.c}
	}
	return out
}

func TestExpectedMatchesGeneratedRows(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		spec Spec
	}{
		{"test spec", testSpec()},
		{"dev default", DefaultSpec(civil.Date{Year: 2025, Month: 1, Day: 31})},
		{"no bad rows", Spec{Days: 2, LastDay: civil.Date{Year: 2024, Month: 1, Day: 1}, EventsPerDay: 300, MetricsPerDay: 100, Seed: 1}},
		{"every row bad", Spec{Days: 1, LastDay: civil.Date{Year: 2024, Month: 1, Day: 1}, EventsPerDay: 10, MetricsPerDay: 9, BadRowEvery: 1, Seed: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := generated(t, tc.spec)
			want := Expected(tc.spec)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("generated counts %+v\nExpected         %+v", got, want)
			}
		})
	}
}

// The dev warehouse must show every bad-row class every day.
func TestDefaultSpecHasEveryBadClassEachDay(t *testing.T) {
	t.Parallel()
	s := DefaultSpec(civil.Date{Year: 2025, Month: 6, Day: 1})
	for d, day := range Expected(s) {
		for _, r := range eventReasons {
			if day.Events.Rejected[string(r)] == 0 {
				t.Errorf("%s: no events rejected for %s", d, r)
			}
		}
		for _, r := range []vocab.Reason{ReasonUnknownIDType, ReasonNullDenominator} {
			if day.Metrics.Rejected[string(r)] == 0 {
				t.Errorf("%s: no metrics rejected for %s", d, r)
			}
		}
		if bad := day.Events.Rows - day.Events.Good(); bad > 20 {
			t.Errorf("%s: %d bad events is more than a handful", d, bad)
		}
	}
}

func TestGeneratorIsDeterministic(t *testing.T) {
	t.Parallel()
	collect := func(s Spec) ([]Event, []Metric) {
		var evs []Event
		var ms []Metric
		for _, d := range s.Dates() {
			_ = Events(s, d, func(e *Event) error { evs = append(evs, *e); return nil })
			_ = Metrics(s, d, func(m *Metric) error { ms = append(ms, *m); return nil })
		}
		return evs, ms
	}
	s := testSpec()
	e1, m1 := collect(s)
	e2, m2 := collect(s)
	if !reflect.DeepEqual(e1, e2) || !reflect.DeepEqual(m1, m2) {
		t.Fatal("same spec generated different rows")
	}
	other := s
	other.Seed++
	e3, _ := collect(other)
	if reflect.DeepEqual(e1, e3) {
		t.Fatal("a different seed generated the same rows")
	}
	// A day's rows do not depend on which other days the spec holds.
	one := s
	one.Days = 1
	e4, _ := collect(one)
	if !reflect.DeepEqual(e4, e1[len(e1)-len(e4):]) {
		t.Fatal("the last day's rows changed with the number of days")
	}
	ids := map[string]bool{}
	for _, e := range e1 {
		if ids[e.EventID] {
			t.Fatalf("duplicate event id %s", e.EventID)
		}
		ids[e.EventID] = true
	}
	keys := map[string]bool{}
	for _, m := range m1 {
		k := m.Date.String() + "|" + m.UnitID + "|" + m.IDType + "|" + m.Name
		if keys[k] {
			t.Fatalf("duplicate metric key %s", k)
		}
		keys[k] = true
	}
}

// The data looks like a warehouse's: several id types, metadata, nested JSON.
func TestGeneratedDataIsVaried(t *testing.T) {
	t.Parallel()
	s := testSpec()
	names, platforms, idTypes := map[string]int{}, map[string]int{}, map[string]int{}
	var anonymous, withCompany, nested, purchases int
	_ = Events(s, s.LastDay, func(e *Event) error {
		names[e.Name]++
		platforms[e.Platform]++
		if e.UserNull && !e.DeviceNull {
			anonymous++
		}
		if !e.CompanyNull {
			withCompany++
		}
		var props map[string]json.RawMessage
		if json.Unmarshal([]byte(e.Properties), &props) == nil && len(props["utm"]) > 0 && props["utm"][0] == '{' {
			nested++
		}
		if e.Name == "purchase" && !e.ValueNull {
			purchases++
			var f float64
			if err := json.Unmarshal([]byte(e.Value), &f); err != nil || f <= 0 {
				t.Errorf("purchase value %q is not a price", e.Value)
			}
		}
		return nil
	})
	_ = Metrics(s, s.LastDay, func(m *Metric) error { idTypes[m.IDType]++; return nil })
	if len(names) < 6 || len(platforms) != 3 || anonymous == 0 || withCompany == 0 || nested < s.EventsPerDay/2 || purchases == 0 {
		t.Fatalf("events not varied: names %v platforms %v anonymous %d company %d nested %d purchases %d",
			names, platforms, anonymous, withCompany, nested, purchases)
	}
	for _, k := range []string{"userID", "stableID", "companyID", "UserID", "unknownType"} {
		if idTypes[k] == 0 {
			t.Errorf("no metric rows with id_type %s: %v", k, slicesOf(idTypes))
		}
	}
}

func slicesOf(m map[string]int) []string {
	var out []string
	for k := range maps.Keys(m) {
		out = append(out, k)
	}
	return out
}
