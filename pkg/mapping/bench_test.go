package mapping

import (
	"fmt"
	"testing"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/schemas"
)

const benchRows = 2000

func benchEvents(tb testing.TB) *schemas.RawBatch {
	names, ts, users, devices, values, plans, countries, metas := make([]any, benchRows), make([]any, benchRows), make([]any, benchRows),
		make([]any, benchRows), make([]any, benchRows), make([]any, benchRows), make([]any, benchRows), make([]any, benchRows)
	for i := range benchRows {
		names[i] = fmt.Sprintf("event_%d", i%20)
		ts[i] = noon + i
		users[i] = int64(100000 + i)
		devices[i] = fmt.Sprintf("device-%08x", i*2654435761)
		values[i] = float64(i%100) / 4
		plans[i] = []string{"free", "pro", "team"}[i%3]
		if i%4 == 0 {
			countries[i] = nil
		} else {
			countries[i] = "NZ"
		}
		metas[i] = fmt.Sprintf(`{"page": "/item/%d", "ab": {"variant": "b"}, "score": %d, "ok": true}`, i, i%7)
	}
	return rawBatch(tb,
		col(tb, "name", schemas.TypeString, names...),
		col(tb, "ts", schemas.TypeLong, ts...),
		col(tb, "user_id", schemas.TypeLong, users...),
		col(tb, "device_id", schemas.TypeString, devices...),
		col(tb, "value", schemas.TypeDouble, values...),
		col(tb, "plan", schemas.TypeString, plans...),
		col(tb, "country", schemas.TypeString, countries...),
		col(tb, "meta", schemas.TypeJSON, metas...),
	)
}

func benchMetrics(tb testing.TB) *schemas.RawBatch {
	units, types, dates, names, values, nums, dens := make([]any, benchRows), make([]any, benchRows), make([]any, benchRows),
		make([]any, benchRows), make([]any, benchRows), make([]any, benchRows), make([]any, benchRows)
	for i := range benchRows {
		units[i] = fmt.Sprintf("user-%d", i)
		types[i] = testIDTypes[i%2]
		dates[i] = civil.Date{Year: 2024, Month: 3, Day: 10}
		names[i] = fmt.Sprintf("metric_%d", i%10)
		values[i] = float64(i) * 1.5
		if i%2 == 0 {
			nums[i], dens[i] = float64(i), float64(i+1)
		}
	}
	return rawBatch(tb,
		col(tb, "unit", schemas.TypeString, units...),
		col(tb, "id_type", schemas.TypeString, types...),
		col(tb, "ds", schemas.TypeDate, dates...),
		col(tb, "metric", schemas.TypeString, names...),
		col(tb, "value", schemas.TypeDouble, values...),
		col(tb, "num", schemas.TypeDouble, nums...),
		col(tb, "den", schemas.TypeDouble, dens...),
	)
}

func BenchmarkMapEvents(b *testing.B) {
	raw := benchEvents(b)
	benchMap(b, raw, func() (*Mapper, error) { return New(eventsIngestion(), testIDTypes) })
}

func BenchmarkMapMetrics(b *testing.B) {
	raw := benchMetrics(b)
	benchMap(b, raw, func() (*Mapper, error) { return New(metricsIngestion(), testIDTypes) })
}

func benchMap(b *testing.B, raw *schemas.RawBatch, newMapper func() (*Mapper, error)) {
	m, err := newMapper()
	if err != nil {
		b.Fatal(err)
	}
	var out schemas.MappedBatch
	m.Map(raw, &out, nil) // warm the reused buffers, as a running mapper has
	if len(out.Rejected) != 0 {
		b.Fatalf("benchmark rows rejected: %+v", out.Rejected)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m.Map(raw, &out, nil)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRows), "ns/row")
	b.ReportMetric(float64(testing.AllocsPerRun(1, func() { m.Map(raw, &out, nil) }))/benchRows, "allocs/row")
}

// BenchmarkMetadataJSON is metadataJSONOf alone on demo-like rows (pkg/demo
// properties next to two fixed columns), and, for comparison on a busy
// machine, the implementation before the single-pass rewrite.
func BenchmarkMetadataJSON(b *testing.B) {
	const cell = `{"session_id":"s_1x9kq2m","referrer":"google","utm":{"campaign":"spring_sale","medium":"cpc"},"is_mobile":true,` +
		`"cart":{"items":3,"currency":"NZD"},"coupon":null,"tags":["ios","NZ"],"screen_width":1280}`
	cols := []schemas.Column{
		fuzzColumn("plan", schemas.TypeString, false, "pro", "pro"),
		fuzzColumn("country", schemas.TypeString, false, "NZ", "NZ"),
		fuzzColumn("meta", schemas.TypeJSON, false, cell, cell),
	}
	m := newMetadataMapper(b, cols)
	old := &oracle{Mapper: newMetadataMapper(b, cols)}
	b.Run("single-pass", func(b *testing.B) {
		for b.Loop() {
			if _, f := m.metadataJSONOf(0); f.r != rNone {
				b.Fatal(f.detail)
			}
		}
	})
	b.Run("before", func(b *testing.B) {
		for b.Loop() {
			if _, f := oracleMetadataJSONOf(old, 0); f.r != rNone {
				b.Fatal(f.detail)
			}
		}
	})
}
