package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Usage is one process's resources over a run.
type Usage struct {
	Name    string
	CPU     time.Duration
	PeakRSS int64 // VmHWM, bytes
}

func (u Usage) String() string {
	return fmt.Sprintf("%s cpu=%s rss=%s", u.Name, u.CPU.Round(10*time.Millisecond), mib(u.PeakRSS))
}

// PipelineRun is one day through the services.
type PipelineRun struct {
	Warehouse string
	Rows      int
	Took      time.Duration
	Services  []Usage // in start order
	Broker    Usage   // CPU during the run; peak RSS since the broker started
	// PostgresCPU is the PostgreSQL server's CPU during the run (warehouse
	// and store); MachineBusy is every CPU's non-idle time, whoever used it.
	PostgresCPU, MachineBusy time.Duration
}

func (r PipelineRun) RowsPerSec() float64 { return float64(r.Rows) / r.Took.Seconds() }

// DirectRun is one direct copy.
type DirectRun struct {
	Warehouse string
	Rows      int
	Took      time.Duration
	CPU       time.Duration // the copying process (the warehouse too, for in-process DuckDB)
	// As in PipelineRun.
	PostgresCPU, MachineBusy time.Duration
}

func (r DirectRun) RowsPerSec() float64 { return float64(r.Rows) / r.Took.Seconds() }

// WarehouseSummary holds the medians of one warehouse's runs.
type WarehouseSummary struct {
	Warehouse     string
	Rows          int
	PipelineRate  float64 // median rows/s
	DirectRate    float64
	PipelineRates []float64
	DirectRates   []float64
	Services      []Usage // median CPU and peak RSS per service
	Broker        Usage
	DirectCPU     time.Duration // median
	// Medians of the PostgreSQL server's CPU and of the machine's busy
	// share (busy CPU time over run time × CPUs) per kind of run.
	PipelinePostgresCPU, DirectPostgresCPU time.Duration
	PipelineBusyShare, DirectBusyShare     float64
}

func summarize(wh string, rows int, pipes []PipelineRun, directs []DirectRun) WarehouseSummary {
	s := WarehouseSummary{Warehouse: wh, Rows: rows}
	for _, p := range pipes {
		s.PipelineRates = append(s.PipelineRates, p.RowsPerSec())
	}
	var dcpu, dpg, dbusy, ppg, pbusy []float64
	for _, d := range directs {
		s.DirectRates = append(s.DirectRates, d.RowsPerSec())
		dcpu = append(dcpu, float64(d.CPU))
		dpg = append(dpg, float64(d.PostgresCPU))
		dbusy = append(dbusy, busyShare(d.MachineBusy, d.Took))
	}
	for _, p := range pipes {
		ppg = append(ppg, float64(p.PostgresCPU))
		pbusy = append(pbusy, busyShare(p.MachineBusy, p.Took))
	}
	s.PipelineRate, s.DirectRate = median(s.PipelineRates), median(s.DirectRates)
	s.DirectCPU = time.Duration(median(dcpu))
	s.PipelinePostgresCPU, s.DirectPostgresCPU = time.Duration(median(ppg)), time.Duration(median(dpg))
	s.PipelineBusyShare, s.DirectBusyShare = median(pbusy), median(dbusy)
	if len(pipes) == 0 {
		return s
	}
	usage := func(pick func(PipelineRun) Usage) Usage {
		var cpu, rss []float64
		for _, p := range pipes {
			u := pick(p)
			cpu, rss = append(cpu, float64(u.CPU)), append(rss, float64(u.PeakRSS))
		}
		return Usage{Name: pick(pipes[0]).Name, CPU: time.Duration(median(cpu)), PeakRSS: int64(median(rss))}
	}
	for i := range pipes[0].Services {
		s.Services = append(s.Services, usage(func(p PipelineRun) Usage { return p.Services[i] }))
	}
	s.Broker = usage(func(p PipelineRun) Usage { return p.Broker })
	return s
}

