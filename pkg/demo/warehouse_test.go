package demo

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	_ "github.com/duckdb/duckdb-go/v2"
	"github.com/jackc/pgx/v5/pgxpool"
)

// testWarehouse is a seeded test database, DuckDB or PostgreSQL.
type testWarehouse struct {
	name   string
	seed   func(Spec) (int64, error)
	alter  func(Spec, Alteration) (TableCounts, error)
	query  func(q string, args ...any) (rowScanner, func(), error)
	schema string
}

// rowScanner is what *sql.Rows and pgx.Rows share.
type rowScanner interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

func openDuckDB(tb testing.TB) *testWarehouse {
	tb.Helper()
	db, err := sql.Open("duckdb", filepath.Join(tb.TempDir(), "wh.duckdb"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	ctx := context.Background()
	return &testWarehouse{
		name:  "duckdb",
		seed:  func(s Spec) (int64, error) { return SeedDuckDB(ctx, db, s) },
		alter: func(s Spec, a Alteration) (TableCounts, error) { return AlterDuckDB(ctx, db, s, a) },
		query: func(q string, args ...any) (rowScanner, func(), error) {
			rows, err := db.QueryContext(ctx, q, args...)
			if err != nil {
				return nil, nil, err
			}
			return rows, func() { rows.Close() }, nil
		},
	}
}

// openPostgres connects to the local server and gives the test its own
// schema, dropped afterwards.
func openPostgres(tb testing.TB) *testWarehouse {
	tb.Helper()
	ctx := context.Background()
	dsn := os.Getenv("SLUICE_TEST_POSTGRES_DSN")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if os.Getenv("CI") == "" {
			tb.Skipf("PostgreSQL at %s unreachable (%v); set CI=true to make this a failure", dsn, err)
		}
		tb.Fatalf("PostgreSQL at %s unreachable: %v", dsn, err)
	}
	schema := fmt.Sprintf("demo_test_%d_%d", time.Now().UnixNano(), rand.Uint32())
	tb.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+quoteIdent(schema)+` CASCADE`)
		pool.Close()
	})
	return &testWarehouse{
		name:   "postgres",
		schema: schema,
		seed:   func(s Spec) (int64, error) { return SeedPostgres(ctx, pool, schema, s) },
		alter:  func(s Spec, a Alteration) (TableCounts, error) { return AlterPostgres(ctx, pool, schema, s, a) },
		query: func(q string, args ...any) (rowScanner, func(), error) {
			rows, err := pool.Query(ctx, q, args...)
			if err != nil {
				return nil, nil, err
			}
			return rows, rows.Close, nil
		},
	}
}

func warehouses(tb testing.TB) []*testWarehouse {
	return []*testWarehouse{openDuckDB(tb), openPostgres(tb)}
}

