package duckdb

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
)

// factory opens stores in a file per test; the same test gets the same
// file again (the crash test reopens).
func factory() storetest.NewStore {
	var paths sync.Map
	return func(t testing.TB) store.Store {
		t.Helper()
		p, _ := paths.LoadOrStore(t, filepath.Join(t.TempDir(), "store.duckdb"))
		s, err := Open(context.Background(), p.(string), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func TestStore(t *testing.T) {
	storetest.Run(t, factory())
}

func BenchmarkDuckDBStageAndSwap(b *testing.B) {
	b.Run("reload", func(b *testing.B) {
		storetest.BenchStageAndSwap(b, factory()(b), 200_000, 2000, 10, true)
	})
	b.Run("first-load", func(b *testing.B) {
		storetest.BenchStageAndSwap(b, factory()(b), 200_000, 2000, 10, false)
	})
}

// mainTables turns a migrated store back into what the code of commit
// cd14462 created (usage keyed by extraction, runs without a notification
// state, no dead-letter outbox) and fills it as that code did.
const mainTables = `
DROP INDEX usage_run;
ALTER TABLE runs DROP COLUMN notify_state;
ALTER TABLE runs DROP COLUMN notify_owner;
ALTER TABLE runs DROP COLUMN notify_until;
ALTER TABLE runs DROP COLUMN notified_at;
ALTER TABLE runs DROP COLUMN dead_letters_state;
ALTER TABLE runs DROP COLUMN dead_letters_at;
DROP TABLE rejected_rows;
-- run r1 was swapped in twice (the bug of issue 12), r2 once.
INSERT INTO usage VALUES
	(1, 'p1', 'ev', '2024-02-01', 'scheduled', 'r1', 50000, '2024-02-02 10:00:00+00'),
	(2, 'p1', 'ev', '2024-02-01', 'scheduled', 'r1', 50000, '2024-02-02 10:05:00+00'),
	(3, 'p1', 'ev', '2024-02-02', 'scheduled', 'r2', 7, '2024-02-03 10:00:00+00');
INSERT INTO runs VALUES ('p1', 'r1', 'ev', 'events', '2024-02-01', 'scheduled', 1, 'IMPORT_SUCCESSFUL', 'x2',
	50000, 50000, '{}', '', '', '', '[{"status":"IMPORT_SUCCESSFUL","timestamp":"2024-02-02T10:00:00Z"}]',
	'2024-02-02 09:00:00+00', '2024-02-02 10:05:00+00');
`

func TestMigrateUpgradesMainStore(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "store.duckdb"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, mainTables); err != nil {
		t.Fatal(err)
	}
	storetest.CheckUpgrade(t, s)
}
