package config

import (
	"testing"

	"github.com/vigil-edge/vigil/agent/eval"
)

// The on-device learning defaults are the settings `vigil eval skab`
// measures; if one side changes, the published figures no longer describe
// what a device does.
func TestLearnDefaultsAreWhatEvalMeasures(t *testing.T) {
	l := defaultStream().Learn
	e := eval.DefaultOptions().Train
	if l.Arch != string(e.Arch) || l.DriftHorizon != e.DriftHorizon ||
		l.CalibrateOn != e.Calibration.On || l.ThresholdFactor != e.Calibration.Factor {
		t.Errorf("learn defaults arch %s, drift_horizon %d, calibrate_on %s, threshold_factor %v; eval measures %s, %d, %s, %v",
			l.Arch, l.DriftHorizon, l.CalibrateOn, l.ThresholdFactor,
			e.Arch, e.DriftHorizon, e.Calibration.On, e.Calibration.Factor)
	}
}
