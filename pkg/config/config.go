// Package config reads and validates Sluice's one declarative YAML file:
// infrastructure (Kafka, Redis, store, HTTP), projects, connections and
// ingestions. A bad file stops start-up with an error naming the field.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"
)

// File is the whole configuration.
type File struct {
	Kafka       Kafka        `yaml:"kafka"`
	Redis       Redis        `yaml:"redis"`
	Store       Store        `yaml:"store"`
	HTTP        HTTP         `yaml:"http"`
	Pipeline    Pipeline     `yaml:"pipeline"`
	Projects    []Project    `yaml:"projects"`
	Connections []Connection `yaml:"connections"`
	Ingestions  []Ingestion  `yaml:"ingestions"`
}

// Kafka says where the broker is and how topics are created.
type Kafka struct {
	Brokers           []string      `yaml:"brokers"`
	Partitions        int32         `yaml:"partitions"`
	ReplicationFactor int16         `yaml:"replication_factor"`
	Retention         time.Duration `yaml:"retention"`
	TopicPrefix       string        `yaml:"topic_prefix"`
}

// Redis holds coordination state.
type Redis struct {
	Addr        string `yaml:"addr"`
	DB          int    `yaml:"db"`
	PasswordEnv string `yaml:"password_env"`
}

// Store is the event store: postgres in production, duckdb embedded.
type Store struct {
	Kind   string `yaml:"kind"`    // postgres | duckdb
	DSNEnv string `yaml:"dsn_env"` // postgres: environment variable holding the DSN
	DSN    string `yaml:"dsn"`     // postgres: DSN without secrets (dev only)
	Path   string `yaml:"path"`    // duckdb: database file
	Schema string `yaml:"schema"`  // postgres: schema name, default "sluice"
}

// HTTP is the trigger service's listener.
type HTTP struct {
	Addr string `yaml:"addr"`
}

// Pipeline holds the tunables shared by the services.
type Pipeline struct {
	BatchRows          int           `yaml:"batch_rows"`           // rows per raw-rows record
	LeaseTTL           time.Duration `yaml:"lease_ttl"`            // one run per day in flight
	RateLimitWindow    time.Duration `yaml:"rate_limit_window"`    // mark_data_ready, per project and type
	MaxRejectedShare   float64       `yaml:"max_rejected_share"`   // a run rejecting more fails
	WatchDays          int           `yaml:"watch_days"`           // re-count days this long after first load
	WatchInterval      time.Duration `yaml:"watch_interval"`       // between re-counts of one day
	ReloadThreshold    float64       `yaml:"reload_threshold"`     // relative count change that reloads
	ScheduleCheckEvery time.Duration `yaml:"schedule_check_every"` // presence re-check inside a window
	ScheduleWindow     time.Duration `yaml:"schedule_window"`      // how long after the hour the window stays open
	CatchUpDays        int           `yaml:"catch_up_days"`        // on start, load missed days this far back
}

// Project is a tenant.
type Project struct {
	Name       string   `yaml:"name"`
	APIKeys    []APIKey `yaml:"api_keys"`
	IDTypes    []string `yaml:"id_types"`
	WebhookURL string   `yaml:"webhook_url"`
}

// APIKey is stored as the hex SHA-256 of the key, never the key itself.
type APIKey struct {
	Name   string `yaml:"name"`
	SHA256 string `yaml:"sha256"`
}

