package bigquery

import (
	"context"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/bigquery/bqtest"
	"github.com/sluicehq/sluice/schemas"
)

// seed adds sluice_test.events with n rows on testDay and 3 on the next day.
func seed(tb testing.TB, srv *bqtest.Server, n int) {
	tb.Helper()
	schema := bigquery.Schema{
		{Name: "id", Type: bigquery.IntegerFieldType},
		{Name: "day", Type: bigquery.DateFieldType},
		{Name: "name", Type: bigquery.StringFieldType},
	}
	var rows [][]bigquery.Value
	for i := range n + 3 {
		d := testDay
		if i >= n {
			d = testDay.AddDays(1)
		}
		rows = append(rows, []bigquery.Value{int64(i), d, "n"})
	}
	srv.AddTable(testDataset, "events", schema, rows)
}

const eventsQuery = "SELECT id, name FROM `sluice_test.events` WHERE day = @date"

// streamIDs streams query and checks ids 0..want-1 each arrive once.
func streamIDs(tb testing.TB, src *Source, want int) {
	tb.Helper()
	seen := make([]bool, want)
	n, err := src.Stream(context.Background(), eventsQuery, testDay, 250, func(b *warehouse.Batch) error {
		for _, id := range b.Columns[0].Longs {
			if id < 0 || id >= int64(want) || seen[id] {
				return errors.New("id out of range or repeated")
			}
			seen[id] = true
		}
		return nil
	})
	if err != nil || n != int64(want) {
		tb.Fatalf("Stream = %d, %v; want %d rows", n, err, want)
	}
}

func TestReadPaths(t *testing.T) {
	t.Parallel()
	const rows = 2000
	tests := []struct {
		name    string
		opts    func(*bqtest.Server) Options
		storage bool
	}{
		{"storage read over the endpoint", func(*bqtest.Server) Options { return Options{} }, true},
		{"storage read over bufconn", func(srv *bqtest.Server) Options {
			return Options{StorageOptions: []option.ClientOption{option.WithGRPCConn(srv.StorageConn(t)), option.WithoutAuthentication()}}
		}, true},
		{"REST paging", func(*bqtest.Server) Options { return Options{DisableStorageRead: true} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := bqtest.NewServer(t)
			srv.SetPageSize(300)
			seed(t, srv, rows)
			src := openTest(t, testConn(srv), tt.opts(srv))

			streamIDs(t, src, rows)
			st := srv.Stats()
			if st.Executed != 1 {
				t.Errorf("the stream ran %d queries, want 1", st.Executed)
			}
			if tt.storage {
				if st.ReadSessions != 1 || st.ReadRows != 1 || st.RecordBatches < rows/300 {
					t.Errorf("storage path: %d sessions, %d ReadRows calls, %d record batches; want 1, 1 and Arrow batches of every page", st.ReadSessions, st.ReadRows, st.RecordBatches)
				}
				// (job.Wait polls jobs.getQueryResults for no rows.)
				if st.TableData != 0 {
					t.Errorf("storage path also fetched %d tabledata pages", st.TableData)
				}
			} else {
				if st.TableData < rows/300 {
					t.Errorf("REST path fetched %d tabledata pages, want at least %d", st.TableData, rows/300)
				}
				if st.ReadRows != 0 {
					t.Errorf("REST path made %d ReadRows calls", st.ReadRows)
				}
			}
		})
	}
}

