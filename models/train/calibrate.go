package train

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/vigil-edge/vigil/models"
)

// Calibration says how the anomaly threshold is set from the scores of
// normal windows.
type Calibration struct {
	// Method is models.MethodPOT (default) or models.MethodQuantile.
	Method string
	// Quantile is the quantile the quantile method takes (0.99), and the
	// fallback when POT has too few peaks to fit.
	Quantile float64
	// Factor multiplies the calibrated value (1 keeps it).
	Factor float64
	// Risk is the POT method's target probability that a normal window
	// scores above the threshold (1e-3).
	Risk float64
	// InitialQuantile is the quantile of the scores above which POT fits
	// the tail (0.9); Risk must be below 1-InitialQuantile.
	InitialQuantile float64
	// On selects the windows whose scores calibrate: "train+validation"
	// (default), "validation" or "train". Training windows score lower
	// than unseen normal data; validation windows are unseen but fewer.
	On string
	// Rescale multiplies the training windows' scores by the ratio of the
	// mean validation score to the mean training score (when above 1 and
	// there are validation windows) before calibrating on them, so that
	// they stand for unseen data (default true).
	Rescale bool
	// UnseenShift and UnseenScale set, for a threshold calibrated on
	// validation windows, the distribution of the scores of normal windows
	// the model has not seen, which models.Threshold.Confidence reads: ln
	// of the score Laplace-distributed around the mean ln validation score
	// plus UnseenShift, with scale UnseenScale (both in units of ln score;
	// see models.UnseenFit). 0.19 and 0.50 were chosen on held-out normal
	// SKAB data (agent/eval/README.md, "Confidence"). UnseenScale 0 fits
	// nothing; Confidence then reads the calibration scores.
	UnseenShift, UnseenScale float64
}

// DefaultCalibration is POT on all normal windows, the training windows'
// scores rescaled to the validation windows' mean: risk 1e-3 over the 90th
// percentile, factor 1, with the 99th percentile as fallback; and, when
// calibrating on the validation windows, the unseen-score fit with shift
// 0.19 and scale 0.50.
func DefaultCalibration() Calibration {
	return Calibration{Method: models.MethodPOT, Quantile: 0.99, Factor: 1, Risk: 1e-3, InitialQuantile: 0.9,
		On: "train+validation", Rescale: true, UnseenShift: 0.19, UnseenScale: 0.50}
}

func (c Calibration) validate() error {
	var errs []error
	if c.Method != models.MethodPOT && c.Method != models.MethodQuantile {
		errs = append(errs, fmt.Errorf("Calibration.Method is %q, want %q or %q", c.Method, models.MethodPOT, models.MethodQuantile))
	}
	if !(c.Quantile > 0 && c.Quantile < 1) {
		errs = append(errs, fmt.Errorf("Calibration.Quantile is %v, want a value in (0, 1)", c.Quantile))
	}
	if !(c.Factor > 0) || math.IsInf(c.Factor, 0) {
		errs = append(errs, fmt.Errorf("Calibration.Factor is %v, want a finite value > 0", c.Factor))
	}
	if c.Method == models.MethodPOT {
		if !(c.InitialQuantile > 0 && c.InitialQuantile < 1) {
			errs = append(errs, fmt.Errorf("Calibration.InitialQuantile is %v, want a value in (0, 1)", c.InitialQuantile))
		}
		if !(c.Risk > 0 && c.Risk < 1-c.InitialQuantile) {
			errs = append(errs, fmt.Errorf("Calibration.Risk is %v, want a value in (0, 1-InitialQuantile)", c.Risk))
		}
	}
	if math.IsNaN(c.UnseenShift) || math.IsInf(c.UnseenShift, 0) {
		errs = append(errs, fmt.Errorf("Calibration.UnseenShift is %v, want a finite value", c.UnseenShift))
	}
	if !(c.UnseenScale >= 0) || math.IsInf(c.UnseenScale, 0) {
		errs = append(errs, fmt.Errorf("Calibration.UnseenScale is %v, want a finite value ≥ 0 (0: no fit)", c.UnseenScale))
	}
	if c.On != "train+validation" && c.On != "validation" && c.On != "train" {
		errs = append(errs, fmt.Errorf("Calibration.On is %q, want train+validation, validation or train", c.On))
	}
	return errors.Join(errs...)
}

// minPeaks is the fewest excesses POT fits a GPD to.
const minPeaks = 10

