package main

import (
	"bytes"
	"context"
	"runtime/debug"
	"strings"
	"testing"
)

// TestEveryVerbHasHelp runs each verb with --help and with a flag it does
// not know: scripts rely on 0 for help and 2 for a usage error.
func TestEveryVerbHasHelp(t *testing.T) {
	t.Parallel()
	for _, v := range verbs() {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := dispatch(context.Background(), []string{v.name, "--help"}, &stdout, &stderr)
			if strings.Contains(stderr.String(), "not built yet") {
				t.Skipf("sluice %s is a placeholder: %s", v.name, strings.TrimSpace(stderr.String()))
			}
			if code != exitOK {
				t.Fatalf("sluice %s --help exited %d, want %d; stderr:\n%s", v.name, code, exitOK, stderr.String())
			}
			help := stdout.String() + stderr.String()
			if !strings.Contains(help, "Usage: sluice "+v.name) {
				t.Fatalf("sluice %s --help does not print its usage:\n%s", v.name, help)
			}

			stdout.Reset()
			stderr.Reset()
			code = dispatch(context.Background(), []string{v.name, "--no-such-flag"}, &stdout, &stderr)
			if code != exitUsage {
				t.Fatalf("sluice %s --no-such-flag exited %d, want %d", v.name, code, exitUsage)
			}
			if !strings.Contains(stderr.String(), "no-such-flag") {
				t.Fatalf("sluice %s --no-such-flag does not name the bad flag:\n%s", v.name, stderr.String())
			}
		})
	}
}

func TestTopLevelUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string // in stdout+stderr
	}{
		{"no arguments is a usage error", nil, exitUsage, []string{"Usage: sluice <command>"}},
		{"--help lists every verb and the exit codes", []string{"--help"}, exitOK,
			[]string{"Commands:", "Exit codes:", "  2  bad command", "  4  a dependency"}},
		{"help VERB is VERB --help", []string{"help", "hash-key"}, exitOK, []string{"Usage: sluice hash-key"}},
		{"an unknown verb is a usage error", []string{"frobnicate"}, exitUsage, []string{`unknown command "frobnicate"`}},
		{"version", []string{"version"}, exitOK, []string{"sluice "}},
	}
	for _, v := range verbs() {
		tests[1].wantOut = append(tests[1].wantOut, "  "+v.name+" ")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := dispatch(context.Background(), tt.args, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d:\n%s", code, tt.wantCode, out)
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestBuildVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		info *debug.BuildInfo
		ok   bool
		want []string
	}{
		{"no build info", nil, false, []string{"unknown version"}},
		{"a tagged module with its commit", &debug.BuildInfo{GoVersion: "go1.26", Main: debug.Module{Version: "v1.2.3"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}}},
			true, []string{"sluice v1.2.3", "commit abc123 (modified)", "2026-01-02T03:04:05Z", "go1.26"}},
		{"a devel build", &debug.BuildInfo{GoVersion: "go1.26"}, true, []string{"sluice (devel)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := buildVersion(tt.info, tt.ok)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("buildVersion = %q, lacks %q", got, w)
				}
			}
		})
	}
}
