package demo

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/config"
)

func TestConfigYAMLParsesBackToConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts ConfigOptions
	}{
		{"duckdb defaults", ConfigOptions{APIKey: "dev-key"}},
		{"postgres warehouse and store", ConfigOptions{
			APIKey:    "k",
			Warehouse: WarehousePostgres,
			Postgres:  PostgresWarehouse{DSNEnv: "DEMO_WAREHOUSE_DSN", Schema: "demo wh"},
			Store:     config.Store{Kind: "postgres", DSNEnv: "SLUICE_STORE_DSN", Schema: "sluice_e2e"},
			Kafka:     []string{"127.0.0.1:19092", "127.0.0.1:19093"},
			RedisAddr: "127.0.0.1:6379",
			HTTPAddr:  "127.0.0.1:18080",
			Tables:    Tables{EventsAPI: "events_api", MetricsAPI: "metrics_api"},
			Pipeline:  config.Pipeline{BatchRows: 500, ReloadThreshold: 0.05},
			Schedule:  &config.Schedule{Hour: intPtr(0), Timezone: "-08:00"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			text := ConfigYAML(tc.opts)
			parsed, err := config.Parse(text)
			if err != nil {
				t.Fatalf("config.Parse(ConfigYAML) = %v\n%s", err, text)
			}
			want := Config(tc.opts)
			if !reflect.DeepEqual(parsed, want) {
				t.Fatalf("parsed YAML differs from Config:\nparsed %+v\nwant   %+v\n%s", parsed, want, text)
			}
			if err := want.Validate(); err != nil {
				t.Fatalf("Config does not validate: %v", err)
			}
		})
	}
}

func TestConfigShape(t *testing.T) {
	t.Parallel()
	f := Config(ConfigOptions{APIKey: "secret-dev-key", Warehouse: WarehousePostgres,
		Postgres: PostgresWarehouse{Host: "127.0.0.1", User: "postgres", Database: "postgres", Schema: "wh"},
		Tables:   Tables{EventsAPI: "events_api"}})
	if got := f.Projects[0].APIKeys[0].SHA256; got != HashAPIKey("secret-dev-key") || strings.Contains(string(ConfigYAML(ConfigOptions{APIKey: "secret-dev-key"})), "secret-dev-key") {
		t.Fatalf("api key must be stored hashed only, got %q", got)
	}
	want := map[string]struct{ typ, mode, from string }{
		WebEvents:       {config.TypeEvents, config.ScheduleDaily, `FROM "wh"."events"`},
		WebEventsAPI:    {config.TypeEvents, config.ScheduleAPITriggered, `FROM "wh"."events_api"`},
		DailyMetrics:    {config.TypeMetrics, config.ScheduleDaily, `FROM "wh"."metrics"`},
		DailyMetricsAPI: {config.TypeMetrics, config.ScheduleAPITriggered, `FROM "wh"."metrics"`},
	}
	if len(f.Ingestions) != len(want) {
		t.Fatalf("got %d ingestions, want %d", len(f.Ingestions), len(want))
	}
	for _, in := range f.Ingestions {
		w, ok := want[in.Name]
		if !ok {
			t.Fatalf("unexpected ingestion %q", in.Name)
		}
		if in.Type != w.typ || in.Schedule.Mode != w.mode || !strings.Contains(in.Query, w.from) || !strings.HasSuffix(in.Query, "WHERE ds = $1") {
			t.Errorf("ingestion %s: type %s mode %s query %q; want %+v", in.Name, in.Type, in.Schedule.Mode, in.Query, w)
		}
		if w.mode == config.ScheduleDaily && (in.Schedule.HourOrDefault() != 10 || in.Schedule.Timezone != "Etc/GMT+8") {
			t.Errorf("ingestion %s: schedule %+v, want 10:00 Etc/GMT+8", in.Name, in.Schedule)
		}
	}
	ev, _ := f.Ingestion(ProjectName, WebEvents)
	if ev.Mapping.IDs["companyID"] != "company_id" || ev.Mapping.MetadataJSON != "properties" || ev.Mapping.Timestamp != "event_time_s" || ev.Mapping.Metadata["platform"] != "platform" {
		t.Errorf("events mapping %+v", ev.Mapping)
	}
	if c := f.Connections[0]; c.Kind != "postgres" || c.Host != "127.0.0.1" {
		t.Errorf("connection %+v, want the postgres warehouse", c)
	}
}

// The example file documents every field; it must stay a valid config.
func TestExampleFileParses(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("sluice.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := config.Parse(data)
	if err != nil {
		t.Fatalf("sluice.example.yaml: %v", err)
	}
	if len(f.Ingestions) < 4 || len(f.Connections) < 4 {
		t.Fatalf("example has %d ingestions and %d connections; it should show every kind", len(f.Ingestions), len(f.Connections))
	}
	// Every yaml key of config.File must appear in the example, so a field
	// added to pkg/config without documentation fails here.
	for _, key := range yamlKeys(reflect.TypeOf(config.File{})) {
		if !strings.Contains(string(data), key+":") {
			t.Errorf("sluice.example.yaml does not document %q", key)
		}
	}
}

func yamlKeys(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if key == "" || key == "-" {
			continue
		}
		out = append(out, key)
		ft := f.Type
		for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() == t.PkgPath() {
			out = append(out, yamlKeys(ft)...)
		}
	}
	return out
}
