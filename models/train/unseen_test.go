package train

import (
	"math"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models"
)

// TestFitUnseenByHand: the location is the mean of the scores' logarithms
// plus the shift; the scale is the one given.
func TestFitUnseenByHand(t *testing.T) {
	e := math.E
	for _, tc := range []struct {
		name         string
		scores       []float64
		shift, scale float64
		want         models.UnseenFit
		ok           bool
	}{
		{"e^0, e^1, e^2", []float64{1, e, e * e}, 0.19, 0.5, models.UnseenFit{Method: models.UnseenLogLaplace, Location: 1.19, Scale: 0.5}, true},
		{"one score", []float64{0.5}, 0, 0.3, models.UnseenFit{Method: models.UnseenLogLaplace, Location: math.Log(0.5), Scale: 0.3}, true},
		{"geometric, not arithmetic, mean", []float64{0.1, 10}, -1, 1, models.UnseenFit{Method: models.UnseenLogLaplace, Location: -1, Scale: 1}, true},
		{"a zero score", []float64{1, 0}, 0.19, 0.5, models.UnseenFit{}, false},
		{"none", nil, 0.19, 0.5, models.UnseenFit{}, false},
	} {
		got, ok := FitUnseen(tc.scores, tc.shift, tc.scale)
		if ok != tc.ok || got.Method != tc.want.Method || math.Abs(got.Location-tc.want.Location) > 1e-12 || got.Scale != tc.want.Scale {
			t.Errorf("%s: FitUnseen = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// TestCalibrateFitsUnseenOnValidationOnly: the fit comes with a threshold
// calibrated on validation windows, not on training windows or a file,
// and never changes the threshold.
func TestCalibrateFitsUnseenOnValidationOnly(t *testing.T) {
	scores := make([]float64, 21) // 21 validation windows, as on a device
	for i := range scores {
		scores[i] = 0.5 + 0.01*float64(i)
	}
	c := DefaultCalibration()
	c.Factor = 2.4
	val, _, err := Calibrate(scores, c, "validation")
	if err != nil {
		t.Fatal(err)
	}
	meanLog := 0.0
	for _, s := range scores {
		meanLog += math.Log(s)
	}
	meanLog /= float64(len(scores))
	want := models.UnseenFit{Method: models.UnseenLogLaplace, Location: meanLog + 0.19, Scale: 0.5}
	if u := val.Unseen; u == nil || u.Method != want.Method || math.Abs(u.Location-want.Location) > 1e-12 || u.Scale != want.Scale {
		t.Errorf("validation: fit %+v, want %+v", u, want)
	}
	// the median unseen window scores e^location: confidence 0.5 there
	if conf, _ := val.Confidence(math.Exp(want.Location)); math.Abs(conf-0.5) > 1e-12 {
		t.Errorf("confidence at e^location = %v, want 0.5", conf)
	}
	for _, src := range []string{"train", "train+validation", "calibration"} {
		th, _, err := Calibrate(scores, c, src)
		if err != nil {
			t.Fatal(err)
		}
		if th.Unseen != nil {
			t.Errorf("%s: fit %+v, want none", src, th.Unseen)
		}
		if th.Value != val.Value {
			t.Errorf("%s: threshold %v, want %v as from validation", src, th.Value, val.Value)
		}
	}
	c.UnseenScale = 0
	if th, _, _ := Calibrate(scores, c, "validation"); th.Unseen != nil || th.Value != val.Value {
		t.Errorf("UnseenScale 0: fit %+v, threshold %v; want none, %v", th.Unseen, th.Value, val.Value)
	}
	for _, bad := range []struct {
		shift, scale float64
		want         string
	}{{math.NaN(), 0.5, "Calibration.UnseenShift"}, {0, -1, "Calibration.UnseenScale"}, {0, math.Inf(1), "Calibration.UnseenScale"}} {
		c := DefaultCalibration()
		c.UnseenShift, c.UnseenScale = bad.shift, bad.scale
		if _, _, err := Calibrate(scores, c, "validation"); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("shift %v scale %v: err = %v, want it to name %s", bad.shift, bad.scale, err, bad.want)
		}
	}
}