// Calibrate sets a threshold from the scores of normal windows, which
// came from source ("train", "validation" or "train+validation"). When POT
// has fewer than 10 peaks to fit, it falls back to the quantile method and
// says so in the returned warning. Validation scores, all above 0, also
// give the threshold its Unseen fit (FitUnseen) unless c.UnseenScale is 0.
// The fit does not change the threshold.
func Calibrate(scores []float64, c Calibration, source string) (models.Threshold, string, error) {
	if err := c.validate(); err != nil {
		return models.Threshold{}, "", err
	}
	if len(scores) == 0 {
		return models.Threshold{}, "", errors.New("calibrate: no scores")
	}
	for i, s := range scores {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return models.Threshold{}, "", fmt.Errorf("calibrate: score %d is %v", i, s)
		}
	}
	sorted := slices.Sorted(slices.Values(scores))
	stats := Stats(sorted, source)
	var unseen *models.UnseenFit
	if source == "validation" && c.UnseenScale > 0 {
		if u, ok := FitUnseen(sorted, c.UnseenShift, c.UnseenScale); ok {
			unseen = &u
		}
	}
	quantile := func() models.Threshold {
		return models.Threshold{
			Value: c.Factor * Quantile(sorted, c.Quantile), Method: models.MethodQuantile,
			Quantile: c.Quantile, Factor: c.Factor, Scores: &stats, Unseen: unseen,
		}
	}
	if c.Method == models.MethodQuantile {
		return quantile(), "", nil
	}
	pot, err := POT(sorted, c.InitialQuantile, c.Risk)
	if err != nil {
		return quantile(), fmt.Sprintf("POT calibration fell back to the %g quantile: %v", c.Quantile, err), nil
	}
	z := potQuantile(pot)
	return models.Threshold{Value: c.Factor * z, Method: models.MethodPOT, Factor: c.Factor, POT: &pot, Scores: &stats, Unseen: unseen}, "", nil
}

// FitUnseen is the log-Laplace distribution of unseen normal windows'
// scores from the scores of validation windows (normal, not trained on):
// location the mean of their logarithms plus shift, the given scale. The
// validation windows come straight after the training rows; later normal
// windows score higher (the process drifts away from the warm-up) and
// spread much wider than they do, which is what the shift and the scale,
// chosen on held-out data, stand for. ok is false when a score is not
// above 0 (no logarithm) or there are none.
func FitUnseen(scores []float64, shift, scale float64) (models.UnseenFit, bool) {
	if len(scores) == 0 {
		return models.UnseenFit{}, false
	}
	m := 0.0
	for _, s := range scores {
		if !(s > 0) || math.IsInf(s, 0) {
			return models.UnseenFit{}, false
		}
		m += math.Log(s)
	}
	m /= float64(len(scores))
	return models.UnseenFit{Method: models.UnseenLogLaplace, Location: m + shift, Scale: scale}, true
}

// Stats summarises sorted scores.
func Stats(sorted []float64, source string) models.ScoreStats {
	n := float64(len(sorted))
	mean := 0.0
	for _, s := range sorted {
		mean += s
	}
	mean /= n
	v := 0.0
	for _, s := range sorted {
		v += (s - mean) * (s - mean)
	}
	return models.ScoreStats{
		Source: source, Count: len(sorted), Mean: mean, Std: math.Sqrt(v / n),
		Min: sorted[0], P50: Quantile(sorted, 0.5), P90: Quantile(sorted, 0.9),
		P99: Quantile(sorted, 0.99), Max: sorted[len(sorted)-1],
		Quantiles: quantiles(sorted, statsQuantiles),
	}
}

// statsQuantiles is the number of quantiles Stats keeps (every percentile):
// the empirical distribution behind models.Threshold.Survival.
const statsQuantiles = 101

func quantiles(sorted []float64, n int) []float64 {
	q := make([]float64, n)
	for i := range q {
		q[i] = Quantile(sorted, float64(i)/float64(n-1))
	}
	return q
}

// Quantile is the q-quantile of sorted values, interpolating linearly
// between order statistics (R's type 7, numpy's default).
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 1 {
		return sorted[0]
	}
	h := q * float64(len(sorted)-1)
	lo := int(math.Floor(h))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	return sorted[lo] + (h-float64(lo))*(sorted[lo+1]-sorted[lo])
}