// Connection is one warehouse. Secrets come from environment variables or
// files named here, never from the file itself.
type Connection struct {
	Name           string        `yaml:"name"`
	Kind           string        `yaml:"kind"` // duckdb | postgres | redshift | snowflake | bigquery
	MaxConcurrency int           `yaml:"max_concurrency"`
	QueryTimeout   time.Duration `yaml:"query_timeout"`

	// duckdb
	Path string `yaml:"path"`
	// MemoryLimit caps the memory of the DuckDB database Sluice opens
	// ("128MB", "1GB"); empty means DefaultDuckDBMemoryLimit. DuckDB caches
	// the table blocks a scan reads up to this limit, and spills big sorts
	// and joins to disk beyond it.
	MemoryLimit string `yaml:"memory_limit"`

	// postgres / redshift
	DSNEnv      string `yaml:"dsn_env"`
	Host        string `yaml:"host"`
	Port        int    `yaml:"port"`
	User        string `yaml:"user"`
	Database    string `yaml:"database"`
	PasswordEnv string `yaml:"password_env"`
	SSLMode     string `yaml:"sslmode"`

	// snowflake
	Account                 string `yaml:"account"`
	Role                    string `yaml:"role"`
	Warehouse               string `yaml:"warehouse"`
	Schema                  string `yaml:"schema"`
	PrivateKeyFile          string `yaml:"private_key_file"`
	PrivateKeyPassphraseEnv string `yaml:"private_key_passphrase_env"`

	// bigquery
	ProjectID          string `yaml:"project_id"`
	Location           string `yaml:"location"`
	CredentialsFile    string `yaml:"credentials_file"` // service-account JSON; empty = application default credentials
	MaximumBytesBilled int64  `yaml:"maximum_bytes_billed"`

	// Endpoint overrides the service address (tests, private links).
	Endpoint string `yaml:"endpoint"`
}

// Ingestion types.
const (
	TypeEvents  = "events"
	TypeMetrics = "metrics"
)

// Ingestion is one query + mapping + schedule; the API calls it a source.
type Ingestion struct {
	Name       string   `yaml:"name"`
	Project    string   `yaml:"project"`
	Connection string   `yaml:"connection"`
	Type       string   `yaml:"type"`
	Query      string   `yaml:"query"` // the date is its one bound parameter, in the warehouse's placeholder syntax
	Mapping    Mapping  `yaml:"mapping"`
	Schedule   Schedule `yaml:"schedule"`
}

// Mapping maps query columns to the canonical record. Events use EventName,
// Timestamp, IDs, EventValue, Metadata, MetadataJSON; metrics use UnitID,
// IDType, Date, MetricName, MetricValue, Numerator, Denominator.
type Mapping struct {
	EventName     string            `yaml:"event_name"`
	Timestamp     string            `yaml:"timestamp"`
	TimestampUnit string            `yaml:"timestamp_unit"` // seconds (default) | milliseconds | microseconds | auto
	IDs           map[string]string `yaml:"ids"`            // id type -> column
	EventValue    string            `yaml:"event_value"`
	Metadata      map[string]string `yaml:"metadata"` // key -> column
	MetadataJSON  string            `yaml:"metadata_json"`

	UnitID      string `yaml:"unit_id"`
	IDType      string `yaml:"id_type"`
	Date        string `yaml:"date"`
	MetricName  string `yaml:"metric_name"`
	MetricValue string `yaml:"metric_value"`
	Numerator   string `yaml:"numerator"`
	Denominator string `yaml:"denominator"`
}

// Schedule modes.
const (
	ScheduleDaily        = "daily"
	ScheduleAPITriggered = "api_triggered"
)

// DefaultTimezone is the seed product's clock: PST all year, no daylight saving.
const DefaultTimezone = "Etc/GMT+8"

// Schedule says when an ingestion loads on its own.
type Schedule struct {
	Mode     string `yaml:"mode"`     // daily (default) | api_triggered
	Hour     *int   `yaml:"hour"`     // 0-23, default 10
	Timezone string `yaml:"timezone"` // IANA name or fixed offset like -08:00; default Etc/GMT+8
}

// HourOrDefault is the scheduled hour.
func (s Schedule) HourOrDefault() int {
	if s.Hour == nil {
		return 10
	}
	return *s.Hour
}

// Location resolves the schedule's time zone: an IANA name or a fixed
// offset such as "-08:00".
func (s Schedule) Location() (*time.Location, error) {
	tz := s.Timezone
	if tz == "" {
		tz = DefaultTimezone
	}
	if m := offsetPattern.FindStringSubmatch(tz); m != nil {
		t, err := time.Parse("-07:00", tz)
		if err != nil {
			return nil, err
		}
		_, off := t.Zone()
		return time.FixedZone("UTC"+tz, off), nil
	}
	return time.LoadLocation(tz)
}

var offsetPattern = regexp.MustCompile(`^[+-]\d\d:\d\d$`)

// Load reads, defaults and validates the file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return f, nil
}

// Parse decodes YAML (unknown fields are errors), fills defaults and validates.
func Parse(data []byte) (*File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	f.ApplyDefaults()
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}
