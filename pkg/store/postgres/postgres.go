// Package postgres is the production event store on PostgreSQL.
//
// Rows are written once, by binary COPY, into events or metrics tagged with
// their extraction's id (xid). A day's visible rows are those whose xid is
// the day's visible_xid in the days table: a swap is one UPDATE of that
// pointer, in the transaction that also writes the day's status and counts,
// the run and the usage ledger. Every read goes through one statement that
// joins on the pointer (the visible_events and visible_metrics views), so a
// reader sees the old extraction or the new one, never a mix. Rows of
// replaced, stale, failed and duplicate extractions are deleted in the
// same transaction. Rejected rows wait in rejected_rows, keyed by their
// extraction, until their run's dead letters are published. The decisions are store.DaySwap's; this package is
// their SQL (store.SwapTx).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/pkg/store"
)

// Options configures a Store.
type Options struct {
	// Schema holds every table and view; default "sluice".
	Schema string
	// Now is the clock for times the caller does not give; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Store is the PostgreSQL event store. Safe for concurrent use.
type Store struct {
	store.Writer // CompleteRun, UpdateRun, RecordWarehouseCount over transact

	pool    *pgxpool.Pool
	ownPool bool
	schema  string // quoted identifier
	now     func() time.Time
	log     *slog.Logger
}

var _ store.Store = (*Store)(nil)

// New returns a store on pool, which the caller keeps owning.
func New(pool *pgxpool.Pool, opts Options) *Store {
	if opts.Schema == "" {
		opts.Schema = "sluice"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{
		pool:   pool,
		schema: pgx.Identifier{opts.Schema}.Sanitize(),
		now:    opts.Now,
		log:    opts.Logger,
	}
	s.Writer = store.Writer{Transact: s.transact, Now: opts.Now}
	return s
}

// Open connects to dsn and returns a store that closes its pool on Close.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s := New(pool, opts)
	s.ownPool = true
	return s, nil
}

// Close closes the pool when the store opened it.
func (s *Store) Close() error {
	if s.ownPool {
		s.pool.Close()
	}
	return nil
}

// q replaces the schema placeholder "{s}." in a statement.
func (s *Store) q(sql string) string { return strings.ReplaceAll(sql, "{s}.", s.schema+".") }

const ddl = `
CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE IF NOT EXISTS {s}.extractions (
	xid        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	extract_id text NOT NULL UNIQUE,
	run_id     text NOT NULL,
	project    text NOT NULL,
	ingestion  text NOT NULL,
	ds         date NOT NULL,
	type       text NOT NULL,
	fence      bigint NOT NULL,
	-- staging, visible, replaced (a later swap won), stale, failed
	state      text NOT NULL DEFAULT 'staging',
	created_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS extractions_day ON {s}.extractions (project, ingestion, ds);
-- One row per staged batch, kept after completion so a redelivered batch is
-- recognised and skipped.
CREATE TABLE IF NOT EXISTS {s}.batches (
	xid       bigint NOT NULL,
	seq       bigint NOT NULL,
	row_count bigint NOT NULL,
	mapped    bigint NOT NULL,
	rejected  jsonb NOT NULL,
	PRIMARY KEY (xid, seq)
);
CREATE TABLE IF NOT EXISTS {s}.events (
	xid         bigint NOT NULL,
	project     text NOT NULL,
	ingestion   text NOT NULL,
	ds          date NOT NULL,
	position    bigint NOT NULL,
	event_name  text NOT NULL,
	event_value text NOT NULL,
	time        timestamptz NOT NULL,
	unit_ids    jsonb NOT NULL,
	metadata    jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS events_xid ON {s}.events (xid, position);
CREATE TABLE IF NOT EXISTS {s}.metrics (
	xid          bigint NOT NULL,
	project      text NOT NULL,
	ingestion    text NOT NULL,
	ds           date NOT NULL,
	position     bigint NOT NULL,
	unit_id      text NOT NULL,
	id_type      text NOT NULL,
	metric_name  text NOT NULL,
	metric_value double precision NOT NULL,
	is_ratio     boolean NOT NULL,
	numerator    double precision NOT NULL,
	denominator  double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_xid ON {s}.metrics (xid, position);
CREATE TABLE IF NOT EXISTS {s}.days (
	project               text NOT NULL,
	ingestion             text NOT NULL,
	ds                    date NOT NULL,
	type                  text NOT NULL,
	status                text NOT NULL,
	message               text NOT NULL DEFAULT '',
	error_category        text NOT NULL DEFAULT '',
	error_message         text NOT NULL DEFAULT '',
	visible_run_id        text NOT NULL DEFAULT '',
	visible_xid           bigint,
	fence                 bigint NOT NULL DEFAULT 0,
	extracted             bigint NOT NULL DEFAULT 0,
	rows_loaded           bigint NOT NULL DEFAULT 0,
	rejected              jsonb NOT NULL DEFAULT '{}',
	first_loaded_at       timestamptz,
	last_loaded_at        timestamptz,
	warehouse_count       bigint,
	warehouse_at          timestamptz,
	fingerprint           text NOT NULL DEFAULT '',
	warehouse_fingerprint text NOT NULL DEFAULT '',
	PRIMARY KEY (project, ingestion, ds)
);
CREATE INDEX IF NOT EXISTS days_first_loaded ON {s}.days (first_loaded_at);
CREATE TABLE IF NOT EXISTS {s}.runs (
	project        text NOT NULL,
	run_id         text NOT NULL,
	ingestion      text NOT NULL,
	type           text NOT NULL,
	ds             text NOT NULL,
	trigger        text NOT NULL,
	fence          bigint NOT NULL,
	status         text NOT NULL,
	extract_id     text NOT NULL,
	extracted      bigint NOT NULL,
	mapped         bigint NOT NULL,
	rejected       jsonb NOT NULL,
	error_category text NOT NULL,
	error_message  text NOT NULL,
	message        text NOT NULL,
	history        jsonb NOT NULL,
	created_at     timestamptz NOT NULL,
	updated_at     timestamptz NOT NULL,
	PRIMARY KEY (project, run_id)
);
CREATE INDEX IF NOT EXISTS runs_newest ON {s}.runs (project, created_at DESC);
-- The usage ledger: one row per run that became visible (xid is the
-- extraction whose rows it counts), so reloads and backfills are counted
-- and neither a redelivered END nor a second extraction of the run counts
-- again.
CREATE TABLE IF NOT EXISTS {s}.usage (
	xid         bigint NOT NULL,
	project     text NOT NULL,
	ingestion   text NOT NULL,
	ds          date NOT NULL,
	trigger     text NOT NULL,
	run_id      text NOT NULL,
	rows_loaded bigint NOT NULL,
	loaded_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_project_ds ON {s}.usage (project, ds);
-- Rejected rows, staged with their batch's rows, until their run's dead
-- letters are published (see store.Store); "values" is a keyword.
CREATE TABLE IF NOT EXISTS {s}.rejected_rows (
	project    text NOT NULL,
	extract_id text NOT NULL,
	position   bigint NOT NULL,
	reason     text NOT NULL,
	detail     text NOT NULL,
	row_values jsonb NOT NULL,
	PRIMARY KEY (project, extract_id, position)
);
-- Upgrades of stores created by older code, each done once: they take
-- locks that every start must not take again.
DO $upgrade$ BEGIN
	-- The usage ledger was keyed by extraction: keep one row per run (the
	-- first extraction's), then the new key.
	IF to_regclass('{s}.usage_run') IS NULL THEN
		DELETE FROM {s}.usage u USING {s}.usage v
			WHERE u.project = v.project AND u.run_id = v.run_id AND u.xid > v.xid;
		ALTER TABLE {s}.usage DROP CONSTRAINT IF EXISTS usage_pkey;
		CREATE UNIQUE INDEX usage_run ON {s}.usage (project, run_id);
	END IF;
	-- The notification outbox (see store.Store): notify_state is 'due'
	-- from a run's terminal transition until MarkNotified makes it
	-- 'sent'; runs that ended before the outbox existed keep ''.
	-- notify_owner and notify_until are a notifier's claim.
	IF NOT EXISTS (SELECT 1 FROM pg_attribute
		WHERE attrelid = to_regclass('{s}.runs') AND attname = 'notify_state' AND NOT attisdropped) THEN
		ALTER TABLE {s}.runs ADD COLUMN notify_state text NOT NULL DEFAULT '',
			ADD COLUMN notify_owner text NOT NULL DEFAULT '',
			ADD COLUMN notify_until timestamptz,
			ADD COLUMN notified_at timestamptz;
	END IF;
	-- The dead-letter outbox (see store.Store): dead_letters_state is
	-- 'due' from the decision of a run with rejected rows until
	-- MarkDeadLettersPublished makes it 'published'; runs decided before
	-- the outbox existed keep ''.
	IF NOT EXISTS (SELECT 1 FROM pg_attribute
		WHERE attrelid = to_regclass('{s}.runs') AND attname = 'dead_letters_state' AND NOT attisdropped) THEN
		ALTER TABLE {s}.runs ADD COLUMN dead_letters_state text NOT NULL DEFAULT '',
			ADD COLUMN dead_letters_at timestamptz;
	END IF;
END $upgrade$;
CREATE INDEX IF NOT EXISTS runs_notify_due ON {s}.runs (project, updated_at) WHERE notify_state = 'due';
CREATE INDEX IF NOT EXISTS runs_dead_letters_due ON {s}.runs (updated_at) WHERE dead_letters_state = 'due';
CREATE OR REPLACE VIEW {s}.visible_events AS
	SELECT e.project, e.ingestion, e.ds, e.position, e.event_name, e.event_value,
	       e.time, e.unit_ids, e.metadata, d.visible_run_id AS run_id
	FROM {s}.days d JOIN {s}.events e ON e.xid = d.visible_xid;
CREATE OR REPLACE VIEW {s}.visible_metrics AS
	SELECT m.project, m.ingestion, m.ds, m.position, m.unit_id, m.id_type, m.metric_name,
	       m.metric_value, m.is_ratio, m.numerator, m.denominator, d.visible_run_id AS run_id
	FROM {s}.days d JOIN {s}.metrics m ON m.xid = d.visible_xid;
`

// Migrate creates the schema, tables and views. Concurrent callers
// serialise on an advisory lock.
func (s *Store) Migrate(ctx context.Context) error {
	var err error
	// A service restarting while the others run can deadlock with their
	// queries on the views it re-creates; PostgreSQL aborts one side, and
	// trying again is the cure.
	for attempt := 1; attempt <= 5; attempt++ {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('sluice-migrate-' || $1))`, s.schema); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, s.q(fmt.Sprintf(ddl+checkpointDDL, s.schema)))
			return err
		})
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "40P01" || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("migrate postgres store %s: %w", s.schema, err)
	}
	return nil
}

// isNoRows reports a query that found nothing.
func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
