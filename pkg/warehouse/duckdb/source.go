// Package duckdb reads an ingestion's query from a DuckDB database file:
// rows stream through DuckDB's C API (see native.go), counts, fingerprints
// and column types go through duckdb-go's database/sql driver.
package duckdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"cloud.google.com/go/civil"
	bindings "github.com/duckdb/duckdb-go-bindings"
	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// Source runs queries against one DuckDB database. The date is the
// query's $1 parameter.
type Source struct {
	db     *sql.DB
	native bindings.Database     // db's own instance, for streaming reads
	slots  *warehouse.QuerySlots // cfg.MaxConcurrency and cfg.QueryTimeout
}

var _ warehouse.Source = (*Source)(nil)

// Open opens the database file at cfg.Path (created if missing). The path
// may carry DuckDB options as a query, as duckdb-go's DSN does.
//
// Memory: a stream holds a few chunks and one batch, whatever the day's
// size, but DuckDB's buffer pool keeps the table blocks a scan reads until
// it needs the room, up to memory_limit (80% of RAM by DuckDB's default),
// so the process's RSS would follow the table read. Open sets the
// connection's memory_limit (config.DefaultDuckDBMemoryLimit, 32MB, when
// unset; it overrides one given in the path): a 2M- or 4M-row demo day
// then streams at ~105 MiB peak RSS (in a test binary), as fast as without
// a limit, against ~250 and ~440 MiB unbounded.
func Open(cfg config.Connection) (*Source, error) {
	if cfg.Path == "" {
		return nil, &warehouse.Error{Category: vocab.CategoryConfig, Err: errors.New("open duckdb: no database path")}
	}
	db, err := sql.Open("duckdb", cfg.Path)
	if err != nil {
		return nil, &warehouse.Error{Category: vocab.CategoryConfig, Err: fmt.Errorf("open duckdb %s: %w", cfg.Path, err)}
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, categorize(fmt.Errorf("open duckdb %s: %w", cfg.Path, err))
	}
	if err := setMemoryLimit(db, cfg.MemoryLimit); err != nil {
		db.Close()
		return nil, err
	}
	native, err := openNative(cfg.Path)
	if err != nil {
		db.Close()
		return nil, categorize(fmt.Errorf("open duckdb %s for streaming: %w", cfg.Path, err))
	}
	n := max(cfg.MaxConcurrency, 1)
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	return &Source{db: db, native: native, slots: warehouse.NewQuerySlots(n, cfg.QueryTimeout)}, nil
}

// setMemoryLimit caps the database's memory (config.DefaultDuckDBMemoryLimit
// unless the connection sets memory_limit). It is SET GLOBAL rather than a
// DSN option: the instance is shared with every other opener of the same
// path in this process, and DuckDB refuses a second open with another
// configuration.
func setMemoryLimit(db *sql.DB, limit string) error {
	if limit == "" {
		limit = config.DefaultDuckDBMemoryLimit
	}
	if !config.ValidMemoryLimit(limit) { // it goes into the SQL text: SET takes no parameters
		return &warehouse.Error{Category: vocab.CategoryConfig, Err: fmt.Errorf("duckdb memory_limit %q is not a size like 128MB", limit)}
	}
	if _, err := db.Exec("SET GLOBAL memory_limit = '" + limit + "'"); err != nil {
		return categorize(fmt.Errorf("set duckdb memory_limit %s: %w", limit, err))
	}
	return nil
}

// DB exposes the database, for seeding demo and test data.
func (s *Source) DB() *sql.DB { return s.db }

// Close closes the database; no query may be running.
func (s *Source) Close() error {
	err := s.db.Close()
	bindings.Close(&s.native) // drops this reference; the last one closes the file
	return err
}

// acquire takes a query slot and applies the query timeout; release must
// be called when the query's rows are closed.
func (s *Source) acquire(ctx context.Context) (context.Context, func(), error) {
	return s.slots.Acquire(ctx)
}

// kind says how a result column is read.
type kind uint8

