package perf

import (
	"fmt"
	"io"
	"math"
	"time"
)

// SoakSample is one reading of the soak run.
type SoakSample struct {
	T          float64 // seconds since the start
	RSSMB      float64
	Goroutines float64
	FDs        float64
	DiskMB     float64
	CPUPercent float64 // of one core, since the previous sample
}

// soakSeries names the soak's measured series and their growth floors: a
// fitted growth over the measured span below the floor (or below 10 % of
// the mean) is noise, not growth.
var soakSeries = []struct {
	name  string
	get   func(SoakSample) float64
	floor float64
}{
	{"RSS (MB)", func(s SoakSample) float64 { return s.RSSMB }, 2},
	{"goroutines", func(s SoakSample) float64 { return s.Goroutines }, 3},
	{"open files", func(s SoakSample) float64 { return s.FDs }, 3},
	{"disk (MB)", func(s SoakSample) float64 { return s.DiskMB }, 2},
	{"CPU (% of a core)", func(s SoakSample) float64 { return s.CPUPercent }, 1},
}

// SoakVerdict is the growth check of one series after the warm-up.
type SoakVerdict struct {
	Name                  string
	First, Last, Min, Max float64 // after the warm-up
	Mean                  float64
	SlopePerHour          float64
	Growth                float64 // slope × the span after the warm-up
	Grows                 bool
}

// AnalyzeSoak fits a line to each series after warmup seconds and judges
// it: it grows when the fitted growth over the span is positive and above
// both the series' floor and 10 % of its mean.
func AnalyzeSoak(ss []SoakSample, warmup float64) []SoakVerdict {
	var out []SoakVerdict
	for _, sr := range soakSeries {
		var x, y []float64
		for _, s := range ss {
			if s.T >= warmup {
				x = append(x, s.T)
				y = append(y, sr.get(s))
			}
		}
		v := SoakVerdict{Name: sr.name, Min: math.Inf(1), Max: math.Inf(-1)}
		if len(y) == 0 {
			out = append(out, v)
			continue
		}
		v.First, v.Last = y[0], y[len(y)-1]
		for _, val := range y {
			v.Min, v.Max = math.Min(v.Min, val), math.Max(v.Max, val)
			v.Mean += val / float64(len(y))
		}
		slope := Slope(x, y)
		if !math.IsNaN(slope) {
			v.SlopePerHour = slope * 3600
			v.Growth = slope * (x[len(x)-1] - x[0])
		}
		v.Grows = v.Growth > math.Max(sr.floor, 0.1*math.Abs(v.Mean))
		out = append(out, v)
	}
	return out
}

// SoakTable is the soak's summary: one row per series.
func SoakTable(vs []SoakVerdict) *Table {
	t := &Table{Header: []string{"series (after warm-up)", "first", "last", "min", "max", "mean", "slope per hour", "fitted growth", "grows?"}}
	f := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	for _, v := range vs {
		g := "no"
		if v.Grows {
			g = "YES"
		}
		t.Add(v.Name, f(v.First), f(v.Last), f(v.Min), f(v.Max), f(v.Mean), fmt.Sprintf("%+.2f", v.SlopePerHour), fmt.Sprintf("%+.2f", v.Growth), g)
	}
	return t
}

// WriteSoakCSV writes the samples as CSV.
func WriteSoakCSV(w io.Writer, ss []SoakSample) error {
	if _, err := fmt.Fprintln(w, "t_s,rss_mb,goroutines,open_files,disk_mb,cpu_percent"); err != nil {
		return err
	}
	for _, s := range ss {
		if _, err := fmt.Fprintf(w, "%.1f,%.2f,%.0f,%.0f,%.2f,%.2f\n", s.T, s.RSSMB, s.Goroutines, s.FDs, s.DiskMB, s.CPUPercent); err != nil {
			return err
		}
	}
	return nil
}

// SoakPlot returns the soak's series for Plot, with the warm-up marked.
func SoakPlot(ss []SoakSample, warmup float64) []Series {
	var out []Series
	for _, sr := range soakSeries {
		s := Series{Name: sr.name, Mark: warmup}
		for _, x := range ss {
			s.X = append(s.X, x.T)
			s.Y = append(s.Y, sr.get(x))
		}
		out = append(out, s)
	}
	return out
}

// secs formats a duration in whole seconds.
func secs(d time.Duration) string { return fmt.Sprintf("%.0f s", d.Seconds()) }
