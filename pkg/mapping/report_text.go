package mapping

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Text renders the report for a person: a verdict, the query, the result's
// columns, one line per mapped field with ✓ or ✗, the sample's records and
// rejections, and what to change.
func (r Report) Text() string {
	var b strings.Builder
	verdict := "✓ OK: this mapping can be enabled"
	if !r.OK {
		verdict = "✗ NOT OK: fix the problems below before enabling this ingestion"
	}
	fmt.Fprintf(&b, "Validation of %s ingestion %q on %s\n%s\n", r.Type, r.Ingestion, r.Day, verdict)

	if r.QueryAsRun != "" {
		b.WriteString("\nQuery as run:\n")
		for _, line := range strings.Split(strings.TrimRight(r.QueryAsRun, "\n"), "\n") {
			b.WriteString("  " + line + "\n")
		}
	}
	if r.Cost != nil {
		fmt.Fprintf(&b, "Estimated cost: %s processed", bytesText(r.Cost.BytesProcessed))
		if r.Cost.Detail != "" {
			b.WriteString(" (" + r.Cost.Detail + ")")
		}
		b.WriteString("\n")
	}

	fmt.Fprintf(&b, "\nResult columns (%d):\n", len(r.Columns))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, c := range r.Columns {
		fmt.Fprintf(tw, "  %s\t%s\t(%s)\n", c.Name, c.Type, c.DBType)
	}
	tw.Flush()

	fmt.Fprintf(&b, "\nMapped fields (%d sample rows):\n", r.SampleRows)
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "     FIELD\tCOLUMN\tTYPE\tOK\tNULL\tFAILING\tNOTE")
	for _, f := range r.Fields {
		mark, note := "✓", ""
		typ := f.Type
		switch {
		case !f.Found:
			mark, typ, note = "✗", "-", "column not in the result"
		case !f.TypeOK:
			mark, note = "✗", "type not accepted; needs "+f.Accepts
		case f.FailingRows > 0:
			mark, note = "✗", f.FirstFailure
		case f.MatchedColumn != "":
			note = fmt.Sprintf("matched column %q (case differs)", f.MatchedColumn)
		}
		req := " "
		if f.Required {
			req = "*"
		}
		counts := func(n int) string {
			if !f.Found || !f.TypeOK {
				return "-"
			}
			return strconv.Itoa(n)
		}
		fmt.Fprintf(tw, "  %s %s%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mark, f.Field, req, f.Column, typ,
			counts(f.OKRows), counts(f.NullRows), counts(f.FailingRows), cut(note, 110))
	}
	tw.Flush()
	b.WriteString("  (* required)\n")

	fmt.Fprintf(&b, "\nSample: %d rows, %d mapped, %d rejected", r.SampleRows, r.Mapped, r.Rejected)
	if len(r.RejectedByReason) > 0 {
		parts := make([]string, len(r.RejectedByReason))
		for i, rc := range r.RejectedByReason {
			parts[i] = fmt.Sprintf("%s %d", rc.Reason, rc.Count)
		}
		b.WriteString(" (" + strings.Join(parts, ", ") + ")")
	}
	b.WriteString("\n")

	if len(r.Events) > 0 {
		b.WriteString("\nFirst mapped events:\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  ROW\tEVENT\tTIME\tVALUE\tUNIT IDS\tMETADATA")
		for _, e := range r.Events {
			ids := make([]string, len(e.UnitIDs))
			for i, id := range e.UnitIDs {
				ids[i] = id.IDType + "=" + id.Value
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", e.Position, e.EventName, e.Time, e.EventValue, strings.Join(ids, ","), cut(string(e.Metadata), 80))
		}
		tw.Flush()
	}
	if len(r.Metrics) > 0 {
		b.WriteString("\nFirst mapped metrics:\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  ROW\tUNIT ID\tID TYPE\tDATE\tMETRIC\tVALUE")
		for _, mt := range r.Metrics {
			value := string(appendFloat(nil, mt.MetricValue))
			if mt.IsRatio {
				value = fmt.Sprintf("%s / %s", appendFloat(nil, mt.Numerator), appendFloat(nil, mt.Denominator))
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", mt.Position, mt.UnitID, mt.IDType, mt.Date, mt.MetricName, value)
		}
		tw.Flush()
	}
	if len(r.Rejections) > 0 {
		fmt.Fprintf(&b, "\nRejected rows (first %d):\n", len(r.Rejections))
		for _, rj := range r.Rejections {
			fmt.Fprintf(&b, "  row %d  %s: %s\n", rj.Position, rj.Reason, rj.Detail)
			keys := make([]string, 0, len(rj.Values))
			for k := range rj.Values {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			vals := make([]string, len(keys))
			for i, k := range keys {
				vals[i] = k + "=" + quote(rj.Values[k])
			}
			fmt.Fprintf(&b, "    values: %s\n", cut(strings.Join(vals, " "), 160))
		}
	}
	if len(r.Problems) > 0 {
		b.WriteString("\nWhat to change:\n")
		for _, p := range r.Problems {
			b.WriteString("  ✗ " + p + "\n")
		}
	}
	if len(r.Warnings) > 0 {
		b.WriteString("\nWarnings:\n")
		for _, w := range r.Warnings {
			b.WriteString("  ! " + w + "\n")
		}
	}
	return b.String()
}

func cut(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
