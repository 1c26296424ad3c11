package main

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/demo"
	pgstore "github.com/sluicehq/sluice/pkg/store/postgres"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/pkg/warehouse/duckdb"
	"github.com/sluicehq/sluice/pkg/warehouse/postgres"
	"github.com/sluicehq/sluice/schemas"
)

// directBatchRows is how many rows the direct copy reads at a time.
const directBatchRows = 8192

// directRun is the yardstick: what a user would write instead of Sluice.
// One process reads the day from the warehouse through the same source
// and COPYs it (pgx CopyFrom, binary) into a table of the store's layout,
// with its index. It builds unit_ids and metadata as JSON text but does no
// validation or normalisation.
func (b *bench) directRun(ctx context.Context, wh string, rows int) (any, error) {
	b.seq++
	tag := fmt.Sprintf("d%d", b.seq)
	f, err := b.settings(wh, rows, tag)
	if err != nil {
		return nil, err
	}
	schema := f.Store.Schema
	st, err := pgstore.Open(ctx, b.dbURL, pgstore.Options{Schema: schema, Logger: b.log})
	if err != nil {
		return nil, err
	}
	err = st.Migrate(ctx)
	st.Close()
	if err != nil {
		return nil, fmt.Errorf("create the direct copy's tables: %w", err)
	}
	ing, ok := f.Ingestion(demo.ProjectName, demo.WebEventsAPI)
	if !ok {
		return nil, fmt.Errorf("demo config lost ingestion %s", demo.WebEventsAPI)
	}
	src, err := openSource(ctx, f.Connections[0])
	if err != nil {
		return nil, err
	}
	defer src.Close()
	conn, err := b.db.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()

	cpu0, pgCPU0, busy0 := selfCPU(), postgresCPU(), machineBusy()
	start := time.Now()
	dc := newDirectCopy(ingestionRow{project: demo.ProjectName, ingestion: demo.WebEventsAPI, day: benchDay.In(time.UTC)})
	streamErr := make(chan error, 1)
	go func() {
		defer close(dc.filled)
		_, err := src.Stream(ctx, ing.Query, benchDay, directBatchRows, dc.emit)
		streamErr <- err
	}()
	n, err := conn.Conn().CopyFrom(ctx, pgx.Identifier{schema, "events"},
		[]string{"xid", "project", "ingestion", "ds", "position", "event_name", "event_value", "time", "unit_ids", "metadata"}, dc)
	if err != nil {
		dc.abort()
		<-streamErr
		return nil, fmt.Errorf("direct copy: %w", err)
	}
	if err := <-streamErr; err != nil {
		return nil, fmt.Errorf("direct copy: read the warehouse: %w", err)
	}
	took := time.Since(start)
	if n != int64(rows) {
		return nil, fmt.Errorf("direct copy wrote %d rows, want %d", n, rows)
	}
	run := DirectRun{Warehouse: wh, Rows: rows, Took: took, CPU: selfCPU() - cpu0, PostgresCPU: postgresCPU() - pgCPU0, MachineBusy: machineBusy() - busy0}
	b.log.Info("direct run", "warehouse", wh, "rows", rows, "took", took.Round(time.Millisecond), "rows_per_s", int(run.RowsPerSec()),
		"cpu", run.CPU.Round(10*time.Millisecond), "postgres_cpu", run.PostgresCPU.Round(10*time.Millisecond), "machine_busy", fmt.Sprintf("%.0f%%", 100*busyShare(run.MachineBusy, took)))
	if _, err := b.db.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		return nil, fmt.Errorf("drop direct schema: %w", err)
	}
	return run, nil
}