// readEvents returns a day's rows as the warehouse holds them, by event id.
func (w *testWarehouse) readEvents(tb testing.TB, s Spec, day civil.Date) map[string]Event {
	tb.Helper()
	rows, done, err := w.query(`SELECT event_id, ds, event_ts, event_time_s, event_name, event_value, user_id, device_id, company_id, country, platform, properties FROM `+
		qualified(w.schema, s.WithDefaults().EventsTable)+` WHERE ds = $1`, day.In(time.UTC))
	if err != nil {
		tb.Fatalf("%s: read events: %v", w.name, err)
	}
	defer done()
	out := map[string]Event{}
	for rows.Next() {
		var (
			ev                        Event
			ds, ts                    time.Time
			name, value, user, device sql.NullString
			company                   sql.NullInt64
		)
		if err := rows.Scan(&ev.EventID, &ds, &ts, &ev.TimeS, &name, &value, &user, &device, &company, &ev.Country, &ev.Platform, &ev.Properties); err != nil {
			tb.Fatalf("%s: scan event: %v", w.name, err)
		}
		ev.Date, ev.TS = civil.DateOf(ds), ts.UTC()
		ev.Name, ev.NameNull = name.String, !name.Valid
		ev.Value, ev.ValueNull = value.String, !value.Valid
		ev.UserID, ev.UserNull = user.String, !user.Valid
		ev.DeviceID, ev.DeviceNull = device.String, !device.Valid
		ev.CompanyID, ev.CompanyNull = company.Int64, !company.Valid
		ev.Reason = classifyEvent(&ev)
		out[ev.EventID] = ev
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func (w *testWarehouse) readMetrics(tb testing.TB, s Spec, day civil.Date) map[string]Metric {
	tb.Helper()
	rows, done, err := w.query(`SELECT ds, unit_id, id_type, metric_name, metric_value, numerator, denominator FROM `+
		qualified(w.schema, s.WithDefaults().MetricsTable)+` WHERE ds = $1`, day.In(time.UTC))
	if err != nil {
		tb.Fatalf("%s: read metrics: %v", w.name, err)
	}
	defer done()
	out := map[string]Metric{}
	for rows.Next() {
		var (
			m             Metric
			ds            time.Time
			val, num, den sql.NullFloat64
		)
		if err := rows.Scan(&ds, &m.UnitID, &m.IDType, &m.Name, &val, &num, &den); err != nil {
			tb.Fatalf("%s: scan metric: %v", w.name, err)
		}
		m.Date = civil.DateOf(ds)
		m.Value, m.ValueNull = val.Float64, !val.Valid
		m.Numerator, m.NumNull = num.Float64, !num.Valid
		m.Denominator, m.DenNull = den.Float64, !den.Valid
		m.Reason = classifyMetric(&m)
		out[metricKey(&m)] = m
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func metricKey(m *Metric) string { return m.UnitID + "|" + m.IDType + "|" + m.Name }

func countsOfEvents(rows map[string]Event) TableCounts {
	k := newCounter()
	for _, ev := range rows {
		k.add(ev.Reason)
	}
	return k.c
}

func countsOfMetrics(rows map[string]Metric) TableCounts {
	k := newCounter()
	for _, m := range rows {
		k.add(m.Reason)
	}
	return k.c
}

// Seeding puts exactly the generated rows in the warehouse, so Expected
// reconciles with what a query reads back, value for value.
func TestSeedMatchesGeneratorAndExpected(t *testing.T) {
	t.Parallel()
	for _, w := range warehouses(t) {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			s := testSpec()
			n, err := w.seed(s)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(s.Days * (s.EventsPerDay + s.MetricsPerDay)); n != want {
				t.Fatalf("seeded %d rows, want %d", n, want)
			}
			// Seeding again replaces the days instead of doubling them.
			if _, err := w.seed(s); err != nil {
				t.Fatal(err)
			}
			exp := Expected(s)
			for _, day := range s.Dates() {
				evs, ms := w.readEvents(t, s, day), w.readMetrics(t, s, day)
				if got := countsOfEvents(evs); !reflect.DeepEqual(got, exp[day].Events) {
					t.Errorf("%s events: warehouse holds %+v, Expected says %+v", day, got, exp[day].Events)
				}
				if got := countsOfMetrics(ms); !reflect.DeepEqual(got, exp[day].Metrics) {
					t.Errorf("%s metrics: warehouse holds %+v, Expected says %+v", day, got, exp[day].Metrics)
				}
				_ = Events(s, day, func(ev *Event) error {
					if got := evs[ev.EventID]; !reflect.DeepEqual(got, *ev) {
						t.Fatalf("%s event %s:\nwarehouse %+v\ngenerated %+v", day, ev.EventID, got, *ev)
					}
					return nil
				})
				_ = Metrics(s, day, func(m *Metric) error {
					if got := ms[metricKey(m)]; !reflect.DeepEqual(got, *m) {
						t.Fatalf("%s metric %s:\nwarehouse %+v\ngenerated %+v", day, metricKey(m), got, *m)
					}
					return nil
				})
			}
		})
	}
}

func TestAlterChangesTheRequestedShare(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		a       Alteration
		rows    func(before int64) int64
		changed func(before int64) int // rows that differ from the generated ones, added rows excluded
	}{
		{"add 10% events", Alteration{Table: TableEvents, AddShare: 0.10},
			func(b int64) int64 { return b + round(b, 0.10) }, func(int64) int { return 0 }},
		{"delete 7% events", Alteration{Table: TableEvents, DeleteShare: 0.07},
			func(b int64) int64 { return b - round(b, 0.07) }, func(int64) int { return 0 }},
		{"change 20% events", Alteration{Table: TableEvents, ChangeShare: 0.20},
			func(b int64) int64 { return b }, func(b int64) int { return int(round(b, 0.20)) }},
		{"add 3% metrics", Alteration{Table: TableMetrics, AddShare: 0.03},
			func(b int64) int64 { return b + round(b, 0.03) }, func(int64) int { return 0 }},
		{"delete 6% and change 10% metrics", Alteration{Table: TableMetrics, DeleteShare: 0.06, ChangeShare: 0.10},
			func(b int64) int64 { return b - round(b, 0.06) }, func(b int64) int { return int(round(b, 0.10)) }},
	}
	for _, w := range warehouses(t) {
		t.Run(w.name, func(t *testing.T) {
			// Each case alters its own day, so cases do not see each other.
			s := testSpec()
			s.Days = len(cases)
			if _, err := w.seed(s); err != nil {
				t.Fatal(err)
			}
			exp := Expected(s)
			for i, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					day := s.Dates()[i]
					tc.a.Day = day
					want := exp[day].Metrics
					if tc.a.Table == TableEvents {
						want = exp[day].Events
					}
					got, err := w.alter(s, tc.a)
					if err != nil {
						t.Fatal(err)
					}
					if got.Rows != tc.rows(want.Rows) || !reflect.DeepEqual(got.Rejected, want.Rejected) {
						t.Fatalf("alter returned %+v, want %d rows and rejected %v", got, tc.rows(want.Rows), want.Rejected)
					}
					var held TableCounts
					changed := 0
					if tc.a.Table == TableEvents {
						evs := w.readEvents(t, s, day)
						held = countsOfEvents(evs)
						_ = Events(s, day, func(ev *Event) error {
							if got, ok := evs[ev.EventID]; ok && !reflect.DeepEqual(got, *ev) {
								changed++
							}
							return nil
						})
					} else {
						ms := w.readMetrics(t, s, day)
						held = countsOfMetrics(ms)
						_ = Metrics(s, day, func(m *Metric) error {
							if got, ok := ms[metricKey(m)]; ok && !reflect.DeepEqual(got, *m) {
								changed++
							}
							return nil
						})
					}
					if !reflect.DeepEqual(held, got) {
						t.Fatalf("warehouse holds %+v, alter returned %+v", held, got)
					}
					if want := tc.changed(want.Rows); changed != want {
						t.Fatalf("%d rows changed values, want %d", changed, want)
					}
				})
			}
			// A second round adds fresh rows, not copies of the first.
			day := s.Dates()[0]
			before := exp[day].Events.Rows + round(exp[day].Events.Rows, 0.10)
			got, err := w.alter(s, Alteration{Table: TableEvents, Day: day, AddShare: 0.05, Round: 1})
			if err != nil {
				t.Fatal(err)
			}
			if held := int64(len(w.readEvents(t, s, day))); got.Rows != before+round(before, 0.05) || held != got.Rows {
				t.Fatalf("second add: %d rows (%d distinct ids), want %d", got.Rows, held, before+round(before, 0.05))
			}
		})
	}
}