// POT fits the peaks over the initial quantile of sorted scores with a
// generalised Pareto distribution (maximum likelihood) and returns the fit
// for the given risk. It needs at least 10 peaks that are not all equal.
func POT(sorted []float64, initialQuantile, risk float64) (models.POT, error) {
	t := Quantile(sorted, initialQuantile)
	var excess []float64
	for _, s := range sorted {
		if s > t {
			excess = append(excess, s-t)
		}
	}
	if len(excess) < minPeaks {
		return models.POT{}, fmt.Errorf("%d scores above the %g quantile, POT needs %d", len(excess), initialQuantile, minPeaks)
	}
	shape, scale, err := FitGPD(excess)
	if err != nil {
		return models.POT{}, err
	}
	return models.POT{
		Risk: risk, InitialQuantile: initialQuantile, Initial: t,
		Shape: shape, Scale: scale, Peaks: len(excess), Samples: len(sorted),
	}, nil
}

// potQuantile is the score exceeded with probability p.Risk under the fit:
// t + σ/ξ·((q·n/Nt)^(-ξ) - 1), or t - σ·log(q·n/Nt) when ξ = 0.
func potQuantile(p models.POT) float64 {
	r := p.Risk * float64(p.Samples) / float64(p.Peaks)
	if math.Abs(p.Shape) < 1e-9 {
		return p.Initial - p.Scale*math.Log(r)
	}
	return p.Initial + p.Scale/p.Shape*(math.Pow(r, -p.Shape)-1)
}

// FitGPD fits a generalised Pareto distribution to positive excesses by
// maximum likelihood and returns its shape ξ and scale σ. It maximises the
// profile likelihood over θ = ξ/σ (Grimshaw, 1993): for a given θ the
// likelihood is maximal at ξ = mean(log(1+θy)), σ = ξ/θ, where
// log L = -n·(log σ + ξ + 1). Shapes below -1, where the likelihood is
// unbounded, are excluded.
func FitGPD(excess []float64) (shape, scale float64, err error) {
	if len(excess) < 2 {
		return 0, 0, errors.New("fit GPD: need at least 2 excesses")
	}
	mean, top := 0.0, 0.0
	for _, y := range excess {
		if !(y > 0) || math.IsInf(y, 0) {
			return 0, 0, fmt.Errorf("fit GPD: excess %v, want finite values > 0", y)
		}
		mean += y
		top = max(top, y)
	}
	mean /= float64(len(excess))
	if top-mean <= 1e-12*top {
		return 0, 0, errors.New("fit GPD: all excesses are equal")
	}
	n := float64(len(excess))
	// profile returns log L at θ, or -Inf outside the admissible region.
	profile := func(theta float64) (ll, xi, sigma float64) {
		if math.Abs(theta) < 1e-12/mean {
			return -n * (math.Log(mean) + 1), 0, mean
		}
		s := 0.0
		for _, y := range excess {
			a := 1 + theta*y
			if a <= 0 {
				return math.Inf(-1), 0, 0
			}
			s += math.Log(a)
		}
		xi = s / n
		sigma = xi / theta
		if xi < -1 || !(sigma > 0) {
			return math.Inf(-1), 0, 0
		}
		return -n * (math.Log(sigma) + xi + 1), xi, sigma
	}
	// A grid over θ in (-1/top, ∞): negative θ as fractions of -1/top that
	// approach the bound, positive θ log-spaced around 1/mean.
	var grid []float64
	for k := 1; k <= 60; k++ {
		frac := 1 - math.Pow(10, -6*float64(k)/60) // 0.2 ... 0.999999
		grid = append(grid, -frac/top)
	}
	grid = append(grid, 0)
	for k := -40; k <= 40; k++ {
		grid = append(grid, math.Pow(10, float64(k)/10)/mean)
	}
	slices.Sort(grid)
	best, bestLL := 0, math.Inf(-1)
	for i, th := range grid {
		if ll, _, _ := profile(th); ll > bestLL {
			best, bestLL = i, ll
		}
	}
	// Golden-section search between the best point's neighbours.
	lo, hi := grid[max(best-1, 0)], grid[min(best+1, len(grid)-1)]
	const phi = 0.6180339887498949
	a, b := hi-phi*(hi-lo), lo+phi*(hi-lo)
	fa, _, _ := profile(a)
	fb, _, _ := profile(b)
	for range 100 {
		if fa > fb {
			hi, b, fb = b, a, fa
			a = hi - phi*(hi-lo)
			fa, _, _ = profile(a)
		} else {
			lo, a, fa = a, b, fb
			b = lo + phi*(hi-lo)
			fb, _, _ = profile(b)
		}
	}
	ll, xi, sigma := profile((lo + hi) / 2)
	if ll < bestLL {
		_, xi, sigma = profile(grid[best])
	}
	if math.IsNaN(xi) || !(sigma > 0) {
		return 0, 0, errors.New("fit GPD: no admissible maximum")
	}
	return xi, sigma, nil
}
