package eval

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
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
	for _, f := range r.Files {
		if f.StuckWindows > 0 {
			fmt.Fprintf(w, "%s: %d windows ended with a channel stuck (counted as exceeding)\n", f.Name, f.StuckWindows)
		}
	}
	fmt.Fprintln(w)
	WriteAlerts(w, r)
	fmt.Fprintln(w, r.Summary())
}

// WriteAlerts writes the alert-level table: per file, whether its anomaly
// got an episode, the delay, the episodes opened and the false ones, and
// the NAB scores; then the totals.
func WriteAlerts(w io.Writer, r *Report) {
	fmt.Fprintf(w, "%-16s %8s %7s %8s %5s %8s %7s %7s\n",
		"alerts", "detected", "delay_s", "episodes", "false", "nab_std", "low_fp", "low_fn")
	for _, f := range r.Files {
		a := f.Alerts
		delays := make([]string, len(a.Delays))
		for i, d := range a.Delays {
			delays[i] = fmt.Sprintf("%.0f", d)
		}
		delay := strings.Join(delays, ",")
		if delay == "" {
			delay = "-"
		}
		sc := a.NAB.Scores()
		fmt.Fprintf(w, "%-16s %8s %7s %8d %5d %8s %7s %7s\n", f.Name, fmt.Sprintf("%d/%d", a.Detected, a.Anomalies),
			delay, a.Episodes, a.False, num(sc[0], 2), num(sc[1], 2), num(sc[2], 2))
	}
	a := r.Alerts
	sc := a.NAB.Scores()
	fmt.Fprintf(w, "%-16s %8s %7s %8d %5d %8s %7s %7s\n", "total", fmt.Sprintf("%d/%d", a.Detected, a.Anomalies),
		num(a.MedianDelay(), 0), a.Episodes, a.False, num(sc[0], 2), num(sc[1], 2), num(sc[2], 2))
	e := a.NABEdges.Scores()
	fmt.Fprintf(w, "anomalies detected %d of %d (files %d of %d); delay median %s s, mean %s s; false episodes %d of %d\n",
		a.Detected, a.Anomalies, a.FilesDetected, a.Files, num(a.MedianDelay(), 1), num(a.MeanDelay(), 1), a.False, a.Episodes)
	fmt.Fprintf(w, "NAB (episode openings as changepoints, %d changepoints: %d TP, %d FN, %d FP): standard %s, low FP %s, low FN %s\n",
		a.NAB.Windows, a.NAB.TP, a.NAB.FN, a.NAB.FP, num(sc[0], 2), num(sc[1], 2), num(sc[2], 2))
	fmt.Fprintf(w, "NAB (openings and closings, as SKAB's notebooks: %d TP, %d FN, %d FP): standard %s, low FP %s, low FN %s\n",
		a.NABEdges.TP, a.NABEdges.FN, a.NABEdges.FP, num(e[0], 2), num(e[1], 2), num(e[2], 2))
	c := a.NABOneEpisode.Scores()
	fmt.Fprintf(w, "NAB ceiling of openings for one episode per anomaly (each opened at the anomaly's first row: %d TP, %d FN, %d FP): standard %s, low FP %s, low FN %s\n",
		a.NABOneEpisode.TP, a.NABOneEpisode.FN, a.NABOneEpisode.FP, num(c[0], 2), num(c[1], 2), num(c[2], 2))
	if len(r.Calibration) > 0 && r.Calibration[0].Windows > 0 {
		parts := make([]string, len(r.Calibration))
		for i, c := range r.Calibration {
			parts[i] = fmt.Sprintf("≥%g: %.4f (want %.4f)", c.Level, c.Share, c.Expected)
		}
		fmt.Fprintf(w, "confidence on %d normal windows (before each file's first anomaly), share at or above c: %s\n", r.Calibration[0].Windows, strings.Join(parts, ", "))
	}
	if len(r.CalibrationFallback) > 0 && r.CalibrationFallback[0].Windows > 0 {
		parts := make([]string, len(r.CalibrationFallback))
		for i, c := range r.CalibrationFallback {
			parts[i] = fmt.Sprintf("≥%g: %.4f (want %.4f)", c.Level, c.Share, c.Expected)
		}
		fmt.Fprintf(w, "the same without the unseen-score fit (1 - P(calibration score >= score/factor)): %s\n", strings.Join(parts, ", "))
	}
}

