package snowflake

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
	"github.com/sluicehq/sluice/schemas"
)

// bigTable has rows rows on day: ID, NAME, and 3 rows on another day.
func bigTable(rows int) sftest.Table {
	t := sftest.Table{Name: "BIG", Columns: []sftest.Column{{Name: "ID", Type: "INTEGER"}, {Name: "DAY", Type: "DATE"}, {Name: "NAME", Type: "TEXT"}}}
	for i := range rows {
		t.Rows = append(t.Rows, []any{i, day, "name-" + strconv.Itoa(i)})
	}
	for i := range 3 {
		t.Rows = append(t.Rows, []any{i, day.AddDays(1), "other"})
	}
	return t
}

const bigQuery = "SELECT ID, NAME FROM big WHERE day = ?;"

func TestChunkedDayStreamsInBoundedBatches(t *testing.T) {
	t.Parallel()
	for _, format := range []string{sftest.FormatArrow, sftest.FormatJSON} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			srv, cfg := newServer(t)
			srv.SetFormat(format)
			srv.SetChunkRows(200) // 1000 rows: inline rowset + 4 chunks
			addTable(t, srv, bigTable(1000))
			src := open(t, cfg)
			got, sizes := collect(t, src, bigQuery, 150)
			if got.Rows != 1000 {
				t.Fatalf("%d rows, want 1000", got.Rows)
			}
			for i, n := range sizes {
				if n > 150 || (i < len(sizes)-1 && n != 150) {
					t.Fatalf("batch sizes %v, want 150 each but the last", sizes)
				}
			}
			for i := range 1000 {
				if got.Columns[0].Longs[i] != int64(i) || got.Columns[1].Strings[i] != "name-"+strconv.Itoa(i) {
					t.Fatalf("row %d = %d %q", i, got.Columns[0].Longs[i], got.Columns[1].Strings[i])
				}
			}
			if d := srv.Stats().ChunkDownloads; d != 4 {
				t.Errorf("%d chunk downloads, want 4", d)
			}
			if n, err := src.Count(context.Background(), bigQuery, day); err != nil || n != 1000 {
				t.Errorf("Count = %d, %v; want 1000", n, err)
			}
			b, err := src.Sample(context.Background(), bigQuery, day, 5)
			if err != nil || b.Rows != 5 || len(b.Columns) != 2 || b.Columns[1].Strings[4] != "name-4" {
				t.Errorf("Sample(5) = %+v, %v", b, err)
			}
		})
	}
}

func TestSessionExpiryAndAsyncResult(t *testing.T) {
	t.Parallel()
	srv, cfg := newServer(t)
	srv.SetChunkRows(100)
	addTable(t, srv, bigTable(300))
	src := open(t, cfg)
	srv.SetAsyncPolls(2)    // answered 333333, then polled on getResultUrl
	srv.ExpireSessionOnce() // the query-request itself gets 390112
	got, _ := collect(t, src, bigQuery, 1000)
	if got.Rows != 300 {
		t.Fatalf("%d rows, want 300", got.Rows)
	}
	st := srv.Stats()
	if st.Renewals != 1 || st.ResultPolls < 2 {
		t.Fatalf("stats %+v, want 1 session renewal and 2 result polls", st)
	}
	// Expiry while polling for the result, mid-query.
	srv.SetAsyncPolls(3)
	got, _ = collect(t, src, bigQuery, 1000)
	srv.ExpireSessionOnce()
	got2, _ := collect(t, src, bigQuery, 1000)
	if got.Rows != 300 || got2.Rows != 300 || srv.Stats().Renewals != 2 {
		t.Fatalf("rows %d, %d, stats %+v; want 300 each and 2 renewals", got.Rows, got2.Rows, srv.Stats())
	}
}

func TestErrorsAreCategorized(t *testing.T) {
	t.Parallel()
	srv, cfg := newServer(t)
	srv.SetChunkRows(10)
	addTable(t, srv, bigTable(100))
	src := open(t, cfg)
	tests := []struct {
		name, query string
		expire      bool
		cat         vocab.Category
		transient   bool
		code        string
	}{
		{"missing table", "SELECT ID FROM missing WHERE day = ?", false, vocab.CategoryQuery, false, "002003"},
		{"syntax", "SELEC ID FROM big WHERE day = ?", false, vocab.CategoryQuery, false, "001003"},
		{"missing column", "SELECT NOPE FROM big WHERE day = ?", false, vocab.CategoryQuery, false, "000904"},
		{"expired chunk url", bigQuery, true, vocab.CategoryConnection, true, "262000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.ExpireChunks(tt.expire)
			defer srv.ExpireChunks(false)
			emitted := 0
			_, err := src.Stream(context.Background(), tt.query, day, 1000, func(b *warehouse.Batch) error {
				emitted += b.Rows
				return nil
			})
			cat, transient := warehouse.Categorize(err)
			if cat != tt.cat || transient != tt.transient {
				t.Fatalf("error %v: %s transient %v, want %s transient %v", err, cat, transient, tt.cat, tt.transient)
			}
			if !containsStr(err.Error(), tt.code) {
				t.Errorf("error %q does not carry code %s", err, tt.code)
			}
			if tt.name == "missing table" && !containsStr(err.Error(), "SELECT on the table") {
				t.Errorf("missing-table error %q has no hint about grants", err)
			}
			if tt.expire && emitted != 0 {
				// Only the inline rowset preceded the failing chunk; the run fails as a whole.
				t.Logf("emitted %d rows before the chunk failure", emitted)
			}
		})
	}
}

