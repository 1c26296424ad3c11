package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPprofMux(t *testing.T) {
	mux := pprofMux()
	tests := []struct {
		name     string
		path     string
		wantCode int
		wantBody string
	}{
		{"heap profile", "/debug/pprof/heap?debug=1", http.StatusOK, "heap profile"},
		{"index lists profiles", "/debug/pprof/", http.StatusOK, "goroutine"},
		{"admin endpoints are not on this mux", "/metrics", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.wantCode {
				t.Fatalf("GET %s: status %d, want %d", tt.path, rec.Code, tt.wantCode)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("GET %s: body does not contain %q", tt.path, tt.wantBody)
			}
		})
	}
}

// TestRunCPUProfile: --cpu-profile writes a profile covering the run, even
// one that ends early (here on a missing config file).
func TestRunCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	var out, errOut bytes.Buffer
	code := dispatch(t.Context(), []string{"run", "--config", filepath.Join(t.TempDir(), "missing.yaml"), "--cpu-profile", path}, &out, &errOut)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d (config missing); stderr: %s", code, exitConfig, errOut.String())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("profile not written: %v", err)
	}
	// A profile is gzipped protobuf.
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("profile is not gzip: %v", err)
	}
	if body, err := io.ReadAll(zr); err != nil || len(body) == 0 {
		t.Fatalf("profile body: %d bytes, %v", len(body), err)
	}
	if code := dispatch(t.Context(), []string{"run", "--cpu-profile", filepath.Join(t.TempDir(), "no", "such", "dir.pprof")}, &out, &errOut); code != exitUsage {
		t.Fatalf("unwritable profile path: exit %d, want %d", code, exitUsage)
	}
}
