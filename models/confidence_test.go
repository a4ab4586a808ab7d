package models

import (
	"math"
	"testing"
)

func TestSurvivalEmpirical(t *testing.T) {
	// scores 0..10 at probabilities 0, 0.1, ..., 1
	q := make([]float64, 11)
	for i := range q {
		q[i] = float64(i)
	}
	th := Threshold{Method: MethodQuantile, Scores: &ScoreStats{Count: 99, Quantiles: q}}
	for _, tc := range []struct{ score, want float64 }{
		{-1, 1}, {0, 1}, {2.5, 0.75}, {9, 0.1}, {9.5, 0.05}, {10, 0.01}, // floor 1/(99+1) at the maximum
		{11, 0.01},
	} {
		got, ok := th.Survival(tc.score)
		if !ok || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Survival(%v) = %v, %v; want %v", tc.score, got, ok, tc.want)
		}
	}
	if c, _ := th.Confidence(9.5); math.Abs(c-0.95) > 1e-12 {
		t.Errorf("Confidence(9.5) = %v, want 0.95", c)
	}
	th.Factor = 2 // read at score / factor
	if c, _ := th.Confidence(19); math.Abs(c-0.95) > 1e-12 {
		t.Errorf("factor 2: Confidence(19) = %v, want 0.95", c)
	}
}

// TestSurvivalOlderManifest: without quantiles, the summary statistics are
// the knots (min 0, p50 1, p90 2, p99 4, max 8).
func TestSurvivalOlderManifest(t *testing.T) {
	th := Threshold{Method: MethodQuantile, Scores: &ScoreStats{Count: 999, Min: 0, P50: 1, P90: 2, P99: 4, Max: 8}}
	for _, tc := range []struct{ score, want float64 }{{0.5, 0.75}, {1.5, 0.3}, {3, 0.055}, {6, 0.005}, {9, 0.001}} {
		if got, ok := th.Survival(tc.score); !ok || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Survival(%v) = %v, %v; want %v", tc.score, got, ok, tc.want)
		}
	}
}

// TestSurvivalPOTTail: above the POT's initial threshold u the GPD tail
// gives Peaks/Samples·(1 + ξ(s−u)/σ)^(−1/ξ).
func TestSurvivalPOTTail(t *testing.T) {
	pot := &POT{Risk: 1e-3, InitialQuantile: 0.9, Initial: 10, Shape: 0.5, Scale: 2, Peaks: 100, Samples: 1000}
	q := make([]float64, 101)
	for i := range q {
		q[i] = float64(i) / 9 // the 90th percentile is 10, u
	}
	th := Threshold{Method: MethodPOT, POT: pot, Scores: &ScoreStats{Count: 1000, Quantiles: q}}
	// s = 14: y = 2, 1 + 0.5·2 = 2, 2^(−2) = 0.25 → 0.1·0.25
	if got, _ := th.Survival(14); math.Abs(got-0.025) > 1e-12 {
		t.Errorf("Survival(14) = %v, want 0.025", got)
	}
	// continuous at u: the empirical side gives 1 − 0.9 = 0.1 = Peaks/Samples
	below, _ := th.Survival(10)
	above, _ := th.Survival(10 + 1e-9)
	if math.Abs(below-0.1) > 1e-9 || math.Abs(above-0.1) > 1e-9 {
		t.Errorf("at u: %v below, %v above; want 0.1 both", below, above)
	}
	// ξ = 0: exponential tail; ξ < 0: zero beyond the end point u − σ/ξ
	pot.Shape = 0
	if got, _ := th.Survival(12); math.Abs(got-0.1*math.Exp(-1)) > 1e-12 {
		t.Errorf("exponential tail: %v", got)
	}
	pot.Shape = -0.5 // end point 10 + 4 = 14
	if got, _ := th.Survival(15); got != 0 {
		t.Errorf("beyond the end point: %v, want 0", got)
	}
	// the tail decreases
	pot.Shape = 0.2
	prev := 1.0
	for s := 10.5; s < 40; s += 0.5 {
		p, _ := th.Survival(s)
		if !(p < prev) {
			t.Fatalf("Survival(%v) = %v, not below %v", s, p, prev)
		}
		prev = p
	}
}

func TestSurvivalUnknown(t *testing.T) {
	if _, ok := (Threshold{Value: 1, Method: MethodManual}).Survival(3); ok {
		t.Fatal("a manual threshold has no distribution, want ok = false")
	}
}
