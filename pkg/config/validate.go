package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// FieldError names the field of the file that is wrong and why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// ApplyDefaults fills every unset tunable with its documented default.
func (f *File) ApplyDefaults() {
	if len(f.Kafka.Brokers) == 0 {
		f.Kafka.Brokers = []string{"127.0.0.1:9092"}
	}
	if f.Kafka.Partitions == 0 {
		f.Kafka.Partitions = 6
	}
	if f.Kafka.ReplicationFactor == 0 {
		f.Kafka.ReplicationFactor = 1
	}
	if f.Kafka.Retention == 0 {
		f.Kafka.Retention = 24 * time.Hour
	}
	if f.Redis.Addr == "" {
		f.Redis.Addr = "127.0.0.1:6379"
	}
	if f.Store.Schema == "" {
		f.Store.Schema = "sluice"
	}
	if f.HTTP.Addr == "" {
		f.HTTP.Addr = "127.0.0.1:8080"
	}
	p := &f.Pipeline
	if p.BatchRows == 0 {
		p.BatchRows = 2000
	}
	if p.LeaseTTL == 0 {
		p.LeaseTTL = 2 * time.Hour
	}
	if p.RateLimitWindow == 0 {
		p.RateLimitWindow = 2 * time.Hour
	}
	if p.MaxRejectedShare == 0 {
		p.MaxRejectedShare = 0.5
	}
	if p.WatchDays == 0 {
		p.WatchDays = 3
	}
	if p.WatchInterval == 0 {
		p.WatchInterval = time.Hour
	}
	if p.ReloadThreshold == 0 {
		p.ReloadThreshold = 0.05
	}
	if p.ScheduleCheckEvery == 0 {
		p.ScheduleCheckEvery = 15 * time.Minute
	}
	if p.CatchUpDays == 0 {
		p.CatchUpDays = 3
	}
	if p.ScheduleWindow == 0 {
		p.ScheduleWindow = 6 * time.Hour
	}
	for i := range f.Connections {
		c := &f.Connections[i]
		if c.MaxConcurrency == 0 {
			c.MaxConcurrency = 4
		}
		if c.QueryTimeout == 0 {
			c.QueryTimeout = 2 * time.Hour
		}
	}
	for i := range f.Ingestions {
		s := &f.Ingestions[i].Schedule
		if s.Mode == "" {
			s.Mode = ScheduleDaily
		}
	}
}

