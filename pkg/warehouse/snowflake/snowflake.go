// Package snowflake is Sluice's Snowflake source, on gosnowflake.
//
// Results are read as Arrow batches, one result chunk at a time, each
// released once its rows are in the outgoing batch, so memory stays
// bounded whatever the day's size. When Snowflake answers a query with a
// JSON rowset instead (it may, for small results), the same columns are
// filled from the driver's rows.
//
// Types on raw-rows:
//
//	NUMBER(p,0)                 LONG (DECIMAL text in a batch holding a value beyond int64)
//	NUMBER(p,s>0), DECFLOAT     DECIMAL, exact text with s decimals (never a float)
//	FLOAT                       DOUBLE
//	BOOLEAN                     BOOLEAN
//	TEXT                        STRING
//	BINARY                      BYTES
//	DATE                        DATE (days since 1970-01-01)
//	TIMESTAMP_NTZ/LTZ/TZ        TIMESTAMP (microseconds since the epoch, UTC; NTZ read as UTC)
//	TIME                        STRING (HH:MM:SS.fffffffff)
//	VARIANT, OBJECT, ARRAY, MAP JSON
//
// Expired result-chunk URLs: a chunk that cannot be downloaded (an expired
// presigned URL answers 403, a download dies part-way) is downloaded again
// after the result is fetched anew by query id, with fresh URLs, and the
// stream continues at that chunk: a day that outlives its URLs (they last
// hours; big days take longer) finishes on its one query. Only when the
// same chunk fails maxRefetches times in a row does the stream fail, with
// a transient CONNECTION_ERROR.
//
// Resume (warehouse.Resumable): the cursor after each batch is the query
// id and the next row's place (chunk and row within it, or the row number
// of a JSON rowset). StreamFrom fetches the kept result by query id (for
// 24 h Snowflake keeps it) and continues there with the same batch
// boundaries; a result no longer kept is warehouse.ErrCursorExpired.
//
// Process environment: gosnowflake probes cloud metadata endpoints on its
// first connection and loads a native helper library at start-up. Binaries
// should run with SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true and
// SF_DISABLE_MINICORE=true (or build with -tags minicore_disabled); this
// package never sets process environment itself.
package snowflake

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/civil"
	sf "github.com/snowflakedb/gosnowflake"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// Source reads one Snowflake connection. Safe for concurrent use.
type Source struct {
	db      *sql.DB
	timeout time.Duration
}

var _ warehouse.Source = (*Source)(nil)

// Open builds the driver configuration from cfg, logs in once (so bad
// credentials fail here, categorized) and returns the source.
func Open(ctx context.Context, cfg config.Connection) (*Source, error) {
	sfc, err := driverConfig(cfg)
	if err != nil {
		return nil, &warehouse.Error{Category: vocab.CategoryConfig, Err: fmt.Errorf("snowflake connection %s: %w", cfg.Name, err)}
	}
	db := sql.OpenDB(sf.NewConnector(sf.SnowflakeDriver{}, *sfc))
	if cfg.MaxConcurrency > 0 {
		db.SetMaxOpenConns(cfg.MaxConcurrency)
	}
	s := &Source{db: db, timeout: cfg.QueryTimeout}
	pctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to snowflake %s: %w", cfg.Name, classify(err))
	}
	return s, nil
}

func driverConfig(cfg config.Connection) (*sf.Config, error) {
	c := &sf.Config{
		Account:          cfg.Account,
		User:             cfg.User,
		Role:             cfg.Role,
		Warehouse:        cfg.Warehouse,
		Database:         cfg.Database,
		Schema:           cfg.Schema,
		DisableTelemetry: true,
		Application:      "Sluice",
		Params:           map[string]*string{},
	}
	if cfg.QueryTimeout > 0 {
		// Snowflake stops the statement itself; the context timeout on
		// Count, Fingerprint and Sample is the client-side bound.
		secs := strconv.Itoa(max(1, int(cfg.QueryTimeout/time.Second)))
		c.Params["statement_timeout_in_seconds"] = &secs
	}
	switch {
	case cfg.PrivateKeyFile != "":
		var passphrase []byte
		if cfg.PrivateKeyPassphraseEnv != "" {
			passphrase = []byte(os.Getenv(cfg.PrivateKeyPassphraseEnv))
		}
		key, err := readPrivateKey(cfg.PrivateKeyFile, passphrase)
		if err != nil {
			return nil, err
		}
		c.Authenticator = sf.AuthTypeJwt
		c.PrivateKey = key
	case cfg.PasswordEnv != "":
		c.Password = os.Getenv(cfg.PasswordEnv)
		if c.Password == "" {
			return nil, fmt.Errorf("password_env: %s is empty or unset", cfg.PasswordEnv)
		}
	default:
		return nil, errors.New("neither password_env nor private_key_file is set")
	}
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", cfg.Endpoint, err)
		}
		port, err := strconv.Atoi(u.Port())
		if err != nil {
			return nil, fmt.Errorf("endpoint %q: port: %w", cfg.Endpoint, err)
		}
		c.Protocol, c.Host, c.Port = u.Scheme, u.Hostname(), port
	}
	return c, nil
}

