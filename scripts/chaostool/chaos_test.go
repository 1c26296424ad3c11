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
// It takes a couple of minutes (bounded by settle per scenario); the full
// run is scripts/chaos (RELIABILITY.md). It needs PostgreSQL and Redis and
// skips without them outside CI.
func TestChaosShort(t *testing.T) {
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
	// minutes per scenario is ample (a dead member kfake kept held a group
	// for 60 s before the broker evicted it in every state) and keeps a
	// regression from holding the test run for long.
	code := run(t.Context(), options{short: true, seed: 20240301, settle: 2 * time.Minute}, &table)
	t.Log("\n" + table.String())
	if code != 0 {
		t.Fatalf("the fault suite found mismatches (exit %d); see the table above", code)
	}
	for _, name := range []string{"reloads, Redis flushed", "extractor SIGKILLed in its first second", "Snowflake day, extractor SIGKILLed mid-stream",
		"SIGTERM of sluice run --target=all", "webhooks: "} {
		if !strings.Contains(table.String(), name) {
			t.Errorf("the table lacks %q:\n%s", name, table.String())
		}
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
