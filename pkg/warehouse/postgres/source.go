// Package postgres reads an ingestion's query from PostgreSQL or Amazon
// Redshift over the PostgreSQL protocol with pgx. The two kinds share
// this code; Redshift differs in its defaults (port 5439, sslmode
// require), reads every column in text format, and computes fingerprints
// with functions Redshift has.
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"cloud.google.com/go/civil"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// Kinds this package serves.
const (
	KindPostgres = "postgres"
	KindRedshift = "redshift"
)

// Source runs queries against one PostgreSQL or Redshift database. The
// date is the query's $1 parameter, sent as 'YYYY-MM-DD' text so it
// compares with DATE and with ISO-string columns alike.
type Source struct {
	pool     *pgxpool.Pool
	redshift bool
	slots    *warehouse.QuerySlots // cfg.MaxConcurrency and cfg.QueryTimeout
	secret   string                // the password, scrubbed from every error message
	formats  pgx.QueryResultFormatsByOID
	// textFingerprints holds the queries whose rows cannot be hashed by
	// hash_record_extended, so they are not tried that way every time.
	textFingerprints sync.Map
}

var _ warehouse.Source = (*Source)(nil)

// Open connects to the database named by cfg: a DSN from the environment
// variable cfg.DSNEnv, or host/port/user/database with the password from
// cfg.PasswordEnv. cfg.SSLMode applies either way.
func Open(ctx context.Context, cfg config.Connection) (*Source, error) {
	dsn, secret, err := buildDSN(cfg)
	if err != nil {
		return nil, &warehouse.Error{Category: vocab.CategoryConfig, Err: redact(fmt.Errorf("connection %s: %w", cfg.Name, err), secret)}
	}
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, &warehouse.Error{Category: vocab.CategoryConfig, Err: redact(fmt.Errorf("connection %s: parse dsn: %w", cfg.Name, err), secret)}
	}
	n := max(cfg.MaxConcurrency, 1)
	pc.MaxConns = int32(n)
	s := &Source{
		redshift: cfg.Kind == KindRedshift,
		slots:    warehouse.NewQuerySlots(n, cfg.QueryTimeout),
		secret:   secret,
		formats:  binaryFormats,
	}
	if s.redshift {
		// Redshift's binary encodings are not PostgreSQL's in every
		// case; text is what its own drivers read.
		s.formats = pgx.QueryResultFormatsByOID{}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, s.categorize(ctx, fmt.Errorf("connection %s: %w", cfg.Name, err))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, s.categorize(ctx, fmt.Errorf("connection %s: %w", cfg.Name, err))
	}
	s.pool = pool
	return s, nil
}

// buildDSN returns the DSN and the password it carries (for redaction).
func buildDSN(cfg config.Connection) (dsn, secret string, err error) {
	sslmode := cfg.SSLMode
	if cfg.DSNEnv != "" {
		dsn = os.Getenv(cfg.DSNEnv)
		if dsn == "" {
			return "", "", fmt.Errorf("environment variable %s (dsn_env) is empty", cfg.DSNEnv)
		}
		if pc, err := pgconn.ParseConfig(dsn); err == nil {
			secret = pc.Password
		}
		if sslmode != "" && !strings.Contains(dsn, "sslmode=") {
			if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
				sep := "?"
				if strings.Contains(dsn, "?") {
					sep = "&"
				}
				dsn += sep + "sslmode=" + url.QueryEscape(sslmode)
			} else {
				dsn += " sslmode=" + sslmode
			}
		}
		return dsn, secret, nil
	}
	port := cfg.Port
	if sslmode == "" {
		sslmode = "prefer"
		if cfg.Kind == KindRedshift {
			sslmode = "require"
		}
	}
	if port == 0 {
		port = 5432
		if cfg.Kind == KindRedshift {
			port = 5439
		}
	}
	if cfg.PasswordEnv != "" {
		secret = os.Getenv(cfg.PasswordEnv)
		if secret == "" {
			return "", "", fmt.Errorf("environment variable %s (password_env) is empty", cfg.PasswordEnv)
		}
	}
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(cfg.Host, strconv.Itoa(port)), Path: "/" + cfg.Database}
	if secret != "" {
		u.User = url.UserPassword(cfg.User, secret)
	} else if cfg.User != "" {
		u.User = url.User(cfg.User)
	}
	u.RawQuery = url.Values{"sslmode": {sslmode}, "application_name": {"sluice"}}.Encode()
	return u.String(), secret, nil
}

