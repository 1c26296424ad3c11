package mapping

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/schemas"
)

func (m *Mapper) mapMetric(i int, mt *schemas.Metric) fail {
	unit, ok, f := m.idText(m.unitID, i)
	if f.r != rNone {
		return f
	}
	if !ok {
		return m.failf(rUnitIDMissing, m.unitID, "unit_id (column %q) is empty or null", m.refs[m.unitID].column)
	}
	idType, f := m.idTypeOf(i)
	if f.r != rNone {
		return f
	}
	date, f := m.dateOf(i)
	if f.r != rNone {
		return f
	}
	name, f := m.name(m.metricName, i, rMetricNameMissing, rMetricNameTooLong)
	if f.r != rNone {
		return f
	}
	*mt = schemas.Metric{UnitID: unit, IDType: idType, Date: date, MetricName: name}
	return m.values(i, mt)
}

// idTypeOf checks id_type against the project's id types, case-sensitively.
func (m *Mapper) idTypeOf(i int) (string, fail) {
	k := m.idType
	r := &m.refs[k]
	if r.col.IsNull(i) || strings.TrimSpace(r.col.Strings[i]) == "" {
		return "", m.failf(rIDTypeMissing, k, "id_type (column %q) is empty or null", r.column)
	}
	s := r.col.Strings[i]
	if slices.Contains(m.idTypes, s) {
		return s, fail{}
	}
	hint := ""
	for _, t := range m.idTypes {
		if strings.EqualFold(t, strings.TrimSpace(s)) {
			hint = fmt.Sprintf("; did you mean %q? id types are case-sensitive", t)
			break
		}
	}
	return "", m.failf(rIDTypeUnknown, k, "id_type (column %q) %s is not one of the project's id types %s%s",
		r.column, quote(s), strings.Join(m.idTypes, ", "), hint)
}

// dateOf reads the metric's date, a DATE or an ISO YYYY-MM-DD string, and
// requires it to be the run's day.
func (m *Mapper) dateOf(i int) (string, fail) {
	k := m.date
	r := &m.refs[k]
	if r.col.IsNull(i) {
		return "", m.failf(rDateMissing, k, "date (column %q) is null", r.column)
	}
	var days int64
	if r.col.Type == schemas.TypeDate {
		days = r.col.Longs[i]
	} else {
		s := strings.TrimSpace(r.col.Strings[i])
		if m.day.known && s == m.day.str {
			return m.day.str, fail{}
		}
		d, err := civil.ParseDate(s)
		if err != nil || len(s) != len("2006-01-02") {
			return "", m.failf(rDateUnparseable, k, "date (column %q) %s is not an ISO date (YYYY-MM-DD)", r.column, quote(r.col.Strings[i]))
		}
		days = int64(d.DaysSince(civil.Date{Year: 1970, Month: 1, Day: 1}))
	}
	if !m.day.known {
		return string(appendDate(nil, days)), fail{}
	}
	if days != m.day.days {
		return "", m.failf(rDateOutsideDay, k, "date (column %q) %s is not the run's day %s; filter the query on its date parameter", r.column, appendDate(nil, days), m.day.str)
	}
	return m.day.str, fail{}
}

// values fills the metric's value or ratio. A row is a ratio when the
// mapping has numerator and denominator and, if metric_value is mapped too,
// the row has a numerator or a denominator: the ratio wins over the value.
func (m *Mapper) values(i int, mt *schemas.Metric) fail {
	ratio := m.num >= 0
	if ratio && m.metricValue >= 0 && m.refs[m.num].col.IsNull(i) && m.refs[m.den].col.IsNull(i) {
		ratio = false
	}
	if !ratio {
		v, _, f := m.number(m.metricValue, i) // null is 0
		mt.MetricValue = v
		return f
	}
	num, numNull, f := m.number(m.num, i)
	if f.r != rNone {
		return f
	}
	den, denNull, f := m.number(m.den, i)
	if f.r != rNone {
		return f
	}
	if denNull {
		return m.failf(rDenominatorNull, m.den, "denominator (column %q) is null: a ratio row needs one", m.refs[m.den].column)
	}
	if numNull {
		return m.failf(rNumeratorNull, m.num, "numerator (column %q) is null: a ratio row needs one", m.refs[m.num].column)
	}
	mt.IsRatio, mt.Numerator, mt.Denominator = true, num, den
	if den != 0 {
		mt.MetricValue = num / den
	}
	return fail{}
}

// number reads a numeric field; null reads as 0 with null set.
func (m *Mapper) number(k, i int) (v float64, null bool, f fail) {
	r := &m.refs[k]
	if r.col.IsNull(i) {
		return 0, true, fail{}
	}
	switch r.col.Type {
	case schemas.TypeLong:
		return float64(r.col.Longs[i]), false, fail{}
	case schemas.TypeDouble:
		v = r.col.Doubles[i]
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, false, m.failf(rValueNotNumeric, k, "%s (column %q) is %v, not a finite number", r.field, r.column, v)
		}
		return v, false, fail{}
	default: // DECIMAL, STRING
		v, ok := parseNumber(r.col.Strings[i])
		if !ok {
			return 0, false, m.failf(rValueNotNumeric, k, "%s (column %q) %s is not a number", r.field, r.column, quote(r.col.Strings[i]))
		}
		return v, false, fail{}
	}
}
