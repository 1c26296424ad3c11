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

// mainTables are the usage ledger and runs as the store of commit cd14462
// created them: usage keyed by extraction, runs without a notification
// state.
const mainTables = `
CREATE TABLE usage (
	xid         BIGINT NOT NULL,
	project     VARCHAR NOT NULL,
	ingestion   VARCHAR NOT NULL,
	ds          DATE NOT NULL,
	trigger     VARCHAR NOT NULL,
	run_id      VARCHAR NOT NULL,
	rows_loaded BIGINT NOT NULL,
	loaded_at   TIMESTAMPTZ NOT NULL
);
CREATE TABLE runs (
	project        VARCHAR NOT NULL,
	run_id         VARCHAR NOT NULL,
	ingestion      VARCHAR NOT NULL,
	type           VARCHAR NOT NULL,
	ds             VARCHAR NOT NULL,
	trigger        VARCHAR NOT NULL,
	fence          BIGINT NOT NULL,
	status         VARCHAR NOT NULL,
	extract_id     VARCHAR NOT NULL,
	extracted      BIGINT NOT NULL,
	mapped         BIGINT NOT NULL,
	rejected       VARCHAR NOT NULL,
	error_category VARCHAR NOT NULL,
	error_message  VARCHAR NOT NULL,
	message        VARCHAR NOT NULL,
	history        VARCHAR NOT NULL,
	created_at     TIMESTAMPTZ NOT NULL,
	updated_at     TIMESTAMPTZ NOT NULL
);
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
	if _, err := s.db.ExecContext(ctx, mainTables); err != nil {
		t.Fatal(err)
	}
	storetest.CheckUpgrade(t, s)
}
