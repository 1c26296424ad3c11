package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse/snowflake/sftest"
)

// The Snowflake-backed ingestion: an api_triggered events ingestion on a
// table of the in-process Snowflake protocol server (sftest), which runs
// in the suite's process; only its scenario loads it.
const (
	sfConnection  = "chaos_snowflake"
	sfIngestion   = "sf_events"
	sfQuery       = "SELECT event_name, event_time_s, user_id FROM sf_events WHERE ds = ?"
	sfUser        = "chaos"
	sfPasswordEnv = "SLUICE_CHAOS_SF_PASSWORD"
	sfPassword    = "chaos-s3cret"
	// sfChunkRows is the rows of the inline rowset and of each chunk: the
	// day streams in rows/sfChunkRows parts, two batches each.
	sfChunkRows = 1000
)

// snowflakeWH is the suite's Snowflake.
type snowflakeWH struct {
	srv  *sftest.Server
	host *tbHost
	day  civil.Date
	rows int
}

// tbHost is the testing.TB that sftest.NewServer asks for, outside a
// test: it keeps the server's cleanups for close. sftest calls only
// Helper, Cleanup and (on a listener it cannot parse) Fatalf.
type tbHost struct {
	testing.TB
	cleanups []func()
}

func (h *tbHost) Helper()                           {}
func (h *tbHost) Cleanup(f func())                  { h.cleanups = append(h.cleanups, f) }
func (h *tbHost) Fatalf(format string, args ...any) { panic("sftest: " + fmt.Sprintf(format, args...)) }

// startSnowflake serves a table with rows events on day, all good and
// each with its own user.
func startSnowflake(day civil.Date, rows int) (*snowflakeWH, error) {
	h := &tbHost{}
	srv := sftest.NewServer(h)
	w := &snowflakeWH{srv: srv, host: h, day: day, rows: rows}
	srv.AddUser(sfUser, sfPassword)
	srv.SetChunkRows(sfChunkRows)
	t := sftest.Table{Name: "SF_EVENTS", Columns: []sftest.Column{{Name: "ds", Type: "DATE"}, {Name: "event_name", Type: "TEXT"},
		{Name: "event_time_s", Type: "INTEGER"}, {Name: "user_id", Type: "TEXT"}}}
	start := day.In(time.UTC).Unix()
	for i := range rows {
		t.Rows = append(t.Rows, []any{day, "sf_click", start + int64(i%86400), "sf" + strconv.Itoa(i)})
	}
	if err := srv.AddTable(t); err != nil {
		w.close()
		return nil, fmt.Errorf("sftest table: %w", err)
	}
	return w, nil
}

func (w *snowflakeWH) close() {
	for i := len(w.host.cleanups) - 1; i >= 0; i-- {
		w.host.cleanups[i]()
	}
}

func (w *snowflakeWH) connection() config.Connection {
	return config.Connection{Name: sfConnection, Kind: "snowflake", Account: sftest.Account, User: sfUser,
		PasswordEnv: sfPasswordEnv, Database: "DB", Schema: "PUBLIC", Endpoint: w.srv.URL}
}

func (w *snowflakeWH) ingestion() config.Ingestion {
	return config.Ingestion{Name: sfIngestion, Project: demo.ProjectName, Connection: sfConnection, Type: config.TypeEvents, Query: sfQuery,
		Mapping:  config.Mapping{EventName: "event_name", Timestamp: "event_time_s", TimestampUnit: "seconds", IDs: map[string]string{"userID": "user_id"}},
		Schedule: config.Schedule{Mode: config.ScheduleAPITriggered}}
}

// dayQueries counts the query-requests that ran the day's query.
func (w *snowflakeWH) dayQueries() int {
	n := 0
	for _, q := range w.srv.Queries() {
		if q.SQL == sfQuery {
			n++
		}
	}
	return n
}

