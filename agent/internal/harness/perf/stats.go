package perf

import (
	"math"
	"slices"
	"time"
)

// Slope fits y = a + b·x by least squares and returns b; NaN with fewer
// than two distinct x.
func Slope(x, y []float64) float64 {
	n := float64(min(len(x), len(y)))
	if n < 2 {
		return math.NaN()
	}
	var sx, sy float64
	for i := range int(n) {
		sx += x[i]
		sy += y[i]
	}
	mx, my := sx/n, sy/n
	var sxx, sxy float64
	for i := range int(n) {
		dx := x[i] - mx
		sxx += dx * dx
		sxy += dx * (y[i] - my)
	}
	if sxx == 0 {
		return math.NaN()
	}
	return sxy / sxx
}

// Percentile returns the q-quantile (0..1) of ds by the nearest-rank
// method, sorting ds in place; 0 for none.
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}