func round(n int64, share float64) int64 { return int64(math.Round(float64(n) * share)) }

// BenchmarkSeedDuckDB seeds one bench day of events (the default scripts/bench
// size is 2M rows; -benchtime=1x with SLUICE_BENCH_ROWS to match it).
func BenchmarkSeedDuckDB(b *testing.B) {
	rows := 200_000
	if v := os.Getenv("SLUICE_BENCH_ROWS"); v != "" {
		if _, err := fmt.Sscan(v, &rows); err != nil {
			b.Fatal(err)
		}
	}
	db, err := sql.Open("duckdb", filepath.Join(b.TempDir(), "bench.duckdb"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s := Spec{Days: 1, LastDay: civil.Date{Year: 2024, Month: 5, Day: 1}, EventsPerDay: rows, BadRowEvery: 1000, Seed: 1}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := SeedDuckDB(ctx, db, s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkGenerateEvents is the generator alone, without a database.
func BenchmarkGenerateEvents(b *testing.B) {
	s := Spec{Days: 1, LastDay: civil.Date{Year: 2024, Month: 5, Day: 1}, EventsPerDay: 100_000, BadRowEvery: 1000, Seed: 1}
	b.ReportAllocs()
	for b.Loop() {
		_ = Events(s, s.LastDay, func(*Event) error { return nil })
	}
	b.ReportMetric(float64(s.EventsPerDay)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func TestSeedDuckDBFileLeavesTheFileReadable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "demo.duckdb")
	s := DefaultSpec(civil.Date{Year: 2025, Month: 2, Day: 1})
	s.EventsPerDay, s.MetricsPerDay = 700, 300
	if _, err := SeedDuckDBFile(context.Background(), path, s); err != nil {
		t.Fatal(err)
	}
	// The file is closed: a second instance can open it.
	db, err := sql.Open("duckdb", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exp := Expected(s)
	for _, d := range s.Dates() {
		var events, metrics int64
		if err := db.QueryRow(`SELECT (SELECT count(*) FROM events WHERE ds = $1), (SELECT count(*) FROM metrics WHERE ds = $1)`, d.In(time.UTC)).Scan(&events, &metrics); err != nil {
			t.Fatal(err)
		}
		if events != exp[d].Events.Rows || metrics != exp[d].Metrics.Rows {
			t.Errorf("%s: %d events and %d metrics, want %d and %d", d, events, metrics, exp[d].Events.Rows, exp[d].Metrics.Rows)
		}
	}
}

// The demo ingestions' queries, with the day bound as $1, return exactly
// the day's rows in either warehouse.
func TestConfigQueriesReturnTheDay(t *testing.T) {
	t.Parallel()
	for _, w := range warehouses(t) {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			s := testSpec()
			if _, err := w.seed(s); err != nil {
				t.Fatal(err)
			}
			opts := ConfigOptions{APIKey: "k"}
			if w.name == "postgres" {
				opts.Warehouse, opts.Postgres = WarehousePostgres, PostgresWarehouse{DSNEnv: "X", Schema: w.schema}
			}
			exp := Expected(s)
			for _, in := range Config(opts).Ingestions {
				for _, day := range s.Dates() {
					rows, done, err := w.query(`SELECT count(*) FROM (`+in.Query+`) q`, day.In(time.UTC))
					if err != nil {
						t.Fatalf("%s: %v", in.Name, err)
					}
					var n int64
					for rows.Next() {
						if err := rows.Scan(&n); err != nil {
							t.Fatal(err)
						}
					}
					done()
					want := exp[day].Events.Rows
					if in.Type == "metrics" {
						want = exp[day].Metrics.Rows
					}
					if n != want {
						t.Errorf("%s on %s: query returns %d rows, want %d", in.Name, day, n, want)
					}
				}
			}
		})
	}
}

// BenchmarkSeedPostgres copies one bench day of events into PostgreSQL.
func BenchmarkSeedPostgres(b *testing.B) {
	rows := 200_000
	if v := os.Getenv("SLUICE_BENCH_ROWS"); v != "" {
		if _, err := fmt.Sscan(v, &rows); err != nil {
			b.Fatal(err)
		}
	}
	w := openPostgres(b)
	s := BenchSpec(civil.Date{Year: 2024, Month: 5, Day: 1}, rows)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := w.seed(s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
