package models

import (
	"math"
	"sort"
)

// Survival is the probability that a normal window scores at least score,
// under the normal-score distribution fitted at calibration: the POT fit's
// generalised Pareto tail above its initial threshold (Peaks/Samples ×
// (1 + ξ(s−u)/σ)^(−1/ξ)), the empirical distribution of the calibration
// scores below it (Scores.Quantiles, or min/p50/p90/p99/max for manifests
// written before the quantiles were kept), interpolated linearly. Above
// the highest calibration score without a POT tail it is 1/(Count+1): the
// scores cannot say more. ok is false when the manifest records neither
// (a manual threshold).
func (t Threshold) Survival(score float64) (p float64, ok bool) {
	if math.IsNaN(score) {
		return 0, t.POT != nil || t.Scores != nil
	}
	if pt := t.POT; pt != nil && pt.Samples > 0 && score > pt.Initial {
		return pt.survival(score), true
	}
	s := t.Scores
	if s == nil {
		if t.POT != nil {
			return 1 - t.POT.InitialQuantile, true // at or below the initial threshold: at least its share
		}
		return 0, false
	}
	xs, ps := s.knots()
	switch {
	case score <= xs[0]:
		return 1, true
	case score > xs[len(xs)-1]:
		return 1 / float64(s.Count+1), true
	}
	// xs[i] < score ≤ xs[i+1]: the CDF rises linearly between them
	i := sort.Search(len(xs), func(i int) bool { return xs[i] >= score }) - 1
	f := ps[i] + (ps[i+1]-ps[i])*(score-xs[i])/(xs[i+1]-xs[i])
	return math.Max(1-f, 1/float64(s.Count+1)), true
}

// Confidence is how surely a score this high is not one of the stream's
// normal windows: 1 − P(a normal window the model has not seen scores at
// least this high).
//
// With an Unseen fit (written when the threshold was calibrated on
// validation windows, models/train) that probability is the fit's: the
// validation windows are too few (21 on a device that learns on 400
// samples) to show the tail, and later normal windows score higher than
// the warm-up's. Without one (older manifests, thresholds calibrated on a
// file or on the training windows) it is Survival(score / Factor), as
// before: the calibration scores' distribution, with its POT tail, read
// at score / Factor. On held-out normal SKAB data the Unseen fit is
// calibrated in the bulk and roughly in the tail; the fallback is not
// (agent/eval/README.md, "Confidence"). ok is false when the manifest
// records none of these (a manual threshold).
func (t Threshold) Confidence(score float64) (float64, bool) {
	if u := t.Unseen; u != nil {
		return 1 - u.Survival(score), true
	}
	if t.Factor > 0 {
		score /= t.Factor
	}
	p, ok := t.Survival(score)
	return 1 - p, ok
}

// Survival is P(an unseen normal window scores at least score) under the
// fit. Scores at or below 0 have survival 1, NaN 0 (as Threshold.Survival).
func (u UnseenFit) Survival(score float64) float64 {
	switch {
	case math.IsNaN(score):
		return 0
	case score <= 0:
		return 1
	}
	z := (math.Log(score) - u.Location) / u.Scale
	if z >= 0 {
		return 0.5 * math.Exp(-z)
	}
	return 1 - 0.5*math.Exp(z)
}

// knots are the empirical CDF's points: scores and their probabilities.
func (s *ScoreStats) knots() (xs, ps []float64) {
	if q := s.Quantiles; len(q) >= 2 {
		ps = make([]float64, len(q))
		for i := range q {
			ps[i] = float64(i) / float64(len(q)-1)
		}
		return q, ps
	}
	return []float64{s.Min, s.P50, s.P90, s.P99, s.Max}, []float64{0, 0.5, 0.9, 0.99, 1}
}

// survival is the POT tail: P(score ≥ s) for s above Initial.
func (p *POT) survival(s float64) float64 {
	zeta := float64(p.Peaks) / float64(p.Samples)
	y := (s - p.Initial) / p.Scale
	if math.Abs(p.Shape) < 1e-9 {
		return zeta * math.Exp(-y)
	}
	b := 1 + p.Shape*y
	if b <= 0 {
		return 0 // beyond the end point of a bounded tail (ξ < 0)
	}
	return zeta * math.Pow(b, -1/p.Shape)
}