func (s *Source) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.timeout > 0 {
		return context.WithTimeout(ctx, s.timeout)
	}
	return context.WithCancel(ctx)
}

// Close closes the pool; sessions are deleted on the server.
func (s *Source) Close() error { return s.db.Close() }

// trimQuery drops a trailing semicolon so the query can be wrapped.
func trimQuery(q string) string {
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(q), ";"))
}

// Count runs SELECT COUNT(*) over the day's query.
func (s *Source) Count(ctx context.Context, query string, day civil.Date) (int64, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var n int64
	q := "SELECT COUNT(*) FROM (" + trimQuery(query) + ")"
	if err := s.db.QueryRowContext(ctx, q, day.String()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count day %s: %w", day, classify(err))
	}
	return n, nil
}

// Fingerprint is the row count and Snowflake's order-independent HASH_AGG
// of the day's rows, as "count:hash".
func (s *Source) Fingerprint(ctx context.Context, query string, day civil.Date) (string, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var n int64
	var h sql.NullString
	q := "SELECT COUNT(*), HASH_AGG(*) FROM (" + trimQuery(query) + ")"
	if err := s.db.QueryRowContext(ctx, q, day.String()).Scan(&n, &h); err != nil {
		return "", fmt.Errorf("fingerprint day %s: %w", day, classify(err))
	}
	return strconv.FormatInt(n, 10) + ":" + h.String, nil
}

// Sample returns at most limit rows of the day's query.
func (s *Source) Sample(ctx context.Context, query string, day civil.Date, limit int) (*warehouse.Batch, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	limit = max(limit, 1)
	q := "SELECT * FROM (" + trimQuery(query) + ") LIMIT " + strconv.Itoa(limit)
	var out warehouse.Batch
	_, err := s.stream(ctx, q, day, limit, nil, func(b *warehouse.Batch, _ warehouse.Cursor) error {
		out = copyBatch(b)
		return nil
	}, true)
	if err != nil {
		return nil, fmt.Errorf("sample day %s: %w", day, err)
	}
	return &out, nil
}

// Stream runs the day's query and emits batches of at most batchRows.
func (s *Source) Stream(ctx context.Context, query string, day civil.Date, batchRows int, emit func(*warehouse.Batch) error) (int64, error) {
	n, err := s.stream(ctx, trimQuery(query), day, max(batchRows, 1), nil, func(b *warehouse.Batch, _ warehouse.Cursor) error { return emit(b) }, false)
	if err != nil {
		return n, fmt.Errorf("stream day %s: %w", day, err)
	}
	return n, nil
}

