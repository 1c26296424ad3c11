package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
)

// TestRunLogLinesCarryTheRun runs `sluice dev --once` with JSON logs at
// debug level and checks that every log line about a run carries run_id,
// ingestion and day, so one search finds a run's whole story.
func TestRunLogLinesCarryTheRun(t *testing.T) {
	var out, logs syncBuffer
	code := dispatch(t.Context(), []string{"dev", "--once", "--days", "2", "--events-per-day", "500",
		"--kafka-addr", freeAddr(t), "--http-addr", freeAddr(t), "--api-key", "k", "--data-dir", t.TempDir(),
		"--log-level", "debug", "--log-format", "json"}, &out, &logs)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), logs.String())
	}

	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		lines = append(lines, line)
	}
	runIDs := map[string]bool{}
	services := map[string]bool{}
	for _, l := range lines {
		if id, ok := l["run_id"].(string); ok && id != "" {
			runIDs[id] = true
			if svc, ok := l["service"].(string); ok {
				services[svc] = true
			}
		}
	}
	if len(runIDs) == 0 {
		t.Fatalf("no log line names a run:\n%s", logs.String())
	}
	// The extractor and the loader both log every run they handle.
	for _, svc := range []string{"extractor", "loader"} {
		if !services[svc] {
			t.Errorf("no run log line from the %s (services seen: %v)", svc, services)
		}
	}
	for _, l := range lines {
		if !mentionsRun(l, runIDs) {
			continue
		}
		for _, key := range []string{"run_id", "ingestion", "day"} {
			if v, _ := l[key].(string); v == "" {
				t.Errorf("log line about a run lacks %s: %v", key, l)
			}
		}
	}
}

// mentionsRun reports whether any value of the line names one of the runs.
func mentionsRun(line map[string]any, runIDs map[string]bool) bool {
	for _, v := range line {
		if s, ok := v.(string); ok {
			if runIDs[s] {
				return true
			}
			for id := range runIDs {
				if strings.Contains(s, id) {
					return true
				}
			}
		}
	}
	return false
}
