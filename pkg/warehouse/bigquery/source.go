// Package bigquery is the BigQuery warehouse source, built on
// cloud.google.com/go/bigquery. A day's query runs with the date bound as
// the named DATE parameter @date; its result table is read through the
// Storage Read API (Arrow), or REST paging when Storage Read is disabled,
// and rows are streamed into columnar batches. A stream resumes from a
// cursor without running the query again while BigQuery keeps the result
// table, about 24 h (stream.go).
//
// Types on raw-rows, from the result schema:
//
//	INT64                      LONG
//	NUMERIC, BIGNUMERIC        DECIMAL, exact text at the column's scale (9, 38, or NUMERIC(P,S)'s S)
//	FLOAT64                    DOUBLE
//	BOOL                       BOOLEAN
//	STRING, GEOGRAPHY          STRING
//	BYTES                      BYTES (base64)
//	DATE                       DATE (days since 1970-01-01)
//	TIMESTAMP                  TIMESTAMP (microseconds, UTC)
//	DATETIME                   TIMESTAMP (microseconds, the wall time read as UTC)
//	TIME, INTERVAL, RANGE      STRING
//	JSON                       JSON (as BigQuery returns it)
//	ARRAY (REPEATED), STRUCT   JSON text (integers as numbers, NUMERIC exact)
package bigquery

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"cloud.google.com/go/bigquery"
	bqstorage "cloud.google.com/go/bigquery/storage/apiv1"
	"cloud.google.com/go/civil"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
)

// Source runs one BigQuery connection's queries. Safe for concurrent use.
type Source struct {
	cfg    config.Connection
	client *bigquery.Client
	grpc   *grpc.ClientConn              // the Storage Read connection Open dialled itself, if any
	read   *bqstorage.BigQueryReadClient // nil when Storage Read is disabled
}

var _ warehouse.Source = (*Source)(nil)

// Options tune the clients OpenWith builds; Open uses the defaults.
type Options struct {
	// ClientOptions go to the REST client after the ones derived from the
	// connection (endpoint, credentials).
	ClientOptions []option.ClientOption
	// StorageOptions, when set, replace the options of the Storage Read
	// client (for example option.WithGRPCConn to an in-memory server).
	StorageOptions []option.ClientOption
	// DisableStorageRead reads every page through REST.
	DisableStorageRead bool
}

// Open connects to cfg.ProjectID with the service-account JSON in
// cfg.CredentialsFile, or application default credentials when it is
// empty. opts go to the REST client (tests pass option.WithoutAuthentication).
//
// cfg.Endpoint overrides the service address: REST is served under
// Endpoint+"/bigquery/v2/" and the Storage Read API on the same host. An
// http:// endpoint (an emulator, a test server) is plaintext and
// unauthenticated; its gRPC side is reached as unencrypted HTTP/2.
// cfg.Schema, when set, is the default dataset for unqualified tables.
func Open(ctx context.Context, cfg config.Connection, opts ...option.ClientOption) (*Source, error) {
	return OpenWith(ctx, cfg, Options{ClientOptions: opts})
}

// OpenWith is Open with control over both clients.
func OpenWith(ctx context.Context, cfg config.Connection, o Options) (*Source, error) {
	if cfg.ProjectID == "" {
		return nil, &warehouse.Error{Category: vocab.CategoryConfig, Err: errors.New("bigquery connection has no project_id")}
	}
	var base, rest, storage []option.ClientOption
	plaintext := false
	var host string
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || u.Host == "" {
			return nil, &warehouse.Error{Category: vocab.CategoryConfig, Err: fmt.Errorf("bigquery endpoint %q is not a URL", cfg.Endpoint)}
		}
		host = u.Host
		plaintext = u.Scheme == "http"
		ep := strings.TrimSuffix(cfg.Endpoint, "/")
		if !strings.HasSuffix(ep, "/bigquery/v2") {
			ep += "/bigquery/v2"
		}
		rest = append(rest, option.WithEndpoint(ep+"/"))
		if !plaintext {
			storage = append(storage, option.WithEndpoint(host))
		}
	}
	switch {
	case plaintext:
		base = append(base, option.WithoutAuthentication())
	case cfg.CredentialsFile != "":
		base = append(base, option.WithAuthCredentialsFile(option.ServiceAccount, cfg.CredentialsFile))
	}
	rest = append(append(append([]option.ClientOption(nil), base...), rest...), o.ClientOptions...)
	client, err := bigquery.NewClient(ctx, cfg.ProjectID, rest...)
	if err != nil {
		return nil, &warehouse.Error{Category: vocab.CategoryConfig, Err: fmt.Errorf("create bigquery client: %w", err)}
	}
	client.Location = cfg.Location
	s := &Source{cfg: cfg, client: client}
	if o.DisableStorageRead {
		return s, nil
	}
	switch {
	case o.StorageOptions != nil:
		storage = o.StorageOptions
	case plaintext:
		conn, err := grpc.NewClient(host, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			client.Close()
			return nil, &warehouse.Error{Category: vocab.CategoryConfig, Err: fmt.Errorf("dial bigquery storage at %s: %w", host, err)}
		}
		s.grpc = conn
		storage = []option.ClientOption{option.WithGRPCConn(conn), option.WithoutAuthentication()}
	default:
		storage = append(append([]option.ClientOption(nil), base...), storage...)
	}
	// Our own read client, not the one the bigquery client can enable: a
	// resumable stream reads from an offset, which that one cannot.
	read, err := bqstorage.NewBigQueryReadClient(ctx, storage...)
	if err != nil {
		s.Close()
		return nil, &warehouse.Error{Category: vocab.CategoryConfig, Err: fmt.Errorf("create bigquery storage read client: %w", err)}
	}
	s.read = read
	return s, nil
}

