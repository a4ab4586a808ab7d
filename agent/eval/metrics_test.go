package eval

import (
	"math"
	"slices"
	"testing"
)

// bools turns "0110" into row verdicts.
func bools(s string) []bool {
	out := make([]bool, len(s))
	for i, c := range s {
		out[i] = c == '1'
	}
	return out
}

func TestCountAndMetricsByHand(t *testing.T) {
	// Two small labelled files, counted by hand:
	//   a: pred 1100110001, label 1110000011 → TP 3 (rows 0,1,9), FP 2 (4,5),
	//      FN 2 (2,8), TN 3 (3,6,7).
	//   b: pred 0000, label 0011 → TP 0, FP 0, FN 2, TN 2.
	a := Count(bools("1100110001"), bools("1110000011"))
	b := Count(bools("0000"), bools("0011"))
	if want := (Counts{TP: 3, FP: 2, FN: 2, TN: 3}); a != want {
		t.Fatalf("file a: %+v, want %+v", a, want)
	}
	if want := (Counts{TP: 0, FP: 0, FN: 2, TN: 2}); b != want {
		t.Fatalf("file b: %+v, want %+v", b, want)
	}
	total := a.Add(b) // TP 3, FP 2, FN 4, TN 5: 14 rows
	tests := []struct {
		name          string
		c             Counts
		f1, far, mar  float64
		summary, rows string
	}{
		// F1 = 3/(3+(2+2)/2) = 3/5; FAR = 2/(2+3) = 40 %; MAR = 2/(2+3) = 40 %.
		{"a", a, 0.6, 40, 40, "F1=0.600 FAR=40.00 MAR=40.00 files=1 rows=10", ""},
		// F1 = 0/(0+1) = 0; FAR = 0/2 = 0 %; MAR = 2/2 = 100 %.
		{"b", b, 0, 0, 100, "F1=0.000 FAR=0.00 MAR=100.00 files=1 rows=4", ""},
		// The total sums the counts, not the files' ratios:
		// F1 = 3/(3+3) = 0.5; FAR = 2/7 = 28.571 %; MAR = 4/7 = 57.143 %.
		{"total", total, 0.5, 200.0 / 7, 400.0 / 7, "F1=0.500 FAR=28.57 MAR=57.14 files=2 rows=14", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			near := func(what string, got, want float64) {
				t.Helper()
				if math.Abs(got-want) > 1e-12 {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			near("F1", tt.c.F1(), tt.f1)
			near("FAR", tt.c.FAR(), tt.far)
			near("MAR", tt.c.MAR(), tt.mar)
			files := 1
			if tt.name == "total" {
				files = 2
			}
			if got := Summary(tt.c, files); got != tt.summary {
				t.Errorf("Summary = %q, want %q", got, tt.summary)
			}
		})
	}
}

func TestMetricsAreUndefinedWithoutTheirDenominator(t *testing.T) {
	allNormal := Count(bools("000"), bools("000"))
	if !math.IsNaN(allNormal.F1()) || !math.IsNaN(allNormal.MAR()) || allNormal.FAR() != 0 {
		t.Errorf("all normal, none flagged: F1 %v MAR %v FAR %v, want NaN NaN 0", allNormal.F1(), allNormal.MAR(), allNormal.FAR())
	}
	allAnomalous := Count(bools("111"), bools("111"))
	if allAnomalous.F1() != 1 || !math.IsNaN(allAnomalous.FAR()) || allAnomalous.MAR() != 0 {
		t.Errorf("all anomalous, all flagged: F1 %v FAR %v MAR %v, want 1 NaN 0", allAnomalous.F1(), allAnomalous.FAR(), allAnomalous.MAR())
	}
}

func TestPredictMapsWindowVerdictsToRows(t *testing.T) {
	// Windows of 3 rows ending at rows 2..9 (hop 1); rows 4..9 are scored.
	ends := []int{2, 3, 4, 5, 6, 7, 8, 9}
	tests := []struct {
		name      string
		m         Mapping
		window    int
		ends      []int
		anomalous string
		from, to  int
		want      string
	}{
		// Causal: row r takes the verdict of the window ending at r.
		{"causal hop 1", Causal, 3, ends, "00011100", 4, 10, "011100"},
		// Cover: row r is flagged when the windows ending at r, r+1, r+2
		// (those that exist) all are: row 5 (5, 6, 7) but not row 6 (the
		// window ending at 8 is clear) nor row 4 (4 is clear).
		{"cover hop 1", Cover, 3, ends, "00011100", 4, 10, "010000"},
		// The last rows are covered by fewer windows: row 9 only by the
		// window ending at 9.
		{"cover tail", Cover, 3, ends, "00000011", 4, 10, "000011"},
		// Causal with hop 2: windows end at 4, 6, 8; row 5 waits for the
		// window ending at 6; row 9, after the last window, takes its verdict.
		{"causal hop 2", Causal, 3, []int{4, 6, 8}, "010", 4, 10, "011000"},
		{"causal hop 2 tail", Causal, 3, []int{4, 6, 8}, "001", 4, 10, "000111"},
		{"no windows", Causal, 3, nil, "", 4, 7, "000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Predict(tt.m, tt.window, tt.ends, bools(tt.anomalous), tt.from, tt.to)
			if !slices.Equal(got, bools(tt.want)) {
				t.Errorf("Predict = %v, want %v", got, bools(tt.want))
			}
		})
	}
}
