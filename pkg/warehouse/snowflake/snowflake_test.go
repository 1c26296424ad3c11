package snowflake

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
	"github.com/sluicehq/sluice/schemas"
)

// TestMain turns off gosnowflake's cloud-metadata probes before any
// connection is made (see the package comment).
func TestMain(m *testing.M) {
	os.Setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
	os.Setenv("SF_DISABLE_MINICORE", "true")
	os.Setenv(passwordEnv, testPassword)
	os.Setenv(wrongPasswordEnv, "nope")
	os.Exit(m.Run())
}

const (
	testUser     = "loader"
	testPassword = "s3cret"
	passwordEnv  = "SLUICE_SFTEST_PASSWORD"

	wrongPasswordEnv = "SLUICE_SFTEST_WRONG"
)

var day = civil.Date{Year: 2024, Month: 1, Day: 2}

// newServer starts sftest with the password user and returns a
// connection config pointing at it.
func newServer(tb testing.TB) (*sftest.Server, config.Connection) {
	tb.Helper()
	srv := sftest.NewServer(tb)
	srv.AddUser(testUser, testPassword)
	return srv, config.Connection{
		Name: "sf", Kind: "snowflake", Account: sftest.Account, User: testUser, PasswordEnv: passwordEnv,
		Role: "SLUICE", Warehouse: "XS", Database: "DB", Schema: "PUBLIC", Endpoint: srv.URL,
	}
}

func open(tb testing.TB, cfg config.Connection) *Source {
	tb.Helper()
	src, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { src.Close() })
	return src
}

func addTable(tb testing.TB, srv *sftest.Server, t sftest.Table) {
	tb.Helper()
	if err := srv.AddTable(t); err != nil {
		tb.Fatal(err)
	}
}

// typesTable has one row per value of every Snowflake type, a null row and
// a row on another day.
func typesTable() sftest.Table {
	huge, _ := new(big.Int).SetString("123456789012345678901234567890", 10)
	tz := time.FixedZone("", 2*3600)
	ts := time.Date(2024, 3, 5, 6, 7, 8, 123456789, time.UTC)
	return sftest.Table{
		Name: "DB.PUBLIC.TYPES",
		Columns: []sftest.Column{
			{Name: "DAY", Type: "DATE"},
			{Name: "SMALL", Type: "NUMBER(38,0)"},
			{Name: "BIG", Type: "NUMBER(38,0)"},
			{Name: "HUGE", Type: "NUMBER(38,0)"},
			{Name: "PRICE", Type: "NUMBER(10,2)"},
			{Name: "EXACT", Type: "NUMBER(38,10)"},
			{Name: "F", Type: "FLOAT"},
			{Name: "B", Type: "BOOLEAN"},
			{Name: "S", Type: "TEXT"},
			{Name: "D", Type: "DATE"},
			{Name: "NTZ", Type: "TIMESTAMP_NTZ"},
			{Name: "NTZ3", Type: "TIMESTAMP_NTZ(3)"},
			{Name: "LTZ", Type: "TIMESTAMP_LTZ"},
			{Name: "TZ", Type: "TIMESTAMP_TZ"},
			{Name: "TZ3", Type: "TIMESTAMP_TZ(3)"},
			{Name: "V", Type: "VARIANT"},
			{Name: "BIN", Type: "BINARY"},
		},
		Rows: [][]any{
			{day, 7, int64(9007199254740993), huge, "-1.5", "1234567890123456789012345678.0123456789", 3.25, true, "héllo, \"w\"",
				civil.Date{Year: 1969, Month: 12, Day: 31}, ts, ts.Truncate(time.Millisecond), ts, ts.In(tz), ts.In(tz).Truncate(time.Millisecond),
				`{"a":[1,null]}`, []byte{0, 1, 255}},
			{day, -7, int64(-1), int64(1), "0.05", "-0.0000000001", -0.5, false, "",
				civil.Date{Year: 2024, Month: 2, Day: 29}, time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC),
				time.Unix(0, 0), time.Unix(0, 0).In(tz), time.Unix(0, 0).In(tz), `[]`, []byte{}},
			{day, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil},
			{civil.Date{Year: 2024, Month: 1, Day: 3}, 1, 1, 1, "1", "1", 1.0, true, "other", nil, nil, nil, nil, nil, nil, nil, nil},
		},
	}
}

