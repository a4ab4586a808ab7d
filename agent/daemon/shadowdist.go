package daemon

import (
	"math"
)

// The score distributions of a shadow run. Each model's scores are taken
// relative to its own threshold (score/threshold: 1 is the threshold), so
// that models of different scales compare, and counted in fixed bins:
// distBins bins of distWidth over [0, distBins×distWidth), and one more for
// everything above. Quantiles are read off the bins (linear within a bin,
// so within distWidth/2 of the exact value below the last bin); the mean is
// exact. The bins also give the two-sample Kolmogorov–Smirnov statistic:
// the largest gap between the two cumulative distributions at a bin edge.
const (
	distBins  = 200
	distWidth = 0.02
)

// scoreDist is one model's distribution in a shadow run.
type scoreDist struct {
	Bins []uint64 `json:"bins"` // distBins+1 counts
	N    uint64   `json:"n"`
	Sum  float64  `json:"sum"` // of score/threshold
	Max  float64  `json:"max"`
}

func newScoreDist() scoreDist { return scoreDist{Bins: make([]uint64, distBins+1)} }

// add counts a score against its threshold.
func (d *scoreDist) add(score, threshold float64) {
	r := score / threshold
	switch {
	case math.IsNaN(r) || math.IsInf(r, 1):
		r = math.MaxFloat32
	case r < 0 || threshold <= 0:
		r = 0
	}
	i := int(r / distWidth)
	if i > distBins || i < 0 {
		i = distBins
	}
	d.Bins[i]++
	d.N++
	d.Sum += r
	d.Max = max(d.Max, r)
}

// quantile is the q-quantile (0 < q ≤ 1) of score/threshold, interpolated
// within its bin (the last bin spans up to the largest value seen).
func (d *scoreDist) quantile(q float64) float64 {
	if d.N == 0 {
		return 0
	}
	rank := q * float64(d.N)
	var cum float64
	for i, c := range d.Bins {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= rank {
			lo, hi := float64(i)*distWidth, float64(i+1)*distWidth
			if i == distBins {
				hi = max(d.Max, lo)
			}
			return lo + (rank-cum)/float64(c)*(hi-lo)
		}
		cum += float64(c)
	}
	return d.Max
}

func (d *scoreDist) mean() float64 {
	if d.N == 0 {
		return 0
	}
	return d.Sum / float64(d.N)
}

// ksDistance is the two-sample Kolmogorov–Smirnov statistic of a and b over
// the bins: max over bin edges of |F_a − F_b|; 0 when either is empty.
func ksDistance(a, b *scoreDist) float64 {
	if a.N == 0 || b.N == 0 || len(a.Bins) != len(b.Bins) {
		return 0
	}
	var ca, cb uint64
	ks := 0.0
	for i := range a.Bins {
		ca += a.Bins[i]
		cb += b.Bins[i]
		ks = max(ks, math.Abs(float64(ca)/float64(a.N)-float64(cb)/float64(b.N)))
	}
	return ks
}

// distSummary is a distribution as health shows it.
type distSummary struct {
	Windows uint64  `json:"windows"`
	Mean    float64 `json:"mean"`
	P50     float64 `json:"p50"`
	P90     float64 `json:"p90"`
	P99     float64 `json:"p99"`
}

func (d *scoreDist) summary() distSummary {
	round := func(x float64) float64 { return math.Round(x*1e4) / 1e4 }
	return distSummary{Windows: d.N, Mean: round(d.mean()), P50: round(d.quantile(0.5)), P90: round(d.quantile(0.9)), P99: round(d.quantile(0.99))}
}

// distComparison is health's comparison of the two models' scores, each
// relative to its threshold.
type distComparison struct {
	Serving distSummary `json:"serving"`
	Shadow  distSummary `json:"shadow"`
	KS      float64     `json:"ks"` // two-sample Kolmogorov–Smirnov statistic, 0..1
}

func compareDists(serving, shadow *scoreDist) distComparison {
	return distComparison{Serving: serving.summary(), Shadow: shadow.summary(), KS: math.Round(ksDistance(serving, shadow)*1e4) / 1e4}
}
