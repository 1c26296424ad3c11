package vocab

import (
	"slices"
	"testing"
)

// The values are stored, sent in webhooks and keyed on by dashboards: this
// table freezes them, so a rename fails here rather than in a customer's
// alert rule.
func TestValuesAreFrozen(t *testing.T) {
	for _, tt := range []struct {
		name      string
		got, want []string
	}{
		{"statuses", strs(Statuses()), []string{"IMPORT_SCHEDULED", "IMPORT_RESCHEDULED", "BACKFILL_REQUESTED",
			"IMPORT_STARTED", "FILE_CREATED", "DOWNLOAD_COMPLETED", "ROWS_INSERTED", "IMPORT_SUCCESSFUL",
			"LOADED_EMPTY_DATA", "NO_DATA_YET", "FAILED", "SUPERSEDED"}},
		{"categories", strs(Categories()), []string{"AUTHENTICATION_ERROR", "CONNECTION_ERROR", "CONNECTION_CONFIG_ERROR",
			"QUERY_ERROR", "PERMISSION_ERROR", "QUERY_TIMEOUT", "INTERNAL_ERROR", "REQUEST_ERROR", "SETUP_ERROR",
			"INTERNAL_WRITE_ERROR", "TOO_MANY_REJECTED_ROWS"}},
		{"triggers", strs(Triggers()), []string{"scheduled", "api", "backfill", "reload", "request", "replay"}},
		{"row reasons", strs(RowReasons()), []string{"missing_column", "type_mismatch", "malformed_batch", "invalid_text",
			"event_name_missing", "event_name_too_long", "timestamp_missing", "timestamp_unparseable",
			"timestamp_unit_mismatch", "timestamp_out_of_range", "unit_id_missing", "event_value_too_long",
			"metadata_json_invalid", "id_type_missing", "id_type_unknown", "date_missing", "date_unparseable",
			"date_outside_day", "metric_name_missing", "metric_name_too_long", "numerator_null", "denominator_null",
			"value_not_numeric"}},
		{"message reasons", strs(MessageReasons()), []string{"undecodable_message", "undecodable_request",
			"unknown_ingestion", "bad_date", "unknown_connection"}},
	} {
		if !slices.Equal(tt.got, tt.want) {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
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