func (s *Source) stream(ctx context.Context, query string, day civil.Date, batchRows int, from *warehouse.Cursor,
	emit func(*warehouse.Batch, warehouse.Cursor) error, emitEmpty bool) (int64, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, classify(err)
	}
	defer conn.Close()
	var n int64
	err = conn.Raw(func(dc any) error {
		qc, ok := dc.(driver.QueryerContext)
		if !ok {
			return fmt.Errorf("driver connection %T cannot query", dc)
		}
		// Higher precision keeps NUMBERs as their exact integers (never
		// floats); timestamps arrive as microseconds whatever their layout.
		qctx := sf.WithArrowBatchesTimestampOption(sf.WithHigherPrecision(sf.WithArrowBatches(ctx)), sf.UseMicrosecondTimestamp)
		var rows driver.Rows
		var queryID string
		if from == nil {
			rows, err = qc.QueryContext(qctx, query, []driver.NamedValue{{Ordinal: 1, Value: day.String()}})
			if err != nil {
				return classify(err)
			}
			if sr, ok := rows.(sf.SnowflakeRows); ok {
				queryID = sr.GetQueryID()
			}
		} else {
			queryID = from.Token
			if rows, err = fetchResult(qctx, qc, queryID); err != nil {
				return err
			}
		}
		defer rows.Close()
		r, err := newReader(rows, batchRows, emit)
		if err != nil {
			return err
		}
		r.token = queryID
		if from != nil {
			if err := r.seek(from.Position); err != nil {
				return err
			}
		}
		var refetch func() (driver.Rows, error)
		if queryID != "" {
			// A result fetched again replaces the one before it, which
			// is closed then (the first is closed on return).
			var last driver.Rows
			defer func() {
				if last != nil {
					_ = last.Close()
				}
			}()
			refetch = func() (driver.Rows, error) {
				again, err := fetchResult(qctx, qc, queryID)
				if err != nil {
					return nil, err
				}
				if last != nil {
					_ = last.Close()
				}
				last = again
				return again, nil
			}
		}
		err = r.read(ctx, rows, refetch)
		if err == nil {
			err = r.flush(emitEmpty)
		}
		n = r.total
		return err
	})
	return n, err
}

// copyBatch deep-copies b; Sample's caller keeps it after the reader
// reuses its buffers.
func copyBatch(b *warehouse.Batch) warehouse.Batch {
	out := warehouse.Batch{Rows: b.Rows, Columns: make([]schemas.Column, len(b.Columns))}
	for i, c := range b.Columns {
		out.Columns[i] = c
		out.Columns[i].Nulls = append([]byte(nil), c.Nulls...)
		out.Columns[i].Bools = append([]bool(nil), c.Bools...)
		out.Columns[i].Longs = append([]int64(nil), c.Longs...)
		out.Columns[i].Doubles = append([]float64(nil), c.Doubles...)
		out.Columns[i].Strings = append([]string(nil), c.Strings...)
	}
	return out
}

// Snowflake error numbers Sluice branches on.
const (
	errIncorrectPassword   = 390100
	errInvalidJWT          = 390144
	errSessionExpired      = 390112
	errMasterTokenExpired  = 390114
	errSyntax              = 1003
	errObjectNotFound      = 2003
	errInvalidIdentifier   = 904
	errStatementTimeout    = 630
	errStatementCanceled   = 604
	errWarehouseNotRunning = 606
)

// classify turns a driver error into a warehouse.Error a user can act on.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var we *warehouse.Error
	if errors.As(err, &we) || errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &warehouse.Error{Category: vocab.CategoryTimeout, Transient: true, Err: err}
	}
	var se *sf.SnowflakeError
	if errors.As(err, &se) {
		switch n := se.Number; {
		case n == errSessionExpired || n == errMasterTokenExpired:
			return &warehouse.Error{Category: vocab.CategoryConnection, Transient: true, Err: err}
		case n == errIncorrectPassword || n == errInvalidJWT || (n >= 390000 && n < 391000):
			return &warehouse.Error{Category: vocab.CategoryAuthentication, Err: err}
		case n == errObjectNotFound:
			return &warehouse.Error{Category: vocab.CategoryQuery,
				Err: fmt.Errorf("%w (check the name, and that the connection's role has USAGE on the database and schema and SELECT on the table)", err)}
		case n == errStatementTimeout || n == errStatementCanceled:
			return &warehouse.Error{Category: vocab.CategoryTimeout, Transient: true, Err: err}
		case n == errWarehouseNotRunning:
			return &warehouse.Error{Category: vocab.CategoryConnection, Transient: true, Err: err}
		case n == sf.ErrFailedToGetChunk:
			return &warehouse.Error{Category: vocab.CategoryConnection, Transient: true,
				Err: fmt.Errorf("%w (result chunk download failed again after fetching the result anew by query id)", err)}
		case n >= 260000 && n < 270000, strings.HasPrefix(se.SQLState, "08"):
			return &warehouse.Error{Category: vocab.CategoryConnection, Transient: true, Err: err}
		case n == errSyntax || n == errInvalidIdentifier || strings.HasPrefix(se.SQLState, "42"):
			return &warehouse.Error{Category: vocab.CategoryQuery, Err: err}
		default:
			return &warehouse.Error{Category: vocab.CategoryQuery, Err: err}
		}
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, driver.ErrBadConn) {
		return &warehouse.Error{Category: vocab.CategoryConnection, Transient: true, Err: err}
	}
	return err
}
