package postgres

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
)

func testDSN() string {
	if dsn := os.Getenv("SLUICE_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// requirePostgres skips when the server is unreachable, unless CI is set.
func requirePostgres(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testDSN())
	if err == nil {
		conn.Close(ctx)
		return
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("postgres at %s unreachable under CI: %v", testDSN(), err)
	}
	tb.Skipf("postgres at %s unreachable (set CI to fail instead): %v", testDSN(), err)
}

var schemaSeq atomic.Int64

// factory opens stores in a schema per test; the same test gets the same
// schema again (the crash test reopens), dropped when the test ends.
func factory() storetest.NewStore {
	var names sync.Map
	return func(t testing.TB) store.Store {
		t.Helper()
		fresh := fmt.Sprintf("storetest_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, schemaSeq.Add(1))
		name, loaded := names.LoadOrStore(t, fresh)
		ctx := context.Background()
		if !loaded {
			t.Cleanup(func() {
				conn, err := pgx.Connect(ctx, testDSN())
				if err != nil {
					t.Errorf("drop schema %s: %v", name, err)
					return
				}
				defer conn.Close(ctx)
				if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{name.(string)}.Sanitize()+` CASCADE`); err != nil {
					t.Errorf("drop schema %s: %v", name, err)
				}
			})
		}
		s, err := Open(ctx, testDSN(), Options{Schema: name.(string)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func TestStore(t *testing.T) {
	requirePostgres(t)
	storetest.Run(t, factory())
}

func TestMigrateIsIdempotent(t *testing.T) {
	requirePostgres(t)
	s := factory()(t)
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	load := storetest.Load{ExtractID: "x1", Rows: 3}
	if err := s.StageBatches(context.Background(), load.Batches()); err != nil {
		t.Fatal(err)
	}
	if out, err := s.CompleteRun(context.Background(), load.End()); err != nil || out != store.Swapped {
		t.Fatalf("complete after two migrations: %v, %v", out, err)
	}
}

func BenchmarkPostgresStageAndSwap(b *testing.B) {
	requirePostgres(b)
	b.Run("reload", func(b *testing.B) {
		storetest.BenchStageAndSwap(b, factory()(b), 200_000, 2000, 10, true)
	})
	b.Run("first-load", func(b *testing.B) {
		storetest.BenchStageAndSwap(b, factory()(b), 200_000, 2000, 10, false)
	})
}

// BenchmarkPostgresPlainCopy is the yardstick for BenchmarkPostgresStageAndSwap:
// the same rows, the same binary encoder, one COPY into a bare table with
// no index, no bookkeeping and no swap.
func BenchmarkPostgresPlainCopy(b *testing.B) {
	requirePostgres(b)
	s := factory()(b).(*Store)
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, s.q(`CREATE TABLE {s}.bare (LIKE {s}.events)`)); err != nil {
		b.Fatal(err)
	}
	l := storetest.Load{ExtractID: "bench", Rows: 200_000, PerBatch: 2000}
	bs := l.Batches()
	xids := map[string]int64{"bench": 1}
	b.ReportAllocs()
	for b.Loop() {
		src, err := newCopySource(bs, xids, false)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.pool.Exec(ctx, s.q(`TRUNCATE {s}.bare`)); err != nil {
			b.Fatal(err)
		}
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		_, err = conn.Conn().PgConn().CopyFrom(ctx, src, s.q(`COPY {s}.bare
			(xid, project, ingestion, ds, position, event_name, event_value, time, unit_ids, metadata)
			FROM STDIN (FORMAT binary)`))
		conn.Release()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(l.Rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// mainTables turns a migrated store back into what the code of commit
// cd14462 created (usage keyed by extraction, runs without a notification
// state, no dead-letter outbox) and fills it as that code did.
const mainTables = `
DROP INDEX %[1]s.usage_run;
ALTER TABLE %[1]s.usage ADD PRIMARY KEY (xid);
DROP INDEX %[1]s.runs_notify_due;
ALTER TABLE %[1]s.runs DROP COLUMN notify_state, DROP COLUMN notify_owner, DROP COLUMN notify_until,
	DROP COLUMN notified_at;
DROP INDEX %[1]s.runs_dead_letters_due;
ALTER TABLE %[1]s.runs DROP COLUMN dead_letters_state, DROP COLUMN dead_letters_at;
DROP TABLE %[1]s.rejected_rows;
-- run r1 was swapped in twice (the bug of issue 12), r2 once.
INSERT INTO %[1]s.usage VALUES
	(1, 'p1', 'ev', '2024-02-01', 'scheduled', 'r1', 50000, '2024-02-02 10:00:00+00'),
	(2, 'p1', 'ev', '2024-02-01', 'scheduled', 'r1', 50000, '2024-02-02 10:05:00+00'),
	(3, 'p1', 'ev', '2024-02-02', 'scheduled', 'r2', 7, '2024-02-03 10:00:00+00');
INSERT INTO %[1]s.runs VALUES ('p1', 'r1', 'ev', 'events', '2024-02-01', 'scheduled', 1, 'IMPORT_SUCCESSFUL', 'x2',
	50000, 50000, '{}', '', '', '', '[{"status":"IMPORT_SUCCESSFUL","timestamp":"2024-02-02T10:00:00Z"}]',
	'2024-02-02 09:00:00+00', '2024-02-02 10:05:00+00');
`

func TestMigrateUpgradesMainStore(t *testing.T) {
	requirePostgres(t)
	ctx := context.Background()
	name := fmt.Sprintf("storetest_main_%d_%d", os.Getpid(), schemaSeq.Add(1))
	conn, err := pgx.Connect(ctx, testDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+name+` CASCADE`) })
	s, err := Open(ctx, testDSN(), Options{Schema: name})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(mainTables, name)); err != nil {
		t.Fatal(err)
	}
	storetest.CheckUpgrade(t, s)
}
