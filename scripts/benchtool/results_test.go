package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"empty", nil, 0},
		{"one", []float64{5}, 5},
		{"odd unsorted", []float64{9, 1, 5}, 5},
		{"even", []float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := median(tt.in); got != tt.want {
				t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestRate(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 61145.6: "61,146", 2_000_000: "2,000,000"} {
		if got := rate(in); got != want {
			t.Errorf("rate(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteResultsReplacesOnlyTheGeneratedPart(t *testing.T) {
	tests := []struct {
		name, before string
		wantErr      bool
	}{
		{"creates the file", "", false},
		{"replaces between markers", "# B\n\nintro\n\n" + beginMarker + "\nold figures\n" + endMarker + "\n\nprose after\n", false},
		{"refuses a file without markers", "# B\n\nhand-written\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
			if tt.before != "" {
				if err := os.WriteFile(path, []byte(tt.before), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := writeResults(path, "new figures\n")
			if (err != nil) != tt.wantErr {
				t.Fatalf("writeResults: %v, want error %v", err, tt.wantErr)
			}
			data, _ := os.ReadFile(path)
			got := string(data)
			if tt.wantErr {
				if got != tt.before {
					t.Errorf("file changed on error:\n%s", got)
				}
				return
			}
			if !strings.Contains(got, beginMarker+"\n\nnew figures\n\n"+endMarker) || strings.Contains(got, "old figures") {
				t.Errorf("generated part not replaced:\n%s", got)
			}
			for _, keep := range []string{"intro", "prose after"} {
				if strings.Contains(tt.before, keep) && !strings.Contains(got, keep) {
					t.Errorf("lost %q:\n%s", keep, got)
				}
			}
		})
	}
}
