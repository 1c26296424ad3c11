package main

import (
	"net/http"
	"net/http/httptest"
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
