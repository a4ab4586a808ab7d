package eval

import (
	"fmt"
	"io"
	"math"
)

// WriteHeader writes the heading of the per-file table that WriteFile
// continues.
func WriteHeader(w io.Writer) {
	fmt.Fprintf(w, "%-16s %5s %5s %5s %5s %5s %6s %7s %7s %10s %6s %7s\n",
		"file", "rows", "TP", "FP", "FN", "TN", "F1", "FAR%", "MAR%", "threshold", "epochs", "time")
}

// WriteFile writes one file's row of the table.
func WriteFile(w io.Writer, r FileResult) {
	epochs := "-"
	if r.Training != nil {
		epochs = fmt.Sprint(r.Training.Epochs)
	}
	fmt.Fprintf(w, "%-16s %5d %5d %5d %5d %5d %6s %7s %7s %10.4g %6s %6.1fs\n",
		r.Name, r.Rows(), r.TP, r.FP, r.FN, r.TN, num(r.F1(), 3), num(r.FAR(), 2), num(r.MAR(), 2),
		r.Threshold, epochs, (r.Learn + r.Score).Seconds())
}

// WriteTotal writes the totals under the table and then the summary line,
// which is the last line written.
func WriteTotal(w io.Writer, r *Report) {
	t := r.Total
	fmt.Fprintf(w, "%-16s %5d %5d %5d %5d %5d %6s %7s %7s\n",
		"total", t.Rows(), t.TP, t.FP, t.FN, t.TN, num(t.F1(), 3), num(t.FAR(), 2), num(t.MAR(), 2))
	fmt.Fprintf(w, "%d files in %.1fs\n", len(r.Files), r.Elapsed.Seconds())
	fmt.Fprintln(w, r.Summary())
}

// num formats v with prec decimals, or "-" when it is undefined.
func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, v)
}
