package apikey_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/apikey"
	"github.com/sluicehq/sluice/pkg/config"
)

func TestHash(t *testing.T) {
	t.Parallel()
	// echo -n abc | sha256sum
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := apikey.Hash("abc"); got != want {
		t.Fatalf("Hash(abc) = %s, want %s", got, want)
	}
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	shape := regexp.MustCompile(`^sk_live_[0-9a-f]{64}$`)
	seen := map[string]bool{}
	for range 100 {
		k, err := apikey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if !shape.MatchString(k) {
			t.Fatalf("key %q does not look like sk_live_<64 hex>", k)
		}
		if seen[k] {
			t.Fatalf("key %q generated twice", k)
		}
		seen[k] = true
	}
}

func TestResolver(t *testing.T) {
	t.Parallel()
	projects := []config.Project{
		{Name: "alpha", APIKeys: []config.APIKey{{SHA256: apikey.Hash("key-a1")}, {SHA256: apikey.Hash("key-a2")}}},
		{Name: "beta", APIKeys: []config.APIKey{{SHA256: apikey.Hash("key-b")}}},
	}
	r, err := apikey.NewResolver(projects)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key         string
		wantProject string
		wantOK      bool
	}{
		{"key-a1", "alpha", true},
		{"key-a2", "alpha", true},
		{"key-b", "beta", true},
		{"key-c", "", false},
		{"", "", false},
		{"KEY-A1", "", false},
		{apikey.Hash("key-a1"), "", false}, // the stored hash is not a key
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			p, ok := r.Resolve(tt.key)
			if p != tt.wantProject || ok != tt.wantOK {
				t.Fatalf("Resolve(%q) = %q, %v; want %q, %v", tt.key, p, ok, tt.wantProject, tt.wantOK)
			}
		})
	}
}

func TestNewResolverRejectsBadHash(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"", "xyz", strings.Repeat("a", 63), strings.Repeat("g", 64)} {
		_, err := apikey.NewResolver([]config.Project{{Name: "p", APIKeys: []config.APIKey{{SHA256: h}}}})
		if err == nil || !strings.Contains(err.Error(), "projects[0].api_keys[0].sha256") {
			t.Fatalf("hash %q: err = %v, want one naming the field", h, err)
		}
	}
}

func BenchmarkResolve(b *testing.B) {
	var projects []config.Project
	for i := range 50 {
		projects = append(projects, config.Project{Name: "p", APIKeys: []config.APIKey{{SHA256: apikey.Hash(strings.Repeat("k", i+1))}}})
	}
	r, err := apikey.NewResolver(projects)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Resolve("kkkkk")
	}
}