// binaryFormats asks PostgreSQL for binary results where that is both
// compact and exact; every OID not named (numeric, text types, JSON, ...)
// arrives as text.
var binaryFormats = func() pgx.QueryResultFormatsByOID {
	m := pgx.QueryResultFormatsByOID{}
	for _, oid := range []uint32{
		pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.Float4OID, pgtype.Float8OID, pgtype.BoolOID,
		pgtype.DateOID, pgtype.TimestampOID, pgtype.TimestamptzOID, pgtype.ByteaOID, pgtype.RecordOID,
	} {
		m[oid] = pgx.BinaryFormatCode
	}
	for oid := range jsonArrays {
		m[oid] = pgx.BinaryFormatCode
	}
	return m
}()

// jsonArrays are the array types rendered as JSON arrays; other arrays
// keep PostgreSQL's own text form as STRING.
var jsonArrays = map[uint32]bool{
	pgtype.BoolArrayOID: true, pgtype.Int2ArrayOID: true, pgtype.Int4ArrayOID: true, pgtype.Int8ArrayOID: true,
	pgtype.Float4ArrayOID: true, pgtype.Float8ArrayOID: true, pgtype.NumericArrayOID: true,
	pgtype.TextArrayOID: true, pgtype.VarcharArrayOID: true, pgtype.BPCharArrayOID: true, pgtype.NameArrayOID: true,
	pgtype.UUIDArrayOID: true, pgtype.DateArrayOID: true, pgtype.TimestampArrayOID: true, pgtype.TimestamptzArrayOID: true,
	pgtype.JSONArrayOID: true, pgtype.JSONBArrayOID: true, pgtype.ByteaArrayOID: true,
}

// superOID is Redshift's SUPER (semi-structured) type, sent as JSON text.
const superOID = 4000

// Close closes the pool.
func (s *Source) Close() error {
	s.pool.Close()
	return nil
}

// acquire takes a query slot and applies the query timeout; release must
// be called when the query's rows are closed.
func (s *Source) acquire(ctx context.Context) (context.Context, func(), error) {
	return s.slots.Acquire(ctx)
}

type kind uint8

const (
	kindLong kind = iota
	kindDouble
	kindBool
	kindText
	kindDate
	kindTimestamp
	kindTimestampTZ
	kindBytes
	kindJSONValue // arrays and records: decoded by pgx, encoded as JSON
)

func kindOf(oid uint32, redshift bool) (kind, string) {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		return kindLong, schemas.TypeLong
	case pgtype.NumericOID:
		return kindText, schemas.TypeDecimal
	case pgtype.Float4OID, pgtype.Float8OID:
		return kindDouble, schemas.TypeDouble
	case pgtype.BoolOID:
		return kindBool, schemas.TypeBoolean
	case pgtype.DateOID:
		return kindDate, schemas.TypeDate
	case pgtype.TimestampOID:
		return kindTimestamp, schemas.TypeTimestamp
	case pgtype.TimestamptzOID:
		return kindTimestampTZ, schemas.TypeTimestamp
	case pgtype.JSONOID, pgtype.JSONBOID:
		return kindText, schemas.TypeJSON
	case pgtype.ByteaOID:
		return kindBytes, schemas.TypeBytes
	case pgtype.RecordOID:
		if !redshift {
			return kindJSONValue, schemas.TypeJSON
		}
	case superOID:
		if redshift {
			return kindText, schemas.TypeJSON
		}
	}
	if jsonArrays[oid] && !redshift {
		return kindJSONValue, schemas.TypeJSON
	}
	return kindText, schemas.TypeString
}

// column reads one result column into a reused holder through a scan
// plan made once per query, so rows cost no allocations beyond strings.
type column struct {
	kind   kind
	oid    uint32
	format int16
	plan   pgtype.ScanPlan
	long   int64
	double float64
	bool   bool
	date   pgtype.Date
	ts     pgtype.Timestamp
	tstz   pgtype.Timestamptz
	value  any
	hex    []byte // bytea in text format
}