var (
	namePattern   = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
	sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Validate checks the whole file and joins every problem found.
func (f *File) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if f.Kafka.Partitions < 1 {
		bad("kafka.partitions", "must be at least 1")
	}
	switch f.Store.Kind {
	case "postgres":
		if f.Store.DSN == "" && f.Store.DSNEnv == "" {
			bad("store", "postgres needs dsn or dsn_env")
		}
	case "duckdb":
		if f.Store.Path == "" {
			bad("store.path", "duckdb needs a database file path")
		}
	case "":
		bad("store.kind", "required: postgres or duckdb")
	default:
		bad("store.kind", "unknown kind %q: want postgres or duckdb", f.Store.Kind)
	}
	if f.Pipeline.MaxRejectedShare < 0 || f.Pipeline.MaxRejectedShare > 1 {
		bad("pipeline.max_rejected_share", "must be between 0 and 1")
	}
	if f.Pipeline.ReloadThreshold < 0 {
		bad("pipeline.reload_threshold", "must not be negative")
	}

	projects := map[string]*Project{}
	for i := range f.Projects {
		p := &f.Projects[i]
		field := fmt.Sprintf("projects[%d]", i)
		if !namePattern.MatchString(p.Name) {
			bad(field+".name", "must be 1-128 letters, digits, _ . -")
		} else if projects[p.Name] != nil {
			bad(field+".name", "duplicate project %q", p.Name)
		}
		projects[p.Name] = p
		if len(p.APIKeys) == 0 {
			bad(field+".api_keys", "at least one key is required")
		}
		for j, k := range p.APIKeys {
			if !sha256Pattern.MatchString(k.SHA256) {
				bad(fmt.Sprintf("%s.api_keys[%d].sha256", field, j), "must be the lower-case hex SHA-256 of the key (sluice hash-key prints it)")
			}
		}
		if len(p.IDTypes) == 0 {
			bad(field+".id_types", "at least one unit id type is required")
		}
	}

	connections := map[string]*Connection{}
	for i := range f.Connections {
		c := &f.Connections[i]
		field := fmt.Sprintf("connections[%d]", i)
		if !namePattern.MatchString(c.Name) {
			bad(field+".name", "must be 1-128 letters, digits, _ . -")
		} else if connections[c.Name] != nil {
			bad(field+".name", "duplicate connection %q", c.Name)
		}
		connections[c.Name] = c
		switch c.Kind {
		case "duckdb":
			if c.Path == "" {
				bad(field+".path", "duckdb needs a database file path")
			}
			if c.MemoryLimit != "" && !ValidMemoryLimit(c.MemoryLimit) {
				bad(field+".memory_limit", "%q is not a size like 128MB or 2GB", c.MemoryLimit)
			}
		case "postgres", "redshift":
			if c.DSNEnv == "" && c.Host == "" {
				bad(field, "%s needs dsn_env or host", c.Kind)
			}
		case "snowflake":
			if c.Account == "" {
				bad(field+".account", "required for snowflake")
			}
			if c.User == "" {
				bad(field+".user", "required for snowflake")
			}
			if c.PasswordEnv == "" && c.PrivateKeyFile == "" {
				bad(field, "snowflake needs password_env or private_key_file")
			}
		case "bigquery":
			if c.ProjectID == "" {
				bad(field+".project_id", "required for bigquery")
			}
		case "":
			bad(field+".kind", "required: duckdb, postgres, redshift, snowflake or bigquery")
		default:
			bad(field+".kind", "unknown kind %q: want duckdb, postgres, redshift, snowflake or bigquery", c.Kind)
		}
		if c.MaxConcurrency < 1 {
			bad(field+".max_concurrency", "must be at least 1")
		}
	}

	seen := map[string]bool{}
	for i := range f.Ingestions {
		in := &f.Ingestions[i]
		field := fmt.Sprintf("ingestions[%d]", i)
		if !namePattern.MatchString(in.Name) {
			bad(field+".name", "must be 1-128 letters, digits, _ . -")
		}
		key := in.Project + "/" + in.Name
		if seen[key] {
			bad(field+".name", "duplicate ingestion %q in project %q", in.Name, in.Project)
		}
		seen[key] = true
		p := projects[in.Project]
		if p == nil {
			bad(field+".project", "unknown project %q", in.Project)
		}
		if connections[in.Connection] == nil {
			bad(field+".connection", "unknown connection %q", in.Connection)
		}
		if strings.TrimSpace(in.Query) == "" {
			bad(field+".query", "required")
		}
		switch in.Type {
		case TypeEvents:
			validateEventsMapping(field+".mapping", in.Mapping, p, bad)
		case TypeMetrics:
			validateMetricsMapping(field+".mapping", in.Mapping, bad)
		default:
			bad(field+".type", "must be events or metrics, got %q", in.Type)
		}
		s := in.Schedule
		switch s.Mode {
		case ScheduleDaily, ScheduleAPITriggered:
		default:
			bad(field+".schedule.mode", "must be daily or api_triggered, got %q", s.Mode)
		}
		if h := s.HourOrDefault(); h < 0 || h > 23 {
			bad(field+".schedule.hour", "must be 0-23, got %d", h)
		}
		if _, err := s.Location(); err != nil {
			bad(field+".schedule.timezone", "unknown time zone %q: use an IANA name or an offset like -08:00", s.Timezone)
		}
	}
	return errors.Join(errs...)
}

