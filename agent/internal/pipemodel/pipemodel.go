// Package pipemodel gives a loaded models.Model the pipeline's Model
// interface: the daemon's wiring and the benchmarks use the one adapter.
package pipemodel

import (
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/models"
)

// Adapt returns m as the pipeline sees it.
func Adapt(m *models.Model) pipeline.Model { return adapter{m} }

type adapter struct{ *models.Model }

// ID is the model's name@version.
func (a adapter) ID() string {
	m := a.Manifest()
	return m.Name + "@" + m.Version
}

// Window is the window length and hop in samples.
func (a adapter) Window() (int, int) {
	m := a.Manifest()
	return m.Input.Window, m.Input.Hop
}

// Channels names the model's input channels in order.
func (a adapter) Channels() []string { return a.Manifest().Input.Channels }

// Confidence gives the pipeline each alert's calibrated confidence, from the
// manifest's calibration record.
func (a adapter) Confidence(score float64) (float64, bool) {
	return a.Manifest().Threshold.Confidence(score)
}

// MaxRuns gives the pipeline each channel's longest run of one value in the
// training data, for the stuck-sensor check: nil when the manifest records
// none, and for behaviour models, whose features repeat by nature.
func (a adapter) MaxRuns() []int {
	m := a.Manifest()
	if m.Kind == models.KindBehaviour {
		return nil
	}
	return m.Normalization.MaxRun
}

// LevelShift gives the pipeline the manifest's record of the training
// data's level shifts (models/shift), for the level-shift check: zeros
// when there is none.
func (a adapter) LevelShift() (recent int, floor, max []float64) {
	if s := a.Manifest().Shift; s != nil && a.Manifest().Kind == models.KindSensor {
		return s.Recent, s.Floor, s.Max
	}
	return 0, nil, nil
}
