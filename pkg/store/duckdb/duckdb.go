// Package duckdb is the embedded event store, in one DuckDB file.
//
// It keeps the PostgreSQL store's design: rows are appended once (DuckDB's
// Appender) into events or metrics tagged with their extraction (xid), and
// a day's visible rows are those of the days table's visible_xid, so a swap
// is an UPDATE of that pointer in the transaction that writes the day, the
// run and the usage ledger (decided by store.DaySwap; this package is its
// SQL, store.SwapTx). Readers run single statements against DuckDB's
// snapshot isolation and see one extraction or the other, never a mix.
// DuckDB allows one writing process, and its optimistic concurrency aborts
// conflicting writers, so the store serialises its write transactions.
package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	duckdbdrv "github.com/duckdb/duckdb-go/v2"

	"github.com/sluicehq/sluice/pkg/store"
)

// Options configures a Store.
type Options struct {
	// Now is the clock for times the caller does not give; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Store is the DuckDB event store. Safe for concurrent use in one process.
type Store struct {
	store.Writer // CompleteRun, UpdateRun, RecordWarehouseCount over transact

	db  *sql.DB
	mu  sync.Mutex // one write transaction at a time
	now func() time.Time
	log *slog.Logger
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store in the DuckDB file at path.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	db, err := sql.Open("duckdb", path)
	if err != nil {
		return nil, fmt.Errorf("open duckdb store %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open duckdb store %s: %w", path, err)
	}
	s := &Store{db: db, now: opts.Now, log: opts.Logger}
	s.Writer = store.Writer{Transact: s.transact, Now: opts.Now}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close duckdb store: %w", err)
	}
	return nil
}

const ddl = `
CREATE SEQUENCE IF NOT EXISTS xid_seq;
CREATE TABLE IF NOT EXISTS extractions (
	xid        BIGINT NOT NULL,
	extract_id VARCHAR NOT NULL,
	run_id     VARCHAR NOT NULL,
	project    VARCHAR NOT NULL,
	ingestion  VARCHAR NOT NULL,
	ds         DATE NOT NULL,
	type       VARCHAR NOT NULL,
	fence      BIGINT NOT NULL,
	state      VARCHAR NOT NULL, -- staging, visible, replaced, stale, failed
	created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
	xid       BIGINT NOT NULL,
	seq       BIGINT NOT NULL,
	row_count BIGINT NOT NULL,
	mapped    BIGINT NOT NULL,
	rejected  VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
	xid         BIGINT NOT NULL,
	project     VARCHAR NOT NULL,
	ingestion   VARCHAR NOT NULL,
	ds          DATE NOT NULL,
	position    BIGINT NOT NULL,
	event_name  VARCHAR NOT NULL,
	event_value VARCHAR NOT NULL,
	time        TIMESTAMPTZ NOT NULL,
	unit_ids    VARCHAR NOT NULL, -- JSON object id_type -> value
	metadata    VARCHAR NOT NULL  -- JSON object
);
CREATE TABLE IF NOT EXISTS metrics (
	xid          BIGINT NOT NULL,
	project      VARCHAR NOT NULL,
	ingestion    VARCHAR NOT NULL,
	ds           DATE NOT NULL,
	position     BIGINT NOT NULL,
	unit_id      VARCHAR NOT NULL,
	id_type      VARCHAR NOT NULL,
	metric_name  VARCHAR NOT NULL,
	metric_value DOUBLE NOT NULL,
	is_ratio     BOOLEAN NOT NULL,
	numerator    DOUBLE NOT NULL,
	denominator  DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS days (
	project               VARCHAR NOT NULL,
	ingestion             VARCHAR NOT NULL,
	ds                    DATE NOT NULL,
	type                  VARCHAR NOT NULL,
	status                VARCHAR NOT NULL,
	message               VARCHAR NOT NULL,
	error_category        VARCHAR NOT NULL,
	error_message         VARCHAR NOT NULL,
	visible_run_id        VARCHAR NOT NULL,
	visible_xid           BIGINT,
	fence                 BIGINT NOT NULL,
	extracted             BIGINT NOT NULL,
	rows_loaded           BIGINT NOT NULL,
	rejected              VARCHAR NOT NULL,
	first_loaded_at       TIMESTAMPTZ,
	last_loaded_at        TIMESTAMPTZ,
	warehouse_count       BIGINT,
	warehouse_at          TIMESTAMPTZ,
	fingerprint           VARCHAR NOT NULL,
	warehouse_fingerprint VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
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
CREATE TABLE IF NOT EXISTS usage (
	xid         BIGINT NOT NULL,
	project     VARCHAR NOT NULL,
	ingestion   VARCHAR NOT NULL,
	ds          DATE NOT NULL,
	trigger     VARCHAR NOT NULL,
	run_id      VARCHAR NOT NULL,
	rows_loaded BIGINT NOT NULL,
	loaded_at   TIMESTAMPTZ NOT NULL
);
-- Rejected rows, staged with their batch's rows, until their run's dead
-- letters are published (see store.Store); keyed (project, extract_id,
-- position), which the batch bookkeeping keeps unique.
CREATE TABLE IF NOT EXISTS rejected_rows (
	project    VARCHAR NOT NULL,
	extract_id VARCHAR NOT NULL,
	position   BIGINT NOT NULL,
	reason     VARCHAR NOT NULL,
	detail     VARCHAR NOT NULL,
	row_values VARCHAR NOT NULL -- JSON object column -> text
);
CREATE OR REPLACE VIEW visible_events AS
	SELECT e.project, e.ingestion, e.ds, e.position, e.event_name, e.event_value,
	       e.time, e.unit_ids, e.metadata, d.visible_run_id AS run_id
	FROM days d JOIN events e ON e.xid = d.visible_xid;
CREATE OR REPLACE VIEW visible_metrics AS
	SELECT m.project, m.ingestion, m.ds, m.position, m.unit_id, m.id_type, m.metric_name,
	       m.metric_value, m.is_ratio, m.numerator, m.denominator, d.visible_run_id AS run_id
	FROM days d JOIN metrics m ON m.xid = d.visible_xid;
`

