package watcher

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

func TestChanged(t *testing.T) {
	tests := []struct {
		name        string
		loaded, now int64
		threshold   float64
		want        bool
	}{
		{"same count", 1000, 1000, 0.05, false},
		{"more rows above the threshold", 1000, 1051, 0.05, true},
		{"more rows at the threshold", 1000, 1050, 0.05, false},
		{"more rows below the threshold", 1000, 1020, 0.05, false},
		{"fewer rows above the threshold", 1000, 949, 0.05, true},
		{"fewer rows at the threshold", 1000, 950, 0.05, false},
		{"fewer rows below the threshold", 1000, 990, 0.05, false},
		{"every row gone", 1000, 0, 0.05, true},
		{"rows appear for an empty day", 0, 1, 0.05, true},
		{"an empty day stays empty", 0, 0, 0.05, false},
		{"a zero threshold reloads on any change", 1000, 1001, 0, true},
		{"a custom threshold", 1000, 1150, 0.2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Changed(tt.loaded, tt.now, tt.threshold); got != tt.want {
				t.Errorf("Changed(%d, %d, %v) = %v, want %v", tt.loaded, tt.now, tt.threshold, got, tt.want)
			}
		})
	}
}

func TestBaseline(t *testing.T) {
	loadedAt := time.Date(2024, 3, 2, 10, 0, 0, 0, time.UTC)
	before, after := loadedAt.Add(-time.Minute), loadedAt.Add(time.Minute)
	tests := []struct {
		name string
		day  store.Day
		want string
	}{
		{"the fingerprint taken at load wins", store.Day{Fingerprint: "at-load", WarehouseFinger: "watched", WarehouseAt: &after, LastLoadedAt: &loadedAt}, "at-load"},
		{"else the first one watched after the load", store.Day{WarehouseFinger: "watched", WarehouseAt: &after, LastLoadedAt: &loadedAt}, "watched"},
		{"a fingerprint watched before the load says nothing about the loaded rows", store.Day{WarehouseFinger: "old", WarehouseAt: &before, LastLoadedAt: &loadedAt}, ""},
		{"never watched", store.Day{LastLoadedAt: &loadedAt}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := baseline(tt.day); got != tt.want {
				t.Errorf("baseline = %q, want %q", got, tt.want)
			}
		})
	}
}