const (
	kindLong kind = iota
	kindDouble
	kindBool
	kindText // STRING, DECIMAL, JSON: read as text computed in DuckDB
	kindDate
	kindTimestamp
	kindBytes
)

type column struct {
	spec warehouse.ColumnSpec
	kind kind
	expr string // projection over the wrapped query; positional so duplicate names work
}

// plan decides each column's raw-rows type from DuckDB's type name. Types
// Go cannot hold exactly (HUGEINT, UBIGINT, DECIMAL) and nested or JSON
// values are rendered to text by DuckDB itself, so nothing is rounded.
func plan(i int, name, dbType string) column {
	pos := "#" + strconv.Itoa(i+1)
	text := "CAST(" + pos + " AS VARCHAR)"
	c := column{spec: warehouse.ColumnSpec{Name: name, DBType: dbType}, expr: pos}
	set := func(typ string, k kind, expr string) {
		c.spec.Type, c.kind, c.expr = typ, k, expr
	}
	switch base, _, _ := strings.Cut(dbType, "("); {
	case dbType == "JSON":
		set(schemas.TypeJSON, kindText, text)
	case strings.HasSuffix(dbType, "]") || base == "STRUCT" || base == "MAP" || base == "UNION":
		set(schemas.TypeJSON, kindText, "CAST(to_json("+pos+") AS VARCHAR)")
	default:
		switch base {
		case "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER":
			set(schemas.TypeLong, kindLong, pos)
		case "UBIGINT", "HUGEINT", "UHUGEINT", "BIGNUM", "DECIMAL":
			set(schemas.TypeDecimal, kindText, text)
		case "FLOAT", "DOUBLE":
			set(schemas.TypeDouble, kindDouble, pos)
		case "BOOLEAN":
			set(schemas.TypeBoolean, kindBool, pos)
		case "VARCHAR":
			set(schemas.TypeString, kindText, pos)
		case "DATE":
			set(schemas.TypeDate, kindDate, pos)
		case "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMPTZ":
			set(schemas.TypeTimestamp, kindTimestamp, pos)
		case "BLOB":
			set(schemas.TypeBytes, kindBytes, pos)
		default: // UUID, ENUM, TIME, TIMETZ, INTERVAL, BIT, ...: DuckDB's own text
			set(schemas.TypeString, kindText, text)
		}
	}
	return c
}

// wrap nests the user's query so it can be projected, counted and limited;
// the newline keeps a trailing line comment from swallowing the ")".
func wrap(query string) string {
	q := strings.TrimSpace(query)
	for strings.HasSuffix(q, ";") {
		q = strings.TrimSpace(strings.TrimSuffix(q, ";"))
	}
	return "(\n" + q + "\n) q"
}

func dayArg(day civil.Date) any { return day.String() }

// describe runs the query with LIMIT 0 to learn its columns.
func (s *Source) describe(ctx context.Context, query string, day civil.Date) ([]column, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT * FROM "+wrap(query)+" LIMIT 0", dayArg(day))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, err
	}
	cols := make([]column, len(types))
	for i, t := range types {
		cols[i] = plan(i, t.Name(), t.DatabaseTypeName())
	}
	return cols, rows.Err()
}

// Stream implements warehouse.Source.
func (s *Source) Stream(ctx context.Context, query string, day civil.Date, batchRows int, emit func(*warehouse.Batch) error) (int64, error) {
	n, err := s.stream(ctx, query, day, batchRows, -1, emit)
	if err != nil {
		return n, fmt.Errorf("stream day %s: %w", day, err)
	}
	return n, nil
}