func containsStr(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestCancelStopsTheStream(t *testing.T) {
	t.Parallel()
	srv, cfg := newServer(t)
	srv.SetChunkRows(50)
	addTable(t, srv, bigTable(1000))
	src := open(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	n, err := src.Stream(ctx, bigQuery, day, 50, func(*warehouse.Batch) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls != 1 || n != 50 {
		t.Fatalf("Stream after cancel = %d rows, %d emits, %v; want 50, 1, context.Canceled", n, calls, err)
	}
	if d := srv.Stats().ChunkDownloads; d > 1 {
		t.Errorf("%d chunks downloaded after cancel, want at most 1", d)
	}
}

// A NUMBER(38,0) column is LONG, and DECIMAL text only in a batch that
// holds a value beyond int64; nothing is truncated.
func TestIntegerPromotionPerBatch(t *testing.T) {
	t.Parallel()
	for _, format := range []string{sftest.FormatArrow, sftest.FormatJSON} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			srv, cfg := newServer(t)
			srv.SetFormat(format)
			srv.SetChunkRows(2)
			addTable(t, srv, sftest.Table{Name: "N", Columns: []sftest.Column{{Name: "DAY", Type: "DATE"}, {Name: "X", Type: "NUMBER(38,0)"}},
				Rows: [][]any{{day, 1}, {day, "99999999999999999999"}, {day, nil}, {day, 3}}})
			src := open(t, cfg)
			var types []string
			var texts [][]string
			_, err := src.Stream(context.Background(), "SELECT X FROM n WHERE day = ?", day, 2, func(b *warehouse.Batch) error {
				c := b.Columns[0]
				types = append(types, c.Type)
				if c.Type == schemas.TypeDecimal {
					texts = append(texts, append([]string(nil), c.Strings...))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(types) != 2 || types[0] != schemas.TypeDecimal || types[1] != schemas.TypeLong {
				t.Fatalf("batch types %v, want [DECIMAL LONG]", types)
			}
			if texts[0][0] != "1" || texts[0][1] != "99999999999999999999" {
				t.Fatalf("decimal batch %v", texts[0])
			}
		})
	}
}

func TestEncryptedPrivateKeyIsRejectedWithoutPassphrase(t *testing.T) {
	t.Parallel()
	path := t.TempDir() + "/enc.p8"
	pemText := "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQIAAAAAAAAAAACAggA\n-----END ENCRYPTED PRIVATE KEY-----\n"
	if err := os.WriteFile(path, []byte(pemText), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), config.Connection{Name: "sf", Account: "a", User: "u", PrivateKeyFile: path})
	if cat, _ := warehouse.Categorize(err); cat != vocab.CategoryConfig || !containsStr(err.Error(), "private_key_passphrase_env") {
		t.Fatalf("error %v, want a config error naming private_key_passphrase_env", err)
	}
}

// TestLiveSnowflake runs against a real account when SNOWFLAKE_TEST_ACCOUNT,
// SNOWFLAKE_TEST_USER and SNOWFLAKE_TEST_PASSWORD are set (optionally
// SNOWFLAKE_TEST_ROLE, SNOWFLAKE_TEST_WAREHOUSE, SNOWFLAKE_TEST_DATABASE).
func TestLiveSnowflake(t *testing.T) {
	account, user := os.Getenv("SNOWFLAKE_TEST_ACCOUNT"), os.Getenv("SNOWFLAKE_TEST_USER")
	if account == "" || user == "" || os.Getenv("SNOWFLAKE_TEST_PASSWORD") == "" {
		t.Skip("live Snowflake test: set SNOWFLAKE_TEST_ACCOUNT, SNOWFLAKE_TEST_USER and SNOWFLAKE_TEST_PASSWORD to run")
	}
	cfg := config.Connection{
		Name: "live", Kind: "snowflake", Account: account, User: user, PasswordEnv: "SNOWFLAKE_TEST_PASSWORD",
		Role: os.Getenv("SNOWFLAKE_TEST_ROLE"), Warehouse: os.Getenv("SNOWFLAKE_TEST_WAREHOUSE"),
		Database: os.Getenv("SNOWFLAKE_TEST_DATABASE"), QueryTimeout: 2 * time.Minute,
	}
	src := open(t, cfg)
	query := `SELECT SEQ8() AS ID, TO_NUMBER(SEQ8()) * 1.25 AS PRICE, ?::DATE AS DAY, 'x' || SEQ8() AS NAME,
		CURRENT_TIMESTAMP() AS TS, PARSE_JSON('{"a":1}') AS V FROM TABLE(GENERATOR(ROWCOUNT => 200000))`
	got, sizes := collect(t, src, query, 10000)
	if got.Rows != 200000 || len(sizes) < 20 {
		t.Fatalf("%d rows in %d batches, want 200000 in at least 20", got.Rows, len(sizes))
	}
	want := []string{schemas.TypeLong, schemas.TypeDecimal, schemas.TypeDate, schemas.TypeString, schemas.TypeTimestamp, schemas.TypeJSON}
	for i, w := range want {
		if got.Columns[i].Type != w {
			t.Errorf("column %s type %s, want %s", got.Columns[i].Name, got.Columns[i].Type, w)
		}
	}
	if n, err := src.Count(context.Background(), query, day); err != nil || n != 200000 {
		t.Errorf("Count = %d, %v", n, err)
	}
	if fp, err := src.Fingerprint(context.Background(), "SELECT ?::DATE AS D, 1 AS X", day); err != nil || fp == "" {
		t.Errorf("Fingerprint = %q, %v", fp, err)
	}
}
