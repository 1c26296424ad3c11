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