// upgrades bring a store created by older code to ddl's shape, each step
// in a transaction of its own (DuckDB cannot index rows deleted in the
// same transaction). Every step is idempotent.
var upgrades = []string{
	// The usage ledger holds one row per run that became visible; stores
	// created before it was keyed by run keep each run's first row.
	`DELETE FROM usage WHERE rowid IN (SELECT rowid FROM (
		SELECT rowid, row_number() OVER (PARTITION BY project, run_id ORDER BY xid) AS n FROM usage) WHERE n > 1)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS usage_run ON usage (project, run_id)`,
	// The notification outbox (see store.Store): notify_state is 'due'
	// from a run's terminal transition until MarkNotified makes it
	// 'sent'; runs that ended before the outbox existed keep ''.
	`ALTER TABLE runs ADD COLUMN IF NOT EXISTS notify_state VARCHAR DEFAULT ''`,
	`ALTER TABLE runs ADD COLUMN IF NOT EXISTS notify_owner VARCHAR DEFAULT ''`,
	`ALTER TABLE runs ADD COLUMN IF NOT EXISTS notify_until TIMESTAMPTZ`,
	`ALTER TABLE runs ADD COLUMN IF NOT EXISTS notified_at TIMESTAMPTZ`,
	// The dead-letter outbox (see store.Store): dead_letters_state is
	// 'due' from the decision of a run with rejected rows until
	// MarkDeadLettersPublished makes it 'published'; runs decided before
	// the outbox existed keep ''.
	`ALTER TABLE runs ADD COLUMN IF NOT EXISTS dead_letters_state VARCHAR DEFAULT ''`,
	`ALTER TABLE runs ADD COLUMN IF NOT EXISTS dead_letters_at TIMESTAMPTZ`,
}

// Migrate creates the tables and views and upgrades older stores.
func (s *Store) Migrate(ctx context.Context) error {
	for _, stmt := range append([]string{ddl + checkpointDDL}, upgrades...) {
		err := s.write(ctx, func(c *sql.Conn) error {
			_, err := c.ExecContext(ctx, stmt)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate duckdb store: %w", err)
		}
	}
	return nil
}

// errNothing rolls back a transaction that must change nothing.
var errNothing = errors.New("nothing to change")

// write runs fn in a write transaction on one connection, one at a time.
// fn returning errNothing rolls back and write returns nil.
func (s *Store) write(ctx context.Context, fn func(c *sql.Conn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return err
	}
	if err := fn(c); err != nil {
		// A cancelled ctx must not keep the rollback from running.
		if _, rbErr := c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rbErr != nil {
			return errors.Join(err, rbErr)
		}
		if errors.Is(err, errNothing) {
			return nil
		}
		return err
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		_, _ = c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return err
	}
	return nil
}

// appender runs fn with an Appender on table inside c's transaction.
func appender(c *sql.Conn, table string, fn func(a *duckdbdrv.Appender) error) error {
	return c.Raw(func(dc any) error {
		conn, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("append to %s: driver connection is %T", table, dc)
		}
		a, err := duckdbdrv.NewAppenderFromConn(conn, "", table)
		if err != nil {
			return fmt.Errorf("append to %s: %w", table, err)
		}
		if err := fn(a); err != nil {
			_ = a.Close()
			return fmt.Errorf("append to %s: %w", table, err)
		}
		if err := a.Close(); err != nil {
			return fmt.Errorf("append to %s: %w", table, err)
		}
		return nil
	})
}