// wantTypes is typesTable's day as raw-rows columns (types and values).
func wantTypes() []schemas.Column {
	ts := time.Date(2024, 3, 5, 6, 7, 8, 123456000, time.UTC).UnixMicro()
	ms := time.Date(2024, 3, 5, 6, 7, 8, 123000000, time.UTC).UnixMicro()
	old := time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	n := []byte{0, 0, 1}
	return []schemas.Column{
		{Name: "SMALL", Type: schemas.TypeLong, Nulls: n, Longs: []int64{7, -7, 0}},
		{Name: "BIG", Type: schemas.TypeLong, Nulls: n, Longs: []int64{9007199254740993, -1, 0}},
		{Name: "HUGE", Type: schemas.TypeDecimal, Nulls: n, Strings: []string{"123456789012345678901234567890", "1", ""}},
		{Name: "PRICE", Type: schemas.TypeDecimal, Nulls: n, Strings: []string{"-1.50", "0.05", ""}},
		{Name: "EXACT", Type: schemas.TypeDecimal, Nulls: n, Strings: []string{"1234567890123456789012345678.0123456789", "-0.0000000001", ""}},
		{Name: "F", Type: schemas.TypeDouble, Nulls: n, Doubles: []float64{3.25, -0.5, 0}},
		{Name: "B", Type: schemas.TypeBoolean, Nulls: n, Bools: []bool{true, false, false}},
		{Name: "S", Type: schemas.TypeString, Nulls: n, Strings: []string{"héllo, \"w\"", "", ""}},
		{Name: "D", Type: schemas.TypeDate, Nulls: n, Longs: []int64{-1, 19782, 0}},
		{Name: "NTZ", Type: schemas.TypeTimestamp, Nulls: n, Longs: []int64{ts, old, 0}},
		{Name: "NTZ3", Type: schemas.TypeTimestamp, Nulls: n, Longs: []int64{ms, old, 0}},
		{Name: "LTZ", Type: schemas.TypeTimestamp, Nulls: n, Longs: []int64{ts, 0, 0}},
		{Name: "TZ", Type: schemas.TypeTimestamp, Nulls: n, Longs: []int64{ts, 0, 0}},
		{Name: "TZ3", Type: schemas.TypeTimestamp, Nulls: n, Longs: []int64{ms, 0, 0}},
		{Name: "V", Type: schemas.TypeJSON, Nulls: n, Strings: []string{`{"a":[1,null]}`, `[]`, ""}},
		{Name: "BIN", Type: schemas.TypeBytes, Nulls: n, Strings: []string{"AAH/", "", ""}},
	}
}

const typesQuery = "SELECT SMALL, BIG, HUGE, PRICE, EXACT, F, B, S, D, NTZ, NTZ3, LTZ, TZ, TZ3, V, BIN FROM types WHERE day = ?"

// collect streams query into one batch, copying each emitted batch.
func collect(tb testing.TB, src *Source, query string, batchRows int) (warehouse.Batch, []int) {
	tb.Helper()
	var all warehouse.Batch
	var sizes []int
	n, err := src.Stream(context.Background(), query, day, batchRows, func(b *warehouse.Batch) error {
		sizes = append(sizes, b.Rows)
		if all.Columns == nil {
			all.Columns = make([]schemas.Column, len(b.Columns))
		}
		for i, c := range b.Columns {
			a := &all.Columns[i]
			a.Name, a.Type = c.Name, c.Type
			a.Nulls = append(a.Nulls, c.Nulls...)
			a.Bools = append(a.Bools, c.Bools...)
			a.Longs = append(a.Longs, c.Longs...)
			a.Doubles = append(a.Doubles, c.Doubles...)
			a.Strings = append(a.Strings, c.Strings...)
		}
		all.Rows += b.Rows
		return nil
	})
	if err != nil {
		tb.Fatalf("stream: %v", err)
	}
	if n != int64(all.Rows) {
		tb.Fatalf("stream returned %d, emitted %d rows", n, all.Rows)
	}
	return all, sizes
}