func (s *Source) stream(ctx context.Context, query string, day civil.Date, batchRows, limit int, emit func(*warehouse.Batch) error) (int64, error) {
	if batchRows < 1 {
		return 0, fmt.Errorf("batch rows %d: must be at least 1", batchRows)
	}
	ctx, release, err := s.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	cols, err := s.describe(ctx, query, day)
	if err != nil {
		return 0, categorize(err)
	}
	exprs := make([]string, len(cols))
	specs := make([]warehouse.ColumnSpec, len(cols))
	for i, c := range cols {
		exprs[i], specs[i] = c.expr, c.spec
	}
	sqlText := "SELECT " + strings.Join(exprs, ", ") + " FROM " + wrap(query)
	if limit >= 0 {
		sqlText += " LIMIT " + strconv.Itoa(limit)
	}
	if len(cols) == 0 {
		return 0, &warehouse.Error{Category: vocab.CategoryQuery, Err: errors.New("query returns no columns")}
	}
	q, err := startStreaming(ctx, s.native, sqlText, day.String())
	if err != nil {
		return 0, categorize(err)
	}
	defer q.close()
	readers, err := readersFor(cols, q.columnTypes())
	if err != nil {
		return 0, err
	}
	var batch warehouse.Batch
	batch.SetColumns(specs)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, categorize(err)
		}
		chunk, ok, err := q.next(ctx)
		if err != nil {
			return total, categorize(err)
		}
		if !ok {
			break
		}
		err = appendChunk(ctx, &batch, chunk, readers, batchRows, &total, emit)
		bindings.DestroyDataChunk(&chunk)
		if err != nil {
			return total, err
		}
	}
	if batch.Rows > 0 {
		total += int64(batch.Rows)
		if err := emit(&batch); err != nil {
			return total, err
		}
	}
	return total, nil
}

func readersFor(cols []column, types []bindings.Type) ([]reader, error) {
	if len(types) != len(cols) {
		return nil, &warehouse.Error{Category: vocab.CategoryInternal, Err: fmt.Errorf("query returned %d columns, described %d", len(types), len(cols))}
	}
	readers := make([]reader, len(cols))
	for i, c := range cols {
		r, err := readerFor(c, types[i])
		if err != nil {
			return nil, err
		}
		readers[i] = r
	}
	return readers, nil
}

// appendChunk moves a chunk's rows into the batch, column by column, and
// emits the batch each time it fills.
func appendChunk(ctx context.Context, b *warehouse.Batch, chunk bindings.DataChunk, readers []reader, batchRows int, total *int64, emit func(*warehouse.Batch) error) error {
	n := int(bindings.DataChunkGetSize(chunk))
	for lo := 0; lo < n; {
		hi := min(n, lo+batchRows-b.Rows)
		for i, read := range readers {
			vec := bindings.DataChunkGetVector(chunk, bindings.IdxT(i))
			read(b, i, bindings.VectorGetData(vec), bindings.VectorGetValidity(vec), lo, hi)
		}
		b.Rows += hi - lo // every column got rows lo..hi: EndRow for each
		if err := b.EmitIfFull(ctx, batchRows, total, emit); err != nil {
			return err
		}
		lo = hi
	}
	return nil
}

// Count implements warehouse.Source.
func (s *Source) Count(ctx context.Context, query string, day civil.Date) (int64, error) {
	var n int64
	err := s.queryRow(ctx, "SELECT count(*) FROM "+wrap(query), day, &n)
	if err != nil {
		return 0, fmt.Errorf("count day %s: %w", day, err)
	}
	return n, nil
}

// fingerprintSQL sums, over the rows, a 60-bit share of DuckDB's hash of
// each row (the row struct, nulls included). A sum is order-independent
// and counts duplicate rows, and the row count is part of the digest.
// hash() is about eight times cheaper than the MD5 of the row's text
// (0.5 s against 4.1 s for a 2M-row day here), which matters because the
// extractor fingerprints every day it loads and the watcher every day it
// watches. DuckDB does not promise hash() stays the same across versions:
// after an upgrade a watched day may reload once, never be missed.
const fingerprintSQL = "SELECT CAST(count(*) AS VARCHAR) || ':' || CAST(coalesce(sum(hash(q) >> 4), 0) AS VARCHAR) FROM "

// Fingerprint implements warehouse.Source.
func (s *Source) Fingerprint(ctx context.Context, query string, day civil.Date) (string, error) {
	var fp string
	if err := s.queryRow(ctx, fingerprintSQL+wrap(query), day, &fp); err != nil {
		return "", fmt.Errorf("fingerprint day %s: %w", day, err)
	}
	return fp, nil
}

