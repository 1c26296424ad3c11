package demo

import (
	"time"
)

// Column lists in table order; the seeders append values in this order.
var (
	eventColumns = []string{
		"event_id", "ds", "event_ts", "event_time_s", "event_name", "event_value",
		"user_id", "device_id", "company_id", "country", "platform", "properties",
	}
	metricColumns = []string{
		"ds", "unit_id", "id_type", "metric_name", "metric_value", "numerator", "denominator",
	}
)

// eventsDDL creates the events table. The types are the common subset of
// DuckDB and PostgreSQL; properties is text so a bad row can hold broken JSON.
func eventsDDL(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
	event_id     VARCHAR NOT NULL,
	ds           DATE NOT NULL,
	event_ts     TIMESTAMP NOT NULL,
	event_time_s BIGINT NOT NULL,
	event_name   VARCHAR,
	event_value  VARCHAR,
	user_id      VARCHAR,
	device_id    VARCHAR,
	company_id   BIGINT,
	country      VARCHAR,
	platform     VARCHAR,
	properties   VARCHAR
)`
}

func metricsDDL(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
	ds           DATE NOT NULL,
	unit_id      VARCHAR NOT NULL,
	id_type      VARCHAR NOT NULL,
	metric_name  VARCHAR NOT NULL,
	metric_value DOUBLE PRECISION,
	numerator    DOUBLE PRECISION,
	denominator  DOUBLE PRECISION
)`
}

// values appends the row's column values, nil for NULL, to dst[:0].
func (ev *Event) values(dst []any) []any {
	dst = append(dst[:0], ev.EventID, ev.Date.In(time.UTC), ev.TS, ev.TimeS)
	dst = append(dst, nullString(ev.Name, ev.NameNull), nullString(ev.Value, ev.ValueNull),
		nullString(ev.UserID, ev.UserNull), nullString(ev.DeviceID, ev.DeviceNull))
	if ev.CompanyNull {
		dst = append(dst, nil)
	} else {
		dst = append(dst, ev.CompanyID)
	}
	return append(dst, ev.Country, ev.Platform, ev.Properties)
}

func (m *Metric) values(dst []any) []any {
	dst = append(dst[:0], m.Date.In(time.UTC), m.UnitID, m.IDType, m.Name)
	return append(dst, nullFloat(m.Value, m.ValueNull), nullFloat(m.Numerator, m.NumNull), nullFloat(m.Denominator, m.DenNull))
}

func nullString(s string, null bool) any {
	if null {
		return nil
	}
	return s
}

func nullFloat(f float64, null bool) any {
	if null {
		return nil
	}
	return f
}

// quoteIdent quotes an SQL identifier for DuckDB and PostgreSQL alike.
func quoteIdent(s string) string {
	out := make([]byte, 0, len(s)+2)
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			out = append(out, '"')
		}
		out = append(out, s[i])
	}
	return string(append(out, '"'))
}

// qualified is schema.table quoted, or the table alone without a schema.
func qualified(schema, table string) string {
	if schema == "" {
		return quoteIdent(table)
	}
	return quoteIdent(schema) + "." + quoteIdent(table)
}
