package mapping

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/vocab"
)

// The mapper's reason indexes and REASONS.md must name exactly vocab's
// reasons: a reason added to one and not the others fails here.
func TestReasonsMatchVocab(t *testing.T) {
	if got, want := reasonCodes[1:], vocab.RowReasons(); !slices.Equal(got, want) {
		t.Errorf("reasonCodes = %v, want vocab.RowReasons() %v", got, want)
	}
	doc, err := os.ReadFile("REASONS.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range []struct {
		heading string
		want    []vocab.Reason
	}{
		{"## Reason codes", vocab.RowReasons()},
		{"## Message reasons", vocab.MessageReasons()},
	} {
		if got := documented(t, string(doc), sec.heading); !slices.Equal(got, sec.want) {
			t.Errorf("REASONS.md %q lists %v, want %v", sec.heading, got, sec.want)
		}
	}
}

// documented returns the codes in the first column of the table under
// heading, in order.
func documented(t *testing.T, doc, heading string) []vocab.Reason {
	t.Helper()
	_, sec, ok := strings.Cut(doc, heading+"\n")
	if !ok {
		t.Fatalf("REASONS.md has no %q", heading)
	}
	if next := strings.Index(sec, "\n## "); next >= 0 {
		sec = sec[:next]
	}
	var out []vocab.Reason
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(sec, -1) {
		out = append(out, vocab.Reason(m[1]))
	}
	return out
}
