package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// What the backends share about their rows and reads: the JSON columns of
// days and runs, and the conditions of the filtered reads. A backend
// renders a Cond in its dialect and scans its columns; the rest is here.

// Cond is one condition of a filtered read: Column Op Arg. Date says Arg
// is a YYYY-MM-DD string the backend compares as a date.
type Cond struct {
	Column string
	Op     string // =, <>, >=, <=
	Arg    any
	Date   bool
}

// Conds are the conditions that select f's days.
func (f DayFilter) Conds() []Cond {
	var c []Cond
	c = appendEq(c, "project", f.Project)
	c = appendEq(c, "ingestion", f.Ingestion)
	c = appendEq(c, "type", f.Type)
	c = appendDates(c, f.From, f.To)
	if !f.LoadedSince.IsZero() {
		c = append(c, Cond{Column: "first_loaded_at", Op: ">=", Arg: f.LoadedSince})
	}
	return c
}

// Conds are the conditions that select f's runs (Limit is not one).
func (f RunFilter) Conds() []Cond {
	var c []Cond
	c = appendEq(c, "project", f.Project)
	c = appendEq(c, "ingestion", f.Ingestion)
	return appendEq(c, "ds", f.Date) // runs keep ds as text
}

// UsageConds are the conditions of Store.Usage: project's rows with data
// dates in [from, to], either bound optional.
func UsageConds(project, from, to string) []Cond {
	return appendDates([]Cond{{Column: "project", Op: "=", Arg: project}}, from, to)
}

func appendEq(c []Cond, column, v string) []Cond {
	if v == "" {
		return c
	}
	return append(c, Cond{Column: column, Op: "=", Arg: v})
}

func appendDates(c []Cond, from, to string) []Cond {
	if from != "" {
		c = append(c, Cond{Column: "ds", Op: ">=", Arg: from, Date: true})
	}
	if to != "" {
		c = append(c, Cond{Column: "ds", Op: "<=", Arg: to, Date: true})
	}
	return c
}

// DecodeDay finishes a day a backend scanned: rejected is its stored
// reject counts (JSON), and its times become UTC.
func DecodeDay(d *Day, rejected []byte) error {
	var err error
	if d.Rejected, err = DecodeRejected(rejected); err != nil {
		return err
	}
	for _, t := range []*time.Time{d.FirstLoadedAt, d.LastLoadedAt, d.WarehouseAt} {
		if t != nil {
			*t = t.UTC()
		}
	}
	return nil
}

// DecodeRun finishes a run a backend scanned: rejected and history are its
// stored JSON columns, and its times become UTC.
func DecodeRun(r *Run, rejected, history []byte) error {
	var err error
	if r.Rejected, err = DecodeRejected(rejected); err != nil {
		return err
	}
	if err := json.Unmarshal(history, &r.History); err != nil {
		return fmt.Errorf("decode run history: %w", err)
	}
	if r.History == nil {
		r.History = []Stage{}
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	for i := range r.History {
		r.History[i].At = r.History[i].At.UTC()
	}
	return nil
}

// EncodeRejected is the JSON column of reject counts ("{}" for none).
func EncodeRejected(m map[string]int64) string {
	if m == nil {
		return "{}"
	}
	b, _ := json.Marshal(m) // a map of string to int64 always encodes
	return string(b)
}

// EncodeRun returns a run's JSON columns: reject counts and history.
func EncodeRun(r Run) (rejected, history string, err error) {
	h, err := json.Marshal(r.History)
	if err != nil {
		return "", "", fmt.Errorf("encode run history: %w", err)
	}
	return EncodeRejected(r.Rejected), string(h), nil
}

// AddStaged counts one staged batch whose reject counts are stored as
// JSON, when its seq belongs to an extraction of n batches (see Add).
func (t *Tally) AddStaged(seq, n, rowCount, mapped int64, rejected []byte) error {
	rj, err := DecodeRejected(rejected)
	if err != nil {
		return err
	}
	t.Add(seq, n, rowCount, mapped, rj)
	return nil
}

// SortNotifications puts claimed runs in ClaimNotifications' order:
// oldest first, by updated_at, then run id.
func SortNotifications(runs []Run) {
	sort.Slice(runs, func(i, j int) bool {
		if !runs[i].UpdatedAt.Equal(runs[j].UpdatedAt) {
			return runs[i].UpdatedAt.Before(runs[j].UpdatedAt)
		}
		return runs[i].RunID < runs[j].RunID
	})
}