func TestNumericExact(t *testing.T) {
	t.Parallel()
	rat := func(s string) *big.Rat { r, _ := new(big.Rat).SetString(s); return r }
	schema := bigquery.Schema{
		{Name: "day", Type: bigquery.DateFieldType},
		{Name: "n", Type: bigquery.NumericFieldType},
		{Name: "bn", Type: bigquery.BigNumericFieldType},
	}
	for _, storage := range []bool{false, true} {
		t.Run(map[bool]string{false: "REST", true: "storage"}[storage], func(t *testing.T) {
			t.Parallel()
			srv := bqtest.NewServer(t)
			srv.SetPageSize(1) // two rows: a page token, so the storage path is taken
			srv.AddTable(testDataset, "nums", schema, [][]bigquery.Value{
				{testDay, rat("12345678901234567890.123456789"), rat("-0.00000000000000000000000000000000000001")},
				{testDay, rat("-99999999999999999999999999999.999999999"), rat("578960446186580977117854925043439539266.34992332820282019728792003956564819967")},
			})
			src := openTest(t, testConn(srv), Options{DisableStorageRead: !storage})
			var got [][]string
			_, err := src.Stream(context.Background(), "SELECT n, bn FROM nums WHERE day = @date", testDay, 10, func(b *warehouse.Batch) error {
				for r := range b.Rows {
					got = append(got, []string{b.Columns[0].Strings[r], b.Columns[1].Strings[r]})
				}
				if b.Columns[0].Type != schemas.TypeDecimal || b.Columns[1].Type != schemas.TypeDecimal {
					t.Errorf("types %s, %s; want DECIMAL", b.Columns[0].Type, b.Columns[1].Type)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want := [][]string{
				{"12345678901234567890.123456789", "-0.00000000000000000000000000000000000001"},
				{"-99999999999999999999999999999.999999999", "578960446186580977117854925043439539266.34992332820282019728792003956564819967"},
			}
			if len(got) != 2 || got[0][0] != want[0][0] || got[0][1] != want[0][1] || got[1][0] != want[1][0] || got[1][1] != want[1][1] {
				t.Fatalf("decimals = %q, want %q", got, want)
			}
			if storage && srv.Stats().ReadRows == 0 {
				t.Fatal("storage path not taken")
			}
		})
	}
}

func TestBytesGuardAndDryRun(t *testing.T) {
	t.Parallel()
	srv := bqtest.NewServer(t)
	seed(t, srv, 10)
	// id (8) + name (2+1) + day (8) over all 13 rows, filter or not: the
	// fake scans the whole table, as an unpartitioned one would be.
	const scanned = 13 * (8 + 3 + 8)

	src := openTest(t, testConn(srv), Options{})
	if got, err := src.DryRun(context.Background(), eventsQuery, testDay); err != nil || got != scanned {
		t.Fatalf("DryRun = %d, %v; want %d", got, err, scanned)
	}
	if st := srv.Stats(); st.JobInserts != 1 || st.Queries != 0 {
		t.Errorf("dry run made %d job inserts and %d queries, want 1 and 0", st.JobInserts, st.Queries)
	}

	tests := []struct {
		name    string
		max     int64
		wantErr bool
	}{
		{"no guard", 0, false},
		{"guard above the scan", scanned, false},
		{"guard below the scan", scanned - 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConn(srv)
			cfg.MaximumBytesBilled = tt.max
			src := openTest(t, cfg, Options{})
			n, err := src.Count(context.Background(), eventsQuery, testDay)
			if !tt.wantErr {
				if err != nil || n != 10 {
					t.Fatalf("Count = %d, %v; want 10", n, err)
				}
				return
			}
			if cat, transient := warehouse.Categorize(err); cat != vocab.CategoryQuery || transient {
				t.Fatalf("Count over the guard = %v (%s, transient %v); want QUERY_ERROR", err, cat, transient)
			}
			if !strings.Contains(err.Error(), "maximum_bytes_billed") {
				t.Errorf("error %q does not name maximum_bytes_billed", err)
			}
			// The dry run still reports what the query would scan.
			if got, err := src.DryRun(context.Background(), eventsQuery, testDay); err != nil || got != scanned {
				t.Errorf("DryRun under the guard = %d, %v; want %d", got, err, scanned)
			}
		})
	}
}

func TestErrorCategories(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fault     *bqtest.Fault
		query     string
		category  vocab.Category
		transient bool
	}{
		{"bad credentials", &bqtest.Fault{Code: 401, Reason: "authError", Message: "Request had invalid authentication credentials."}, eventsQuery, vocab.CategoryAuthentication, false},
		{"missing grant", &bqtest.Fault{Code: 403, Reason: "accessDenied", Message: "Access Denied: User does not have bigquery.jobs.create permission"}, eventsQuery, vocab.CategoryPermission, false},
		{"missing table", nil, "SELECT id FROM `sluice_test.nope` WHERE day = @date", vocab.CategoryQuery, false},
		{"missing column", nil, "SELECT nope FROM `sluice_test.events` WHERE day = @date", vocab.CategoryQuery, false},
		{"syntax error", nil, "SELEC id FROM `sluice_test.events`", vocab.CategoryQuery, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := bqtest.NewServer(t)
			seed(t, srv, 3)
			src := openTest(t, testConn(srv), Options{})
			if tt.fault != nil {
				srv.InjectFault(*tt.fault)
			}
			_, err := src.Count(context.Background(), tt.query, testDay)
			cat, transient := warehouse.Categorize(err)
			if cat != tt.category || transient != tt.transient {
				t.Fatalf("Count = %v: category %s transient %v; want %s transient %v", err, cat, transient, tt.category, tt.transient)
			}
		})
	}
}

func TestQueryTimeout(t *testing.T) {
	t.Parallel()
	srv := bqtest.NewServer(t)
	seed(t, srv, 3)
	cfg := testConn(srv)
	cfg.QueryTimeout = 50 * 1e6 // 50ms: the server hangs until the client gives up
	src := openTest(t, cfg, Options{})
	srv.InjectFault(bqtest.Fault{Hang: true})
	_, err := src.Stream(context.Background(), eventsQuery, testDay, 10, func(*warehouse.Batch) error { return nil })
	if cat, transient := warehouse.Categorize(err); cat != vocab.CategoryTimeout || !transient || !strings.Contains(err.Error(), "query_timeout") {
		t.Fatalf("Stream against a hung server = %v (%s, transient %v); want a transient QUERY_TIMEOUT naming query_timeout", err, cat, transient)
	}
}