func sameColumns(tb testing.TB, got []schemas.Column, want []schemas.Column) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%d columns, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		g.DBType = ""
		norm := func(c *schemas.Column) {
			if len(c.Bools) == 0 {
				c.Bools = nil
			}
			if len(c.Longs) == 0 {
				c.Longs = nil
			}
			if len(c.Doubles) == 0 {
				c.Doubles = nil
			}
			if len(c.Strings) == 0 {
				c.Strings = nil
			}
		}
		norm(&g)
		norm(&w)
		if !reflect.DeepEqual(g, w) {
			tb.Errorf("column %s:\n got %+v\nwant %+v", w.Name, g, w)
		}
	}
}

func TestTypesBothFormats(t *testing.T) {
	t.Parallel()
	for _, format := range []string{sftest.FormatArrow, sftest.FormatJSON} {
		for _, chunkRows := range []int{1, 1000} {
			t.Run(format+"/chunk"+itoa(chunkRows), func(t *testing.T) {
				t.Parallel()
				srv, cfg := newServer(t)
				srv.SetFormat(format)
				srv.SetChunkRows(chunkRows)
				addTable(t, srv, typesTable())
				src := open(t, cfg)
				// One batch: HUGE is DECIMAL only in a batch holding a value beyond int64.
				got, _ := collect(t, src, typesQuery, 10)
				sameColumns(t, got.Columns, wantTypes())
				q := srv.Queries()
				last := q[len(q)-1]
				if b, ok := last.Bindings["1"]; !ok || b.Value != "2024-01-02" {
					t.Errorf("date binding = %+v, want the day bound as parameter 1", last.Bindings)
				}
			})
		}
	}
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

func TestPasswordAndJWTLogin(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := writeKey(t, key)
	tests := []struct {
		name     string
		edit     func(*config.Connection)
		wantCat  vocab.Category // "" = success
		wantAuth int
	}{
		{"password", func(*config.Connection) {}, "", 1},
		{"wrong password", func(c *config.Connection) { c.PasswordEnv = wrongPasswordEnv }, vocab.CategoryAuthentication, 0},
		{"jwt", func(c *config.Connection) { c.User, c.PasswordEnv, c.PrivateKeyFile = "keyuser", "", keyFile }, "", 1},
		{"jwt wrong key", func(c *config.Connection) {
			c.User, c.PasswordEnv, c.PrivateKeyFile = "keyuser", "", writeKey(t, other)
		}, vocab.CategoryAuthentication, 0},
		{"jwt unknown user", func(c *config.Connection) { c.User, c.PasswordEnv, c.PrivateKeyFile = "nobody", "", keyFile }, vocab.CategoryAuthentication, 0},
		{"no credentials", func(c *config.Connection) { c.PasswordEnv = "" }, vocab.CategoryConfig, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, cfg := newServer(t)
			srv.AddKeyPairUser("keyuser", &key.PublicKey)
			tt.edit(&cfg)
			src, err := Open(context.Background(), cfg)
			if tt.wantCat == "" {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				defer src.Close()
				if n, err := src.Count(context.Background(), "SELECT 1 FROM nothing WHERE day = ?", day); err == nil {
					t.Fatalf("count on a missing table = %d, want an error", n)
				}
			} else {
				if err == nil {
					src.Close()
					t.Fatal("open succeeded, want an error")
				}
				cat, transient := warehouse.Categorize(err)
				if cat != tt.wantCat || transient {
					t.Fatalf("error %v: category %s transient %v, want %s not transient", err, cat, transient, tt.wantCat)
				}
			}
			if got := srv.Stats().Logins; got != tt.wantAuth {
				t.Errorf("%d successful logins, want %d", got, tt.wantAuth)
			}
		})
	}
}

func writeKey(tb testing.TB, key *rsa.PrivateKey) string {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "key.p8")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