// jsonMetrics are a confusion matrix's counts and rates; undefined rates
// are null.
type jsonMetrics struct {
	Counts
	Rows int      `json:"rows"`
	F1   *float64 `json:"f1"`
	FAR  *float64 `json:"far_pct"`
	MAR  *float64 `json:"mar_pct"`
}

type jsonAlerts struct {
	Alerts
	MedianDelay *float64    `json:"median_delay_s"`
	MeanDelay   *float64    `json:"mean_delay_s"`
	NABScores   jsonProfile `json:"nab_scores"`
	NABEdges    jsonProfile `json:"nab_edges_scores"`
	NABCeiling  jsonProfile `json:"nab_one_episode_scores"`
}

type jsonProfile struct {
	Standard *float64 `json:"standard"`
	LowFP    *float64 `json:"low_fp"`
	LowFN    *float64 `json:"low_fn"`
}

type jsonFile struct {
	Name      string      `json:"name"`
	TrainRows int         `json:"train_rows"`
	TestRows  int         `json:"test_rows"`
	Threshold float64     `json:"threshold"`
	Epochs    int         `json:"epochs,omitempty"`
	Stuck     int         `json:"stuck_windows,omitempty"`
	Shift     int         `json:"shift_windows,omitempty"`
	Seconds   float64     `json:"seconds"`
	Points    jsonMetrics `json:"points"`
	Alerts    jsonAlerts  `json:"alerts"`
}

type jsonReport struct {
	Files       []jsonFile         `json:"files"`
	Calibration []CalibrationPoint `json:"confidence_calibration"`
	Fallback    []CalibrationPoint `json:"confidence_calibration_fallback"`
	Points      jsonMetrics        `json:"points"`
	Alerts      jsonAlerts         `json:"alerts"`
	Summary     string             `json:"summary"`
	Seconds     float64            `json:"seconds"`
}

func metricsJSON(c Counts) jsonMetrics {
	return jsonMetrics{Counts: c, Rows: c.Rows(), F1: finite(c.F1()), FAR: finite(c.FAR()), MAR: finite(c.MAR())}
}

func alertsJSON(a Alerts) jsonAlerts {
	if a.Delays == nil {
		a.Delays = []float64{}
	}
	if a.Openings == nil {
		a.Openings = []time.Time{}
	}
	if a.FalseOpenings == nil {
		a.FalseOpenings = []time.Time{}
	}
	p := func(n NABCounts) jsonProfile {
		s := n.Scores()
		return jsonProfile{finite(s[0]), finite(s[1]), finite(s[2])}
	}
	return jsonAlerts{Alerts: a, MedianDelay: finite(a.MedianDelay()), MeanDelay: finite(a.MeanDelay()),
		NABScores: p(a.NAB), NABEdges: p(a.NABEdges), NABCeiling: p(a.NABOneEpisode)}
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// WriteJSON writes the whole report, per file and in total, point-wise
// and alert-level, as one indented JSON object.
func WriteJSON(w io.Writer, r *Report) error {
	out := jsonReport{Calibration: r.Calibration, Fallback: r.CalibrationFallback, Points: metricsJSON(r.Total), Alerts: alertsJSON(r.Alerts), Summary: r.Summary(), Seconds: r.Elapsed.Seconds()}
	out.Files = make([]jsonFile, 0, len(r.Files))
	for _, f := range r.Files {
		jf := jsonFile{Name: f.Name, TrainRows: f.TrainRows, TestRows: f.TestRows, Threshold: f.Threshold, Stuck: f.StuckWindows, Shift: f.ShiftWindows,
			Seconds: (f.Learn + f.Score).Seconds(), Points: metricsJSON(f.Counts), Alerts: alertsJSON(f.Alerts)}
		if f.Training != nil {
			jf.Epochs = f.Training.Epochs
		}
		out.Files = append(out.Files, jf)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("eval: writing the JSON report: %w", err)
	}
	return nil
}

// num formats v with prec decimals, or "-" when it is undefined.
func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, v)
}