// Close releases both clients.
func (s *Source) Close() error {
	err := s.client.Close()
	if s.read != nil {
		err = errors.Join(err, s.read.Close())
	}
	// The storage client closes the connection it was given; close it only
	// if it never got that far.
	if s.grpc != nil && s.grpc.GetState() != connectivity.Shutdown {
		err = errors.Join(err, s.grpc.Close())
	}
	return err
}

// Client is the underlying BigQuery client.
func (s *Source) Client() *bigquery.Client { return s.client }

// query prepares sql for day: @date bound, the bytes guard and the
// default dataset applied.
func (s *Source) query(sql string, day civil.Date) *bigquery.Query {
	q := s.client.Query(sql)
	q.Parameters = []bigquery.QueryParameter{{Name: "date", Value: day}}
	q.MaxBytesBilled = s.cfg.MaximumBytesBilled
	q.Location = s.cfg.Location
	if s.cfg.Schema != "" {
		q.DefaultProjectID = s.cfg.ProjectID
		q.DefaultDatasetID = s.cfg.Schema
	}
	return q
}

// timeout bounds one operation by the connection's query_timeout.
func (s *Source) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.cfg.QueryTimeout > 0 {
		return context.WithTimeout(ctx, s.cfg.QueryTimeout)
	}
	return context.WithCancel(ctx)
}

// wrapped trims the user's query so it can sit inside a subquery.
func wrapped(query string) string {
	return strings.TrimRight(strings.TrimSpace(query), "; \t\r\n")
}

// stopped reports why streaming stopped after an emit: the emit's own
// error, or the context's.
func (s *Source) stopped(parent, ctx context.Context, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return s.classify(parent, ctx, "stream rows", err)
	}
	return err
}

// Count returns how many rows query returns for day.
func (s *Source) Count(ctx context.Context, query string, day civil.Date) (int64, error) {
	row, err := s.one(ctx, "SELECT COUNT(*) FROM ("+wrapped(query)+")", day, "count rows of day")
	if err != nil {
		return 0, err
	}
	n, ok := row[0].(int64)
	if !ok {
		return 0, fmt.Errorf("count rows of day %s: COUNT(*) returned %T", day, row[0])
	}
	return n, nil
}

// Fingerprint is "<rows>:<xor of FARM_FINGERPRINT of each row's JSON>",
// computed in BigQuery and independent of row order.
func (s *Source) Fingerprint(ctx context.Context, query string, day civil.Date) (string, error) {
	sql := "SELECT COUNT(*), BIT_XOR(FARM_FINGERPRINT(TO_JSON_STRING(q))) FROM (" + wrapped(query) + ") q"
	row, err := s.one(ctx, sql, day, "fingerprint rows of day")
	if err != nil {
		return "", err
	}
	n, _ := row[0].(int64)
	x, _ := row[1].(int64) // NULL on an empty day
	return fmt.Sprintf("%d:%016x", n, uint64(x)), nil
}

// one runs sql for day and returns its single row.
func (s *Source) one(ctx context.Context, sql string, day civil.Date, what string) ([]bigquery.Value, error) {
	parent := ctx
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	op := fmt.Sprintf("%s %s", what, day)
	it, err := s.query(sql, day).Read(ctx)
	if err != nil {
		return nil, s.classify(parent, ctx, op, err)
	}
	var row []bigquery.Value
	if err := it.Next(&row); err != nil {
		return nil, s.classify(parent, ctx, op, err)
	}
	return row, nil
}

// Sample returns at most limit rows of query for day.
func (s *Source) Sample(ctx context.Context, query string, day civil.Date, limit int) (*warehouse.Batch, error) {
	parent := ctx
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	op := fmt.Sprintf("sample day %s", day)
	it, err := s.query(fmt.Sprintf("SELECT * FROM (%s) LIMIT %d", wrapped(query), max(limit, 0)), day).Read(ctx)
	if err != nil {
		return nil, s.classify(parent, ctx, op, err)
	}
	l := newLoader()
	for l.batch.Rows < limit {
		err := it.Next(l)
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, s.classify(parent, ctx, op, err)
		}
	}
	if l.schema == nil {
		l.setSchema(it.Schema)
	}
	return &l.batch, nil
}

// DryRun reports the bytes query would scan for day, without running it.
// The maximum_bytes_billed guard does not apply: this is the estimate a
// user compares with it.
func (s *Source) DryRun(ctx context.Context, query string, day civil.Date) (int64, error) {
	parent := ctx
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	q := s.query(query, day)
	q.MaxBytesBilled = 0
	q.DryRun = true
	op := fmt.Sprintf("dry run day %s", day)
	job, err := q.Run(ctx)
	if err != nil {
		return 0, s.classify(parent, ctx, op, err)
	}
	st := job.LastStatus()
	if st == nil || st.Statistics == nil {
		return 0, fmt.Errorf("%s: no statistics in the dry run's answer", op)
	}
	if err := st.Err(); err != nil {
		return 0, s.classify(parent, ctx, op, err)
	}
	return st.Statistics.TotalBytesProcessed, nil
}