func (c *column) target() any {
	switch c.kind {
	case kindLong:
		return &c.long
	case kindDouble:
		return &c.double
	case kindBool:
		return &c.bool
	case kindDate:
		return &c.date
	case kindTimestamp:
		return &c.ts
	case kindTimestampTZ:
		return &c.tstz
	}
	return nil
}

func typeName(m *pgtype.Map, oid uint32) string {
	if t, ok := m.TypeForOID(oid); ok {
		return t.Name
	}
	if oid == superOID {
		return "super"
	}
	return "oid:" + strconv.FormatUint(uint64(oid), 10)
}

// wrap nests the user's query; the newline keeps a trailing line comment
// from swallowing the ")".
func wrap(query string) string {
	q := strings.TrimSpace(query)
	for strings.HasSuffix(q, ";") {
		q = strings.TrimSpace(strings.TrimSuffix(q, ";"))
	}
	return "(\n" + q + "\n) q"
}

func dayArg(day civil.Date) string { return day.String() }

// Stream implements warehouse.Source.
func (s *Source) Stream(ctx context.Context, query string, day civil.Date, batchRows int, emit func(*warehouse.Batch) error) (int64, error) {
	if batchRows < 1 {
		return 0, fmt.Errorf("stream day %s: batch rows %d: must be at least 1", day, batchRows)
	}
	n, err := s.stream(ctx, query, day, batchRows, emit)
	if err != nil {
		return n, fmt.Errorf("stream day %s: %w", day, err)
	}
	return n, nil
}

func (s *Source) stream(ctx context.Context, sqlText string, day civil.Date, batchRows int, emit func(*warehouse.Batch) error) (int64, error) {
	parent := ctx
	ctx, release, err := s.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	rows, err := s.pool.Query(ctx, sqlText, s.formats, dayArg(day))
	if err != nil {
		return 0, s.categorize(parent, err)
	}
	defer rows.Close()

	m := rows.Conn().TypeMap()
	fields := rows.FieldDescriptions()
	if len(fields) == 0 {
		// Errors surface at the first Next; an empty field list without
		// one means the statement returns no columns.
		rows.Next()
		if err := rows.Err(); err != nil {
			return 0, s.categorize(parent, err)
		}
		return 0, &warehouse.Error{Category: vocab.CategoryQuery, Err: errors.New("query returns no columns")}
	}
	cols := make([]column, len(fields))
	specs := make([]warehouse.ColumnSpec, len(fields))
	for i, f := range fields {
		c := &cols[i]
		c.oid, c.format = f.DataTypeOID, f.Format
		var typ string
		c.kind, typ = kindOf(f.DataTypeOID, s.redshift)
		if t := c.target(); t != nil {
			c.plan = m.PlanScan(c.oid, c.format, t)
		}
		specs[i] = warehouse.ColumnSpec{Name: f.Name, Type: typ, DBType: typeName(m, f.DataTypeOID)}
	}

	var batch warehouse.Batch
	batch.SetColumns(specs)
	var total int64
	for rows.Next() {
		for i, raw := range rows.RawValues() {
			if err := cols[i].append(&batch, i, m, raw); err != nil {
				return total, &warehouse.Error{Category: vocab.CategoryInternal, Err: fmt.Errorf("column %s (%s): %w", specs[i].Name, specs[i].DBType, err)}
			}
		}
		batch.EndRow()
		if err := batch.EmitIfFull(parent, batchRows, &total, emit); err != nil {
			return total, err
		}
	}
	if err := rows.Err(); err != nil {
		return total, s.categorize(parent, err)
	}
	if batch.Rows > 0 {
		total += int64(batch.Rows)
		if err := emit(&batch); err != nil {
			return total, err
		}
	}
	return total, nil
}

