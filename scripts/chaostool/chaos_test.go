package main

import (
	"bytes"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestChaosShort runs the fault suite in short mode: every service as its
// own process, SIGKILLed at random, the broker restarted, Redis flushed,
// warehouse queries failed, and every day reconciled after each scenario.
// It runs with SLUICE_CHAOS=1 (a few minutes, bounded by settle per
// scenario); the full run is scripts/chaos (RELIABILITY.md). It is opt-in
// because the SIGKILL reload scenario still fails now and then: a killed
// consumer-group member can keep its partitions until the broker restarts
// (RELIABILITY.md, known limits), and a red CI would block every change.
func TestChaosShort(t *testing.T) {
	if os.Getenv("SLUICE_CHAOS") == "" {
		t.Skip("set SLUICE_CHAOS=1 to run the short fault suite (it still flakes on the SIGKILL reload scenario; see RELIABILITY.md)")
	}
	for _, addr := range []string{"127.0.0.1:5432", "127.0.0.1:6379"} {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			if os.Getenv("CI") == "" {
				t.Skipf("%s is not reachable (%v); scripts/test starts PostgreSQL and Redis", addr, err)
			}
			t.Fatalf("%s: %v", addr, err)
		}
		c.Close()
	}
	var table bytes.Buffer
	logOut = testLog{t}
	defer func() { logOut = os.Stderr }()
	// Recovery from a SIGKILL takes about a session timeout (10 s); two
	// minutes per scenario is ample and keeps a regression from holding
	// the test run for long.
	code := run(t.Context(), options{short: true, seed: 20240301, settle: 2 * time.Minute}, &table)
	t.Log("\n" + table.String())
	if code != 0 {
		t.Fatalf("the fault suite found mismatches (exit %d); see the table above", code)
	}
	if !strings.Contains(table.String(), "reloads, Redis flushed") {
		t.Errorf("the table lacks a scenario:\n%s", table.String())
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
