package train

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models"
)

func TestQuantile(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5}
	for _, tt := range []struct{ q, want float64 }{
		{0, 1}, {0.5, 3}, {0.9, 4.6}, {0.99, 4.96}, {1, 5}, {0.125, 1.5},
	} {
		if got := Quantile(s, tt.q); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if Quantile([]float64{7}, 0.3) != 7 {
		t.Error("quantile of one value")
	}
}

// gpdSample draws n values from a GPD(ξ, σ) by inverting its CDF.
func gpdSample(r *rand.Rand, n int, xi, sigma float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		u := r.Float64()
		if xi == 0 {
			out[i] = -sigma * math.Log(1-u)
		} else {
			out[i] = sigma / xi * (math.Pow(1-u, -xi) - 1)
		}
	}
	return out
}

// TestFitGPD recovers known parameters from large samples, on both sides
// of ξ = 0 and at 0.
func TestFitGPD(t *testing.T) {
	for i, tt := range []struct{ xi, sigma float64 }{
		{0.3, 2}, {0, 1}, {-0.25, 0.5}, {0.1, 0.01},
	} {
		y := gpdSample(rand.New(rand.NewPCG(uint64(i), 3)), 20000, tt.xi, tt.sigma)
		xi, sigma, err := FitGPD(y)
		if err != nil {
			t.Fatalf("ξ=%v σ=%v: %v", tt.xi, tt.sigma, err)
		}
		if math.Abs(xi-tt.xi) > 0.04 || math.Abs(sigma-tt.sigma) > 0.05*tt.sigma {
			t.Errorf("fit of GPD(ξ=%v, σ=%v) = (%.4f, %.4f)", tt.xi, tt.sigma, xi, sigma)
		}
	}
}

func TestFitGPDErrors(t *testing.T) {
	for _, y := range [][]float64{{1}, {1, 1, 1}, {1, -1, 2}, {1, math.Inf(1)}} {
		if _, _, err := FitGPD(y); err == nil {
			t.Errorf("FitGPD(%v) succeeded", y)
		}
	}
}

// TestPOTThreshold: on exponential scores the POT threshold for risk q is
// the exponential's (1-q) quantile, which lies beyond the sample's tail.
func TestPOTThreshold(t *testing.T) {
	scores := gpdSample(rand.New(rand.NewPCG(1, 1)), 5000, 0, 1)
	th, warn, err := Calibrate(scores, DefaultCalibration(), "train")
	if err != nil || warn != "" {
		t.Fatal(err, warn)
	}
	want := -math.Log(1e-3) // 6.91
	if th.Method != models.MethodPOT || math.Abs(th.Value-want) > 0.1*want {
		t.Errorf("threshold %+v, want about %.2f", th, want)
	}
	if th.POT.Peaks != 500 || th.POT.Samples != 5000 || math.Abs(th.POT.Initial+math.Log(0.1)) > 0.15 {
		t.Errorf("fit %+v", th.POT)
	}
	if th.Scores.Count != 5000 || th.Scores.Source != "train" || th.Scores.Max < th.Scores.P99 {
		t.Errorf("stats %+v", th.Scores)
	}
	exceed := 0
	for _, s := range gpdSample(rand.New(rand.NewPCG(2, 2)), 100000, 0, 1) {
		if s > th.Value {
			exceed++
		}
	}
	if exceed < 40 || exceed > 200 { // expected 100
		t.Errorf("%d of 100000 fresh scores exceed the threshold, want about 100", exceed)
	}
}

func TestCalibrateQuantileAndFallback(t *testing.T) {
	scores := make([]float64, 50) // 5 scores above the 90th percentile
	for i := range scores {
		scores[i] = float64(i)
	}
	c := DefaultCalibration()
	th, warn, err := Calibrate(scores, c, "validation")
	if err != nil {
		t.Fatal(err)
	}
	if th.Method != models.MethodQuantile || !strings.Contains(warn, "fell back") || th.Value != Quantile(scores, 0.99) {
		t.Errorf("fallback: %+v %q", th, warn)
	}
	c.Method, c.Quantile, c.Factor = models.MethodQuantile, 0.5, 2
	rev := slices.Clone(scores)
	slices.Reverse(rev)
	th, _, err = Calibrate(rev, c, "train")
	if err != nil || th.Value != 2*24.5 || th.Quantile != 0.5 || th.Factor != 2 || th.POT != nil {
		t.Errorf("quantile × factor: %+v %v", th, err)
	}
}

func TestCalibrateErrors(t *testing.T) {
	c := DefaultCalibration()
	if _, _, err := Calibrate(nil, c, "train"); err == nil {
		t.Error("no scores accepted")
	}
	if _, _, err := Calibrate([]float64{1, math.NaN()}, c, "train"); err == nil {
		t.Error("NaN score accepted")
	}
	c.Method, c.Risk, c.Factor, c.On = "median", 0.5, -1, "test"
	_, _, err := Calibrate([]float64{1}, c, "train")
	for _, want := range []string{"Calibration.Method", "Calibration.Factor", "Calibration.On"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	c = DefaultCalibration()
	c.Risk = 0.2
	if _, _, err := Calibrate([]float64{1}, c, "train"); err == nil || !strings.Contains(err.Error(), "Calibration.Risk") {
		t.Errorf("risk above the peak fraction: %v", err)
	}
}