func openSource(ctx context.Context, c config.Connection) (warehouse.Source, error) {
	if c.Kind == "duckdb" {
		return duckdb.Open(c)
	}
	return postgres.Open(ctx, c)
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type ingestionRow struct {
	project, ingestion string
	day                time.Time
}

// directCopy hands rows from the warehouse stream to CopyFrom. Two row
// buffers alternate, so reading the next batch overlaps writing this one.
type directCopy struct {
	meta     ingestionRow
	filled   chan [][]any
	free     chan [][]any
	stopped  chan struct{}
	cur      [][]any
	i        int
	position int64
	buf      []byte
}

func newDirectCopy(meta ingestionRow) *directCopy {
	d := &directCopy{meta: meta, filled: make(chan [][]any, 1), free: make(chan [][]any, 2), stopped: make(chan struct{})}
	d.free <- nil
	d.free <- nil
	return d
}

func (d *directCopy) abort() { close(d.stopped) }

// emit converts one warehouse batch into COPY rows.
func (d *directCopy) emit(bt *warehouse.Batch) error {
	var rows [][]any
	select {
	case rows = <-d.free:
	case <-d.stopped:
		return fmt.Errorf("copy stopped")
	}
	col := func(name string) *schemas.Column {
		i := slices.IndexFunc(bt.Columns, func(c schemas.Column) bool { return c.Name == name })
		if i < 0 {
			return nil
		}
		return &bt.Columns[i]
	}
	name, ts, value := col("event_name"), col("event_time_s"), col("event_value")
	user, device, company := col("user_id"), col("device_id"), col("company_id")
	country, platform, props := col("country"), col("platform"), col("properties")
	rows = rows[:0]
	for i := range bt.Rows {
		d.position++
		// Strings are immutable, so rows may keep them after the batch is reused.
		d.buf = d.buf[:0]
		d.buf = append(d.buf, '{')
		d.buf = appendMember(d.buf, "userID", user, i)
		d.buf = appendMember(d.buf, "stableID", device, i)
		if !company.IsNull(i) {
			if len(d.buf) > 1 {
				d.buf = append(d.buf, ',')
			}
			d.buf = fmt.Appendf(d.buf, `"companyID":"%d"`, company.Longs[i])
		}
		d.buf = append(d.buf, '}')
		unitIDs := string(d.buf)
		d.buf = d.buf[:0]
		d.buf = append(d.buf, '{')
		d.buf = appendMember(d.buf, "country", country, i)
		d.buf = appendMember(d.buf, "platform", platform, i)
		if p := props.Strings[i]; !props.IsNull(i) && len(p) > 2 {
			if len(d.buf) > 1 {
				d.buf = append(d.buf, ',')
			}
			d.buf = append(d.buf, p[1:len(p)-1]...)
		}
		d.buf = append(d.buf, '}')
		row := []any{int64(1), d.meta.project, d.meta.ingestion, d.meta.day, d.position,
			name.Strings[i], value.Strings[i], time.Unix(ts.Longs[i], 0), unitIDs, string(d.buf)}
		rows = append(rows, row)
	}
	select {
	case d.filled <- rows:
		return nil
	case <-d.stopped:
		return fmt.Errorf("copy stopped")
	}
}

// appendMember appends "key":"value" for a non-null string column.
func appendMember(dst []byte, key string, c *schemas.Column, i int) []byte {
	if c == nil || c.IsNull(i) {
		return dst
	}
	if len(dst) > 1 {
		dst = append(dst, ',')
	}
	dst = appendJSONString(dst, key)
	dst = append(dst, ':')
	return appendJSONString(dst, c.Strings[i])
}

func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// Next, Values and Err make directCopy a pgx.CopyFromSource.
func (d *directCopy) Next() bool {
	d.i++
	if d.i < len(d.cur) {
		return true
	}
	if d.cur != nil {
		d.free <- d.cur
	}
	var ok bool
	for {
		d.cur, ok = <-d.filled
		if !ok {
			d.cur = nil
			return false
		}
		d.i = 0
		if len(d.cur) > 0 {
			return true
		}
		d.free <- d.cur
	}
}

func (d *directCopy) Values() ([]any, error) { return d.cur[d.i], nil }
func (d *directCopy) Err() error             { return nil }
