package vocab

import (
	"slices"
	"testing"
)

// The values are stored, sent in webhooks and keyed on by dashboards: this
// table freezes them, so a rename fails here rather than in a customer's
// alert rule.
func TestValuesAreFrozen(t *testing.T) {
	want := map[string]string{
		string(StatusScheduled): "IMPORT_SCHEDULED", string(StatusSuccessful): "IMPORT_SUCCESSFUL",
		string(StatusLoadedEmpty): "LOADED_EMPTY_DATA", string(StatusDownloaded): "DOWNLOAD_COMPLETED",
		string(CategoryTooManyRejected): "TOO_MANY_REJECTED_ROWS", string(CategoryQuery): "QUERY_ERROR",
		string(TriggerReload): "reload", string(TriggerAPI): "api",
		string(ReasonEventNameMissing): "event_name_missing", string(ReasonUndecodableMessage): "undecodable_message",
	}
	for got, w := range want {
		if got != w {
			t.Errorf("value %q, want %q", got, w)
		}
	}
}

func TestListsHaveDistinctValues(t *testing.T) {
	check := func(name string, vals []string) {
		t.Run(name, func(t *testing.T) {
			seen := map[string]bool{}
			for _, v := range vals {
				if v == "" || seen[v] {
					t.Errorf("%s: value %q empty or listed twice", name, v)
				}
				seen[v] = true
			}
		})
	}
	check("statuses", strs(Statuses()))
	check("categories", strs(Categories()))
	check("triggers", strs(Triggers()))
	check("reasons", strs(append(RowReasons(), MessageReasons()...)))
}

func TestStatusRank(t *testing.T) {
	terminal := []Status{StatusSuccessful, StatusLoadedEmpty, StatusNoDataYet, StatusFailed, StatusSuperseded}
	prev := 0
	for _, s := range Statuses() {
		r := s.Rank()
		if r == 0 {
			t.Errorf("%s has no rank", s)
		}
		if r < prev {
			t.Errorf("%s ranks %d, below the status listed before it (%d)", s, r, prev)
		}
		prev = r
		if got, want := s.Terminal(), slices.Contains(terminal, s); got != want {
			t.Errorf("%s.Terminal() = %v, want %v", s, got, want)
		}
	}
	if Status("IMPORT_SUCCESS").Rank() != 0 || Status("").Terminal() {
		t.Error("an unknown status must rank 0 and not be terminal")
	}
	if !StatusSuccessful.Loaded() || !StatusLoadedEmpty.Loaded() || StatusFailed.Loaded() {
		t.Error("Loaded: only IMPORT_SUCCESSFUL and LOADED_EMPTY_DATA show rows")
	}
}

func strs[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}
