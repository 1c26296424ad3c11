package mapping

import (
	"strings"
	"testing"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// metricBase is one good value row (numerator and denominator null).
func metricBase(tb testing.TB) []schemas.Column {
	return []schemas.Column{
		col(tb, "unit", schemas.TypeString, "u1"),
		col(tb, "id_type", schemas.TypeString, "userID"),
		col(tb, "ds", schemas.TypeDate, civil.Date{Year: 2024, Month: 3, Day: 10}),
		col(tb, "metric", schemas.TypeString, "revenue"),
		col(tb, "value", schemas.TypeDouble, 12.5),
		col(tb, "num", schemas.TypeDouble, nil),
		col(tb, "den", schemas.TypeDouble, nil),
	}
}

func TestMapMetrics(t *testing.T) {
	t.Parallel()
	S, L, D := schemas.TypeString, schemas.TypeLong, schemas.TypeDouble
	type want struct {
		reason vocab.Reason
		detail string
		metric schemas.Metric // Position and Date filled by the test
	}
	good := schemas.Metric{UnitID: "u1", IDType: "userID", MetricName: "revenue", MetricValue: 12.5}
	with := func(f func(*schemas.Metric)) schemas.Metric { m := good; f(&m); return m }
	tests := []struct {
		name string
		edit func(*config.Mapping)
		cols func(tb testing.TB) []schemas.Column
		want want
	}{
		{name: "good value row", want: want{metric: good}},
		{name: "integer unit id cast", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "unit", L, 42)} },
			want: want{metric: with(func(m *schemas.Metric) { m.UnitID = "42" })}},
		{name: "unit id null", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "unit", S, nil)} },
			want: want{reason: vocab.ReasonUnitIDMissing}},
		{name: "unit id empty", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "unit", S, "")} },
			want: want{reason: vocab.ReasonUnitIDMissing}},
		{name: "id type custom", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "id_type", S, "companyID")} },
			want: want{metric: with(func(m *schemas.Metric) { m.IDType = "companyID" })}},
		{name: "id type wrong case", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "id_type", S, "UserID")} },
			want: want{reason: vocab.ReasonIDTypeUnknown, detail: `"UserID" is not one of the project's id types userID, stableID, companyID; did you mean "userID"? id types are case-sensitive`}},
		{name: "id type unknown", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "id_type", S, "orgID")} },
			want: want{reason: vocab.ReasonIDTypeUnknown, detail: `"orgID" is not one of the project's id types userID, stableID, companyID`}},
		{name: "id type null", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "id_type", S, nil)} },
			want: want{reason: vocab.ReasonIDTypeMissing}},
		{name: "date ISO string", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ds", S, "2024-03-10")} },
			want: want{metric: good}},
		{name: "date unparseable", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ds", S, "2024/03/10")} },
			want: want{reason: vocab.ReasonDateUnparseable, detail: `"2024/03/10" is not an ISO date (YYYY-MM-DD)`}},
		{name: "date with time", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ds", S, "2024-03-10 00:00:00")} },
			want: want{reason: vocab.ReasonDateUnparseable}},
		{name: "date string other day", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ds", S, "2024-03-11")} },
			want: want{reason: vocab.ReasonDateOutsideDay, detail: "2024-03-11 is not the run's day 2024-03-10"}},
		{name: "date DATE other day", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "ds", schemas.TypeDate, civil.Date{Year: 2024, Month: 3, Day: 9})}
		}, want: want{reason: vocab.ReasonDateOutsideDay, detail: "2024-03-09 is not the run's day"}},
		{name: "date null", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ds", S, nil)} },
			want: want{reason: vocab.ReasonDateMissing}},
		{name: "date TIMESTAMP column", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "ds", schemas.TypeTimestamp, 0)} },
			want: want{reason: vocab.ReasonTypeMismatch, detail: "date needs STRING, DATE"}},
		{name: "metric name empty", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "metric", S, "")} },
			want: want{reason: vocab.ReasonMetricNameMissing}},
		{name: "metric name too long", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "metric", S, strings.Repeat("m", 128))}
		}, want: want{reason: vocab.ReasonMetricNameTooLong}},
		{name: "metric value null is 0", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", D, nil)} },
			want: want{metric: with(func(m *schemas.Metric) { m.MetricValue = 0 })}},
		{name: "metric value numeric string", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", S, " 1.5e3 ")} },
			want: want{metric: with(func(m *schemas.Metric) { m.MetricValue = 1500 })}},
		{name: "metric value DECIMAL", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "value", schemas.TypeDecimal, "-0.25")}
		}, want: want{metric: with(func(m *schemas.Metric) { m.MetricValue = -0.25 })}},
		{name: "metric value not numeric", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", S, "12 USD")} },
			want: want{reason: vocab.ReasonValueNotNumeric, detail: `metric_value (column "value") "12 USD" is not a number`}},
		{name: "metric value NaN string", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", S, "NaN")} },
			want: want{reason: vocab.ReasonValueNotNumeric}},
		{name: "metric value NaN double", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "value", D, nan())} },
			want: want{reason: vocab.ReasonValueNotNumeric}},
		{name: "metric value BOOLEAN column", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "value", schemas.TypeBoolean, true)}
		}, want: want{reason: vocab.ReasonTypeMismatch}},
		{name: "ratio wins over value", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "num", D, 3.0), col(tb, "den", L, 4)}
		}, want: want{metric: with(func(m *schemas.Metric) {
			m.IsRatio, m.Numerator, m.Denominator, m.MetricValue = true, 3, 4, 0.75
		})}},
		{name: "ratio with zero denominator", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "num", D, 3.0), col(tb, "den", L, 0)}
		}, want: want{metric: with(func(m *schemas.Metric) {
			m.IsRatio, m.Numerator, m.Denominator, m.MetricValue = true, 3, 0, 0
		})}},
		{name: "ratio denominator null", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "num", D, 3.0)} },
			want: want{reason: vocab.ReasonDenominatorNull}},
		{name: "ratio numerator null", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{col(tb, "den", D, 3.0)} },
			want: want{reason: vocab.ReasonNumeratorNull}},
		{name: "ratio-only mapping, both null", edit: func(m *config.Mapping) { m.MetricValue = "" },
			want: want{reason: vocab.ReasonDenominatorNull}},
		{name: "ratio numerator not numeric", cols: func(tb testing.TB) []schemas.Column {
			return []schemas.Column{col(tb, "num", S, "x"), col(tb, "den", D, 1.0)}
		}, want: want{reason: vocab.ReasonValueNotNumeric}},
		{name: "missing column", cols: func(tb testing.TB) []schemas.Column { return []schemas.Column{{Name: "metric"}} },
			want: want{reason: vocab.ReasonMissingColumn, detail: `"metric" (metric_name)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ing := metricsIngestion()
			if tt.edit != nil {
				tt.edit(&ing.Mapping)
			}
			cols := metricBase(t)
			if tt.cols != nil {
				cols = withColumns(cols, tt.cols(t)...)
			}
			out, rejected := mapAll(t, ing, rawBatch(t, cols...))
			if tt.want.reason != "" {
				if len(rejected) != 1 {
					t.Fatalf("got %d metrics and rejections %+v, want one %s rejection", len(out.Metrics), rejected, tt.want.reason)
				}
				r := rejected[0]
				if r.Reason != string(tt.want.reason) || !strings.Contains(r.Detail, tt.want.detail) {
					t.Fatalf("rejected %s %q, want %s containing %q", r.Reason, r.Detail, tt.want.reason, tt.want.detail)
				}
				return
			}
			if len(rejected) != 0 {
				t.Fatalf("rejected %s: %s", rejected[0].Reason, rejected[0].Detail)
			}
			want := tt.want.metric
			want.Position, want.Date = 1000, testDay
			if out.Metrics[0] != want {
				t.Fatalf("metric\n got %+v\nwant %+v", out.Metrics[0], want)
			}
		})
	}
}