func validateEventsMapping(field string, m Mapping, p *Project, bad func(string, string, ...any)) {
	if m.EventName == "" {
		bad(field+".event_name", "required for events")
	}
	if m.Timestamp == "" {
		bad(field+".timestamp", "required for events")
	}
	switch m.TimestampUnit {
	case "", "seconds", "milliseconds", "microseconds", "auto":
	default:
		bad(field+".timestamp_unit", "must be seconds, milliseconds, microseconds or auto, got %q", m.TimestampUnit)
	}
	if len(m.IDs) == 0 {
		bad(field+".ids", "at least one id type -> column is required")
	}
	if p != nil {
		for idType := range m.IDs {
			if !contains(p.IDTypes, idType) {
				bad(field+".ids."+idType, "id type is not one of the project's id types %v (case-sensitive)", p.IDTypes)
			}
		}
	}
	for _, f := range []struct{ name, v string }{{"unit_id", m.UnitID}, {"id_type", m.IDType}, {"date", m.Date}, {"metric_name", m.MetricName}, {"metric_value", m.MetricValue}, {"numerator", m.Numerator}, {"denominator", m.Denominator}} {
		if f.v != "" {
			bad(field+"."+f.name, "is a metrics field; this ingestion's type is events")
		}
	}
}

func validateMetricsMapping(field string, m Mapping, bad func(string, string, ...any)) {
	for _, f := range []struct{ name, v string }{{"unit_id", m.UnitID}, {"id_type", m.IDType}, {"date", m.Date}, {"metric_name", m.MetricName}} {
		if f.v == "" {
			bad(field+"."+f.name, "required for metrics")
		}
	}
	if m.MetricValue == "" && (m.Numerator == "" || m.Denominator == "") {
		bad(field+".metric_value", "metrics need metric_value or numerator and denominator")
	}
	if (m.Numerator == "") != (m.Denominator == "") {
		bad(field+".numerator", "numerator and denominator go together")
	}
	for _, f := range []struct{ name, v string }{{"event_name", m.EventName}, {"timestamp", m.Timestamp}, {"event_value", m.EventValue}, {"metadata_json", m.MetadataJSON}} {
		if f.v != "" {
			bad(field+"."+f.name, "is an events field; this ingestion's type is metrics")
		}
	}
	if len(m.IDs) > 0 || len(m.Metadata) > 0 {
		bad(field, "ids and metadata are events fields; this ingestion's type is metrics")
	}
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// Project returns the named project.
func (f *File) Project(name string) (*Project, bool) {
	for i := range f.Projects {
		if f.Projects[i].Name == name {
			return &f.Projects[i], true
		}
	}
	return nil, false
}

// Connection returns the named connection.
func (f *File) Connection(name string) (*Connection, bool) {
	for i := range f.Connections {
		if f.Connections[i].Name == name {
			return &f.Connections[i], true
		}
	}
	return nil, false
}

// Ingestion returns the project's named ingestion.
func (f *File) Ingestion(project, name string) (*Ingestion, bool) {
	for i := range f.Ingestions {
		if f.Ingestions[i].Project == project && f.Ingestions[i].Name == name {
			return &f.Ingestions[i], true
		}
	}
	return nil, false
}

// DefaultDuckDBMemoryLimit keeps a DuckDB warehouse's block cache within a
// service's 256 MiB: a day streamed out of a large table would otherwise
// fill it up to DuckDB's default of 80% of the machine's memory. Measured
// (scripts/bench): the extractor streaming a 2M-row day peaks at ~258 MiB
// with 64MB, about half of it the binary's own mapped pages; a filter
// and projection streams no slower at 32MB. Queries that sort or join
// spill to disk beyond it: such connections should set a larger one.
const DefaultDuckDBMemoryLimit = "32MB"

var memoryLimitPattern = regexp.MustCompile(`^[0-9]+(\.[0-9]+)? ?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$`)

// ValidMemoryLimit reports whether s is a size DuckDB's memory_limit
// accepts, in the only forms Sluice passes on (it is put into a SET).
func ValidMemoryLimit(s string) bool { return memoryLimitPattern.MatchString(s) }