func TestCategorize(t *testing.T) {
	t.Parallel()
	gerr := func(code int, reason string) error {
		return &googleapi.Error{Code: code, Errors: []googleapi.ErrorItem{{Reason: reason}}}
	}
	tests := []struct {
		name      string
		err       error
		category  vocab.Category
		transient bool
	}{
		{"401", gerr(401, ""), vocab.CategoryAuthentication, false},
		{"403 accessDenied", gerr(403, "accessDenied"), vocab.CategoryPermission, false},
		{"403 rateLimitExceeded", gerr(403, "rateLimitExceeded"), vocab.CategoryConnection, true},
		{"404 notFound", gerr(404, "notFound"), vocab.CategoryQuery, false},
		{"400 invalidQuery", gerr(400, "invalidQuery"), vocab.CategoryQuery, false},
		{"400 bytesBilledLimitExceeded", gerr(400, "bytesBilledLimitExceeded"), vocab.CategoryQuery, false},
		{"500 backendError", gerr(500, "backendError"), vocab.CategoryConnection, true},
		{"503", gerr(503, ""), vocab.CategoryConnection, true},
		{"job error", &bigquery.Error{Reason: "invalidQuery", Message: "Syntax error"}, vocab.CategoryQuery, false},
		{"grpc unavailable", status.Error(codes.Unavailable, "down"), vocab.CategoryConnection, true},
		{"grpc unauthenticated", status.Error(codes.Unauthenticated, "no"), vocab.CategoryAuthentication, false},
		{"grpc permission", status.Error(codes.PermissionDenied, "no"), vocab.CategoryPermission, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cat, transient := categorize(tt.err)
			if cat != tt.category || transient != tt.transient {
				t.Fatalf("categorize(%v) = %s, %v; want %s, %v", tt.err, cat, transient, tt.category, tt.transient)
			}
		})
	}
}

func TestOpenConfigErrors(t *testing.T) {
	t.Parallel()
	for _, cfg := range []config.Connection{
		{Name: "bq", Kind: "bigquery"},
		{Name: "bq", Kind: "bigquery", ProjectID: "p", Endpoint: "::not a url"},
	} {
		_, err := Open(context.Background(), cfg, option.WithoutAuthentication())
		if cat, _ := warehouse.Categorize(err); cat != vocab.CategoryConfig {
			t.Errorf("Open(%+v) = %v, want CONNECTION_CONFIG_ERROR", cfg, err)
		}
	}
}

// TestLiveBigQuery runs against a real project when credentials are present.
func TestLiveBigQuery(t *testing.T) {
	project, creds := os.Getenv("BIGQUERY_TEST_PROJECT"), os.Getenv("GOOGLE_APPLICATION_CREDENTIALS")
	if project == "" || creds == "" {
		t.Skip("set BIGQUERY_TEST_PROJECT and GOOGLE_APPLICATION_CREDENTIALS to run against real BigQuery")
	}
	ctx := context.Background()
	src, err := Open(ctx, config.Connection{Name: "live", Kind: "bigquery", ProjectID: project, CredentialsFile: creds, Location: os.Getenv("BIGQUERY_TEST_LOCATION")})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const rows = 30000
	query := "SELECT x, @date AS day, CAST('12345678901234567890.123456789' AS NUMERIC) AS n, [x, -x] AS arr FROM UNNEST(GENERATE_ARRAY(1, 30000)) AS x"
	day := civil.Date{Year: 2024, Month: 1, Day: 2}
	if n, err := src.Count(ctx, query, day); err != nil || n != rows {
		t.Fatalf("Count = %d, %v; want %d", n, err, rows)
	}
	got, err := src.Stream(ctx, query, day, 5000, func(b *warehouse.Batch) error {
		if b.Columns[1].Longs[0] != warehouse.DaysSinceEpoch(day) || b.Columns[2].Strings[0] != "12345678901234567890.123456789" {
			return errors.New("day or NUMERIC value is wrong")
		}
		return nil
	})
	if err != nil || got != rows {
		t.Fatalf("Stream = %d, %v; want %d", got, err, rows)
	}
	if _, err := src.DryRun(ctx, query, day); err != nil {
		t.Fatalf("DryRun: %v", err)
	}
	if fp, err := src.Fingerprint(ctx, query, day); err != nil || !strings.HasPrefix(fp, "30000:") {
		t.Fatalf("Fingerprint = %q, %v", fp, err)
	}
	_, err = src.Count(ctx, "SELECT 1 FROM `sluice_no_such_dataset.t` WHERE @date IS NOT NULL", day)
	if cat, _ := warehouse.Categorize(err); cat != vocab.CategoryQuery {
		t.Fatalf("missing table: %v, want QUERY_ERROR", err)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	srv := bqtest.NewServer(t)
	src := openTest(t, testConn(srv), Options{})
	if err := src.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
}
