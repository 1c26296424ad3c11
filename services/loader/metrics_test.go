package loader

import (
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// The loader's run and row counters count what runs did, once per run: a
// redelivered batch, a redelivered END or FAILED marker and another
// extraction of a finished run move only the work counters and
// sluice_loader_duplicate_ends_total.
func TestEffectCountersCountEachRunOnce(t *testing.T) {
	t.Parallel()
	r := newFaultRig(t, 0, false)
	reg := prometheus.NewRegistry()
	kcfg := r.kcfg
	svc, err := New(Config{Group: "loader-metrics", MaxRejectedShare: 0.5}, Deps{Kafka: kcfg, Codecs: r.codecs, Store: r.store,
		Dispatcher: r.dispatcher(t), Logger: slog.New(slog.DiscardHandler), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.client.Close)
	handle := func(t *testing.T, batches ...*schemas.MappedBatch) {
		t.Helper()
		var recs []*kgo.Record
		for _, v := range r.encode(t, batches) {
			recs = append(recs, &kgo.Record{Topic: kcfg.Topic(schemas.TopicMappedEvents), Value: v})
		}
		if err := svc.handle(t.Context(), recs); err != nil {
			t.Fatal(err)
		}
	}
	missing := string(vocab.ReasonEventNameMissing)

	// Run A loads 12 rows and rejects 2: 3 batches of 4, the first with
	// the rejected rows.
	a := runOf("2024-01-01", 3, 4)
	a[0].Rejected = []schemas.ReasonCount{{Reason: missing, Count: 2}}
	a[0].RowCount += 2
	a[len(a)-1].RowCount += 2
	aEnd := a[len(a)-1]
	// Run B rejects 9 of its 10 rows: it fails TOO_MANY_REJECTED_ROWS.
	b := runOf("2024-01-02", 1, 1)
	b[0].Rejected = []schemas.ReasonCount{{Reason: missing, Count: 9}}
	b[0].RowCount += 9
	b[1].RowCount += 9
	// Run C's extraction failed.
	c := &schemas.MappedBatch{RunID: "run-c", ExtractID: "x-c", Project: "p", Ingestion: "ing", Date: "2024-01-03",
		Trigger: string(vocab.TriggerScheduled), Fence: 1, Kind: schemas.KindFailed, Type: "events",
		ErrorCategory: string(vocab.CategoryQuery), ErrorMessage: "relation does not exist"}
	// Another extraction of run A, as a redelivered request would stream it.
	again := runOf("2024-01-01", 3, 4)
	for _, m := range again {
		m.ExtractID = "x-again"
	}

	want := map[string]float64{
		`sluice_loader_runs_total{outcome="swapped"}`:                                 1,
		`sluice_loader_rows_loaded_total{ingestion="ing"}`:                            12,
		`sluice_loader_rows_rejected_total{ingestion="ing",reason="` + missing + `"}`: 2,
		`sluice_loader_duplicate_ends_total`:                                          0,
	}
	steps := []struct {
		name    string
		batches []*schemas.MappedBatch
		change  map[string]float64 // the effect counters that move, and by how much
	}{
		{"run A", a, nil},
		{"a redelivered batch", a[1:2], nil},
		{"a redelivered END", []*schemas.MappedBatch{aEnd}, map[string]float64{`sluice_loader_duplicate_ends_total`: 1}},
		{"another extraction of run A", again, map[string]float64{`sluice_loader_duplicate_ends_total`: 1}},
		{"run B", b, map[string]float64{`sluice_loader_runs_total{outcome="too_many_rejected"}`: 1,
			`sluice_loader_rows_rejected_total{ingestion="ing",reason="` + missing + `"}`: 9}},
		{"run B's END again", b[1:], map[string]float64{`sluice_loader_duplicate_ends_total`: 1}},
		{"run C", []*schemas.MappedBatch{c}, map[string]float64{`sluice_loader_runs_total{outcome="failed"}`: 1}},
		{"run C's FAILED again", []*schemas.MappedBatch{c}, map[string]float64{`sluice_loader_duplicate_ends_total`: 1}},
	}
	staged := 0.0
	for _, st := range steps {
		handle(t, st.batches...)
		for k, v := range st.change {
			want[k] += v
		}
		if got := effects(t, reg); !maps.Equal(got, want) {
			t.Fatalf("after %s: effect counters\n%s\nwant\n%s", st.name, show(got), show(want))
		}
		for _, m := range st.batches {
			staged += float64(len(m.Events))
		}
		// The work counter counts every batch it handled, redeliveries too.
		if got := testutil.ToFloat64(svc.rows.WithLabelValues("ing")); got != staged {
			t.Fatalf("after %s: sluice_loader_rows_total %v, want %v", st.name, got, staged)
		}
	}
}

// effects gathers the loader's effect counters from reg, one entry a series.
func effects(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		switch f.GetName() {
		case "sluice_loader_runs_total", "sluice_loader_rows_loaded_total", "sluice_loader_rows_rejected_total", "sluice_loader_duplicate_ends_total":
		default:
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			key := f.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			out[key] = m.GetCounter().GetValue()
		}
	}
	return out
}

func show(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s %g\n", k, m[k])
	}
	return b.String()
}