// busyShare is the share of the machine's CPU time that was busy.
func busyShare(busy, took time.Duration) float64 {
	if took <= 0 {
		return 0
	}
	return busy.Seconds() / (took.Seconds() * float64(runtime.NumCPU()))
}

// Machine describes where the bench ran.
type Machine struct {
	CPUs       int
	Memory     string
	CPUModel   string
	Go         string
	PostgreSQL string
}

func describeMachine(ctx context.Context, db *pgxpool.Pool) (Machine, error) {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), CPUModel: "unknown", Memory: "unknown"}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
				m.Memory = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	if err := db.QueryRow(ctx, "SHOW server_version").Scan(&m.PostgreSQL); err != nil {
		return m, fmt.Errorf("read PostgreSQL version: %w", err)
	}
	return m, nil
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// Results is everything one bench run measured.
type Results struct {
	Options    Options
	Machine    Machine
	Warehouses []WarehouseSummary
	Memory     []PipelineRun
	LoadBefore string
	LoadAfter  string
	Started    time.Time
	Took       time.Duration
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// cpuPerMillion is CPU seconds per million rows.
func cpuPerMillion(cpu time.Duration, rows int) string {
	return fmt.Sprintf("%.2f s", cpu.Seconds()/float64(rows)*1e6)
}

func rate(r float64) string {
	s := fmt.Sprintf("%.0f", r)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// Markdown is the report: printed, and written between the markers of
// BENCHMARKS.md, so the two always agree.
func (r *Results) Markdown() string {
	var b strings.Builder
	o := r.Options
	m := r.Machine
	mode := "three `sluice run` processes (`--target=extractor`, `--target=mapper`, `--target=loader`)"
	if o.Mode == "all" {
		mode = "one `sluice run --target=all` process"
	}
	batch := o.BatchRows
	if batch == 0 {
		batch = 2000
	}
	fmt.Fprintf(&b, "### Run of %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "`scripts/bench --rows %d --repeat %d --warehouse %s --mode %s", o.Rows, o.Repeat, strings.Join(o.Warehouses, ","), o.Mode)
	if len(o.MemorySizes) > 0 {
		var sizes []string
		for _, n := range o.MemorySizes {
			sizes = append(sizes, fmt.Sprint(n))
		}
		fmt.Fprintf(&b, " --memory %s", strings.Join(sizes, ","))
	}
	if o.BatchRows != 0 {
		fmt.Fprintf(&b, " --batch-rows %d", o.BatchRows)
	}
	if len(o.ServiceEnv) > 0 {
		fmt.Fprintf(&b, " --service-env %s", strings.Join(o.ServiceEnv, ","))
	}
	b.WriteString("`\n\n")
	fmt.Fprintf(&b, "- machine: %d CPUs (%s), %s memory; %s; PostgreSQL %s\n", m.CPUs, m.CPUModel, m.Memory, m.Go, m.PostgreSQL)
	fmt.Fprintf(&b, "- load average (1, 5, 15 min): %s before, %s after; the bench took %s\n", r.LoadBefore, r.LoadAfter, r.Took.Round(time.Second))
	fmt.Fprintf(&b, "- pipeline: %s, against a `sluice kafka` broker process (topic retention %s), Redis DB %d, the PostgreSQL store; %d rows per raw-rows record; timed from the dispatch of the request to the day's `IMPORT_SUCCESSFUL` in the store's days table\n",
		mode, topicRetention, o.RedisDB, batch)
	b.WriteString("- direct: the same source streams the same rows into the same table layout (with its index) by pgx CopyFrom in one process, no Kafka\n")
	fmt.Fprintf(&b, "- every figure is the median of %d runs; CPU is user+system from /proc/PID/stat, peak RSS is VmHWM read just before SIGTERM\n\n", o.Repeat)

	b.WriteString("| warehouse | rows | pipeline rows/s | direct rows/s | pipeline / direct |\n|---|---:|---:|---:|---:|\n")
	for _, w := range r.Warehouses {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.2f |\n", w.Warehouse, rate(float64(w.Rows)), rate(w.PipelineRate), rate(w.DirectRate), w.PipelineRate/w.DirectRate)
	}
	b.WriteString("\nAll runs, rows/s:\n\n")
	for _, w := range r.Warehouses {
		fmt.Fprintf(&b, "- %s: pipeline %s; direct %s\n", w.Warehouse, rates(w.PipelineRates), rates(w.DirectRates))
	}
	b.WriteString("\n| warehouse | process | CPU s per million rows | peak RSS |\n|---|---|---:|---:|\n")
	for _, w := range r.Warehouses {
		for _, u := range w.Services {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", w.Warehouse, u.Name, cpuPerMillion(u.CPU, w.Rows), mib(u.PeakRSS))
		}
		fmt.Fprintf(&b, "| %s | broker (kfake) | %s | %s |\n", w.Warehouse, cpuPerMillion(w.Broker.CPU, w.Rows), mib(w.Broker.PeakRSS))
		fmt.Fprintf(&b, "| %s | PostgreSQL server, pipeline | %s | |\n", w.Warehouse, cpuPerMillion(w.PipelinePostgresCPU, w.Rows))
		fmt.Fprintf(&b, "| %s | direct copy | %s | |\n", w.Warehouse, cpuPerMillion(w.DirectCPU, w.Rows))
		fmt.Fprintf(&b, "| %s | PostgreSQL server, direct | %s | |\n", w.Warehouse, cpuPerMillion(w.DirectPostgresCPU, w.Rows))
	}
	b.WriteString("\nShare of the machine's CPU time that was busy during the run (every process):\n\n| warehouse | pipeline | direct |\n|---|---:|---:|\n")
	for _, w := range r.Warehouses {
		fmt.Fprintf(&b, "| %s | %.0f%% | %.0f%% |\n", w.Warehouse, 100*w.PipelineBusyShare, 100*w.DirectBusyShare)
	}
	if len(r.Memory) > 0 {
		b.WriteString("\nPeak RSS as the day grows (one run each):\n\n| warehouse | rows | rows/s |")
		for _, u := range r.Memory[0].Services {
			fmt.Fprintf(&b, " %s |", u.Name)
		}
		b.WriteString(" broker (since start) |\n|---|---:|---:|")
		for range r.Memory[0].Services {
			b.WriteString("---:|")
		}
		b.WriteString("---:|\n")
		for _, p := range r.Memory {
			fmt.Fprintf(&b, "| %s | %s | %s |", p.Warehouse, rate(float64(p.Rows)), rate(p.RowsPerSec()))
			for _, u := range p.Services {
				fmt.Fprintf(&b, " %s |", mib(u.PeakRSS))
			}
			fmt.Fprintf(&b, " %s |\n", mib(p.Broker.PeakRSS))
		}
	}
	return b.String()
}

func rates(xs []float64) string {
	var s []string
	for _, x := range xs {
		s = append(s, rate(x))
	}
	return strings.Join(s, ", ")
}

// Markers delimit the generated part of BENCHMARKS.md; the prose around
// them is kept.
const (
	beginMarker = "<!-- bench:begin (scripts/bench --write replaces this part) -->"
	endMarker   = "<!-- bench:end -->"
)

func writeResults(path, text string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		data = []byte("# Benchmarks\n\n" + beginMarker + "\n" + endMarker + "\n")
	} else if err != nil {
		return err
	}
	s := string(data)
	i, j := strings.Index(s, beginMarker), strings.Index(s, endMarker)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q ... %q markers to replace", path, beginMarker, endMarker)
	}
	s = s[:i+len(beginMarker)] + "\n\n" + text + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