func (s *Source) queryRow(ctx context.Context, sqlText string, day civil.Date, dest any) error {
	ctx, release, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	if err := s.db.QueryRowContext(ctx, sqlText, dayArg(day)).Scan(dest); err != nil {
		return categorize(err)
	}
	return nil
}

// Sample implements warehouse.Source: at most limit rows, in one batch.
func (s *Source) Sample(ctx context.Context, query string, day civil.Date, limit int) (*warehouse.Batch, error) {
	var out warehouse.Batch
	_, err := s.stream(ctx, query, day, max(limit, 1), max(limit, 0), func(b *warehouse.Batch) error {
		out = cloneBatch(b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sample day %s: %w", day, err)
	}
	if out.Columns == nil {
		// No rows: still report the columns.
		ctx, release, err := s.acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
		cols, err := s.describe(ctx, query, day)
		if err != nil {
			return nil, fmt.Errorf("sample day %s: %w", day, categorize(err))
		}
		specs := make([]warehouse.ColumnSpec, len(cols))
		for i, c := range cols {
			specs[i] = c.spec
		}
		out.SetColumns(specs)
	}
	return &out, nil
}

func cloneBatch(b *warehouse.Batch) warehouse.Batch {
	out := warehouse.Batch{Rows: b.Rows, Columns: make([]schemas.Column, len(b.Columns))}
	for i, c := range b.Columns {
		out.Columns[i] = schemas.Column{
			Name: c.Name, Type: c.Type, DBType: c.DBType,
			Nulls:   append([]byte(nil), c.Nulls...),
			Bools:   append([]bool(nil), c.Bools...),
			Longs:   append([]int64(nil), c.Longs...),
			Doubles: append([]float64(nil), c.Doubles...),
			Strings: append([]string(nil), c.Strings...),
		}
	}
	return out
}

// categorize gives a DuckDB error the category a user can act on. Context
// errors pass through so callers see cancellation as such; a query
// timeout (the deadline) is QUERY_TIMEOUT.
func categorize(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &warehouse.Error{Category: vocab.CategoryTimeout, Transient: true, Err: err}
	}
	var de *duckdb.Error
	if !errors.As(err, &de) {
		return &warehouse.Error{Category: vocab.CategoryInternal, Err: err}
	}
	switch de.Type {
	case duckdb.ErrorTypeCatalog, duckdb.ErrorTypeParser, duckdb.ErrorTypeSyntax, duckdb.ErrorTypeBinder,
		duckdb.ErrorTypeConversion, duckdb.ErrorTypeOutOfRange, duckdb.ErrorTypeDivideByZero, duckdb.ErrorTypeInvalidInput,
		duckdb.ErrorTypeMismatchType, duckdb.ErrorTypeInvalidType, duckdb.ErrorTypeParameterNotResolved,
		duckdb.ErrorTypeParameterNotAllowed, duckdb.ErrorTypeNotImplemented, duckdb.ErrorTypeDecimal,
		duckdb.ErrorTypeExpression, duckdb.ErrorTypePlanner, duckdb.ErrorTypeMissingExtension:
		return &warehouse.Error{Category: vocab.CategoryQuery, Err: err}
	case duckdb.ErrorTypePermission:
		return &warehouse.Error{Category: vocab.CategoryPermission, Err: err}
	case duckdb.ErrorTypeIO, duckdb.ErrorTypeConnection, duckdb.ErrorTypeNetwork, duckdb.ErrorTypeHTTP, duckdb.ErrorTypeTransaction:
		return &warehouse.Error{Category: vocab.CategoryConnection, Transient: true, Err: err}
	case duckdb.ErrorTypeInterrupt:
		return &warehouse.Error{Category: vocab.CategoryTimeout, Transient: true, Err: err}
	case duckdb.ErrorTypeOutOfMemory:
		return &warehouse.Error{Category: vocab.CategoryInternal, Transient: true, Err: err}
	default:
		return &warehouse.Error{Category: vocab.CategoryInternal, Err: err}
	}
}