func (c *column) append(b *warehouse.Batch, i int, m *pgtype.Map, raw []byte) error {
	if raw == nil {
		b.AppendNull(i)
		return nil
	}
	if c.plan != nil {
		if err := c.plan.Scan(raw, c.target()); err != nil {
			return err
		}
	}
	switch c.kind {
	case kindLong:
		b.AppendLong(i, c.long)
	case kindDouble:
		b.AppendDouble(i, c.double)
	case kindBool:
		b.AppendBool(i, c.bool)
	case kindDate:
		switch c.date.InfinityModifier {
		case pgtype.Infinity:
			b.AppendDate(i, math.MaxInt64)
		case pgtype.NegativeInfinity:
			b.AppendDate(i, math.MinInt64)
		default:
			b.AppendDate(i, warehouse.DaysOf(c.date.Time))
		}
	case kindTimestamp:
		b.AppendTimestamp(i, micros(c.ts.Time, c.ts.InfinityModifier))
	case kindTimestampTZ:
		b.AppendTimestamp(i, micros(c.tstz.Time, c.tstz.InfinityModifier))
	case kindText:
		b.AppendString(i, string(raw))
	case kindBytes:
		if c.format == pgx.BinaryFormatCode {
			b.AppendBytes(i, raw)
			return nil
		}
		// Text bytea is \x followed by hex digits.
		h, ok := strings.CutPrefix(unsafe.String(unsafe.SliceData(raw), len(raw)), `\x`)
		if !ok {
			return fmt.Errorf("bytea text without \\x prefix")
		}
		c.hex = c.hex[:0]
		for j := 0; j+1 < len(h); j += 2 {
			v, err := strconv.ParseUint(h[j:j+2], 16, 8)
			if err != nil {
				return fmt.Errorf("bytea hex: %w", err)
			}
			c.hex = append(c.hex, byte(v))
		}
		b.AppendBytes(i, c.hex)
	case kindJSONValue:
		c.value = nil
		if err := m.Scan(c.oid, c.format, raw, &c.value); err != nil {
			return err
		}
		j, err := json.Marshal(c.value)
		if err != nil {
			return err
		}
		b.AppendJSON(i, unsafe.String(unsafe.SliceData(j), len(j)))
	}
	return nil
}

// micros maps ±infinity to the extreme int64 values, which no finite
// timestamp reaches.
func micros(t time.Time, inf pgtype.InfinityModifier) int64 {
	switch inf {
	case pgtype.Infinity:
		return math.MaxInt64
	case pgtype.NegativeInfinity:
		return math.MinInt64
	}
	return warehouse.MicrosOf(t)
}

// Count implements warehouse.Source.
func (s *Source) Count(ctx context.Context, query string, day civil.Date) (int64, error) {
	var n int64
	if err := s.queryRow(ctx, "SELECT count(*) FROM "+wrap(query), day, &n); err != nil {
		return 0, fmt.Errorf("count day %s: %w", day, err)
	}
	return n, nil
}

// Fingerprint implements warehouse.Source. It is "count:sum" where sum
// adds a 60-bit hash of each row: a sum is order-independent and counts
// duplicate rows.
//
// PostgreSQL hashes each row with hash_record_extended (14+): the row's
// values hashed by their types' own hash functions, some five times
// cheaper than hashing the row's text, which matters because the extractor
// fingerprints every day it loads and the watcher every day it watches.
// Rows holding a type without an extended hash function (json, xml,
// point, ...), and servers before 14, fall back to the MD5 of the row's
// text ("t:" marks that form, so the two never compare equal). PostgreSQL
// does not promise that its hash functions stay the same across major
// versions: after an upgrade a watched day may reload once, never be
// missed.
//
// Redshift has neither, so there the row text is the columns cast to
// VARCHAR(65535), null-marked and joined, and the hex digits of its MD5
// are summed with strpos; this needs distinct column names.
func (s *Source) Fingerprint(ctx context.Context, query string, day civil.Date) (string, error) {
	var sqlText string
	switch {
	case s.redshift:
		names, err := s.columnNames(ctx, query)
		if err != nil {
			return "", fmt.Errorf("fingerprint day %s: %w", day, err)
		}
		sqlText = redshiftFingerprintSQL(query, names)
	default:
		if _, byText := s.textFingerprints.Load(query); !byText {
			var fp string
			err := s.queryRow(ctx, recordFingerprintSQL+wrap(query), day, &fp)
			if !isUndefinedFunction(err) {
				if err != nil {
					return "", fmt.Errorf("fingerprint day %s: %w", day, err)
				}
				return fp, nil
			}
			s.textFingerprints.Store(query, true)
		}
		sqlText = textFingerprintSQL + wrap(query)
	}
	var fp string
	if err := s.queryRow(ctx, sqlText, day, &fp); err != nil {
		return "", fmt.Errorf("fingerprint day %s: %w", day, err)
	}
	return fp, nil
}