// check is the Snowflake day's reconciliation: loaded, every row visible
// once (each row has its own user), and the day's query run once: the
// extractor killed mid-stream resumed from its checkpoint on the kept
// result instead of querying again.
func (w *snowflakeWH) check(e *effects) func(ctx context.Context) ([]mismatch, error) {
	return func(ctx context.Context) ([]mismatch, error) {
		var status string
		var extracted, loaded, visible, positions, users int64
		err := e.pool.QueryRow(ctx, `SELECT d.status, d.extracted, d.rows_loaded,
			(SELECT count(*) FROM `+e.tbl("visible_events")+` v WHERE v.project = d.project AND v.ingestion = d.ingestion AND v.ds = d.ds),
			(SELECT count(DISTINCT position) FROM `+e.tbl("visible_events")+` v WHERE v.project = d.project AND v.ingestion = d.ingestion AND v.ds = d.ds),
			(SELECT count(DISTINCT v.unit_ids->>'userID') FROM `+e.tbl("visible_events")+` v WHERE v.project = d.project AND v.ingestion = d.ingestion AND v.ds = d.ds)
			FROM `+e.tbl("days")+` d WHERE d.project = $1 AND d.ingestion = $2 AND d.ds = $3`,
			demo.ProjectName, sfIngestion, w.day.String()).Scan(&status, &extracted, &loaded, &visible, &positions, &users)
		day := w.day.String()
		if errors.Is(err, pgx.ErrNoRows) {
			return []mismatch{{sfIngestion, day, "no day in the store yet"}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read the Snowflake day: %w", err)
		}
		var out []mismatch
		bad := func(format string, args ...any) {
			out = append(out, mismatch{sfIngestion, day, fmt.Sprintf(format, args...)})
		}
		n := int64(w.rows)
		if vocab.Status(status) != vocab.StatusSuccessful {
			bad("status %q, want loaded", status)
		} else if extracted != n || loaded != n || visible != n || positions != n || users != n {
			bad("extracted %d, loaded %d, visible %d rows at %d positions of %d users; the warehouse has %d rows, one per user", extracted, loaded, visible, positions, users, n)
		}
		if q := w.dayQueries(); q > 1 {
			bad("the day's query ran %d times, want once (a resumed extraction fetches the kept result by query id); server %+v", q, w.srv.Stats())
		}
		return out, nil
	}
}

// snowflakeMidStream loads the Snowflake day and SIGKILLs the extractor
// while it streams: chunk downloads are held once the inline rowset's
// batches are acknowledged (the run's checkpoint says so), the extractor
// is killed, and the chunk URLs the query issued expire a few downloads
// into the resumed stream (a long extraction outliving them).
func (s *suite) snowflakeMidStream(ctx context.Context) []string {
	w := s.sf
	s.rec.effects.addCheck(w.check(s.rec.effects))
	release := w.srv.HoldChunks()
	defer release()
	held := w.srv.Stats().HeldChunks
	if err := s.markReady(ctx, "events", sfIngestion, w.day.String()); err != nil {
		logf("Snowflake day: %v", err)
		return []string{"Snowflake day NOT requested: " + err.Error()}
	}
	var seq int64
	deadline := time.Now().Add(time.Minute)
	for {
		err := s.pool.QueryRow(ctx, `SELECT c.next_seq FROM `+pgx.Identifier{storeSchma, "extract_checkpoints"}.Sanitize()+` c
			JOIN `+pgx.Identifier{storeSchma, "runs"}.Sanitize()+` r ON r.project = c.project AND r.run_id = c.run_id
			WHERE r.project = $1 AND r.ingestion = $2 AND r.ds = $3`, demo.ProjectName, sfIngestion, w.day.String()).Scan(&seq)
		if err == nil && seq >= 2 && w.srv.Stats().HeldChunks > held {
			break
		}
		if time.Now().After(deadline) || !sleep(ctx, 20*time.Millisecond) {
			return []string{fmt.Sprintf("Snowflake day never streamed (checkpoint %d, %v; server %+v)", seq, err, w.srv.Stats())}
		}
	}
	if !s.procs["extractor"].kill() {
		return []string{"Snowflake day: no extractor to kill"}
	}
	sleep(ctx, 200*time.Millisecond)
	release()
	w.srv.ExpireChunkURLsAfter(2)
	return []string{fmt.Sprintf("SIGKILL extractor mid-stream (Snowflake day: %d of %d batches acknowledged, download held; chunk URLs expire 2 downloads later)",
		seq, 2*w.rows/sfChunkRows)}
}

// markReady asks the trigger's API to load day of an api_triggered
// ingestion, retrying while the trigger (re)starts.
func (s *suite) markReady(ctx context.Context, typ, ingestion, day string) error {
	body, err := json.Marshal(map[string]any{"type": typ, "datestamps": day, "sources": []string{ingestion}})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.httpAddr+"/v1/mark_data_ready_dwh", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("statsig-api-key", apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted {
				return nil
			}
			err = fmt.Errorf("POST /v1/mark_data_ready_dwh: %s: %s", resp.Status, answer)
			if resp.StatusCode < 500 {
				return err
			}
		}
		if time.Now().After(deadline) || !sleep(ctx, 500*time.Millisecond) {
			return fmt.Errorf("mark %s %s ready: %w", ingestion, day, err)
		}
	}
}