const (
	recordFingerprintSQL = "SELECT count(*)::text || ':' || coalesce(sum(hash_record_extended(q, 0) >> 4), 0)::text FROM "
	textFingerprintSQL   = "SELECT 't:' || count(*)::text || ':' || coalesce(sum(('x' || substr(md5(q::text), 1, 15))::bit(60)::bigint), 0)::text FROM "
)

// isUndefinedFunction reports PostgreSQL's 42883: no hash_record_extended,
// or no extended hash function for one of the row's types.
func isUndefinedFunction(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42883"
}

func redshiftFingerprintSQL(query string, names []string) string {
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = "coalesce('v' || CAST(q." + pgx.Identifier{n}.Sanitize() + " AS VARCHAR(65535)), 'n')"
	}
	var hex strings.Builder
	for k := 0; k < 15; k++ {
		if k > 0 {
			hex.WriteString(" + ")
		}
		fmt.Fprintf(&hex, "CAST(strpos('0123456789abcdef', substring(h, %d, 1)) - 1 AS BIGINT) * %d", k+1, int64(1)<<(4*(14-k)))
	}
	return "SELECT CAST(count(*) AS VARCHAR) || ':' || CAST(coalesce(sum(CAST(" + hex.String() + " AS NUMERIC(38,0))), 0) AS VARCHAR)" +
		" FROM (SELECT md5(" + strings.Join(parts, " || '|' || ") + ") AS h FROM " + wrap(query) + ") m"
}

// columnNames prepares query without running it and returns its columns.
func (s *Source) columnNames(ctx context.Context, query string) ([]string, error) {
	parent := ctx
	ctx, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.categorize(parent, err)
	}
	defer conn.Release()
	sd, err := conn.Conn().Prepare(ctx, "", query)
	if err != nil {
		return nil, s.categorize(parent, err)
	}
	names := make([]string, len(sd.Fields))
	for i, f := range sd.Fields {
		names[i] = f.Name
	}
	return names, nil
}

func (s *Source) queryRow(ctx context.Context, sqlText string, day civil.Date, dest any) error {
	parent := ctx
	ctx, release, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	if err := s.pool.QueryRow(ctx, sqlText, dayArg(day)).Scan(dest); err != nil {
		return s.categorize(parent, err)
	}
	return nil
}

// Sample implements warehouse.Source: at most limit rows, in one batch,
// with the columns reported even when there are no rows.
func (s *Source) Sample(ctx context.Context, query string, day civil.Date, limit int) (*warehouse.Batch, error) {
	limit = max(limit, 0)
	sqlText := "SELECT * FROM " + wrap(query) + " LIMIT " + strconv.Itoa(limit)
	out := &warehouse.Batch{}
	_, err := s.stream(ctx, sqlText, day, max(limit, 1), func(b *warehouse.Batch) error {
		*out = cloneBatch(b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sample day %s: %w", day, err)
	}
	if out.Columns == nil {
		if err := s.describeInto(ctx, query, out); err != nil {
			return nil, fmt.Errorf("sample day %s: %w", day, err)
		}
	}
	return out, nil
}

func (s *Source) describeInto(ctx context.Context, query string, out *warehouse.Batch) error {
	parent := ctx
	ctx, release, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return s.categorize(parent, err)
	}
	defer conn.Release()
	sd, err := conn.Conn().Prepare(ctx, "", query)
	if err != nil {
		return s.categorize(parent, err)
	}
	m := conn.Conn().TypeMap()
	specs := make([]warehouse.ColumnSpec, len(sd.Fields))
	for i, f := range sd.Fields {
		_, typ := kindOf(f.DataTypeOID, s.redshift)
		specs[i] = warehouse.ColumnSpec{Name: f.Name, Type: typ, DBType: typeName(m, f.DataTypeOID)}
	}
	out.SetColumns(specs)
	return nil
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
