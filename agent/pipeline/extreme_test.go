package pipeline

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models"
)

// zeroScorer reconstructs every window as zeros (the error is the
// normalised input) and fails if it is given a non-finite value.
type zeroScorer struct{ spec inference.Spec }

func (z zeroScorer) Score(_ context.Context, in, out []float32) error {
	for _, v := range in {
		if math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) {
			return errors.New("zeroScorer: non-finite input")
		}
	}
	clear(out)
	return nil
}
func (z zeroScorer) Spec() inference.Spec { return z.spec }
func (z zeroScorer) Close() error         { return nil }

// realModel is a models.Model as the pipeline sees it (as the daemon's
// adapter does).
type realModel struct{ *models.Model }

func (r realModel) ID() string { return "zeros@1" }
func (r realModel) Window() (int, int) {
	return r.Manifest().Input.Window, r.Manifest().Input.Hop
}
func (r realModel) Channels() []string { return r.Manifest().Input.Channels }

func newRealModel(t *testing.T, window int, chans []string) realModel {
	t.Helper()
	n := len(chans)
	m := &models.Manifest{
		Format: models.Format, Name: "zeros", Version: "1", Kind: models.KindSensor,
		SHA256:        strings.Repeat("0", 64),
		Input:         models.Input{Window: window, Hop: 1, Channels: chans},
		Normalization: models.Normalization{Mean: make([]float64, n), Std: slicesOf(n, 1)},
		Output:        models.Output{Kind: models.OutputReconstruction, Reduction: models.ReduceMSE},
		Threshold:     models.Threshold{Value: 10, Method: models.MethodManual},
	}
	md, err := models.New(m, zeroScorer{spec: m.Spec()})
	if err != nil {
		t.Fatal(err)
	}
	return realModel{md}
}

func slicesOf(n int, v float64) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// TestExtremeValueIsAnAnomalyOfItsChannel: one 1e308 or 1e50 (finite in
// float64, out of float32 range) in channel c is an alert naming c with
// share 1; no window is dropped, and the windows without it score as
// usual.
func TestExtremeValueIsAnAnomalyOfItsChannel(t *testing.T) {
	chans := []string{"a", "b", "c"}
	for _, big := range []float64{1e308, -1e308, 1e50, 3.5e38} {
		m := newRealModel(t, 4, chans)
		spec := sensorSpec(m)
		spec.Detect.K, spec.Detect.N = 1, 1
		var in []source.Input
		for i := range 40 {
			v := []float64{0.1, 0.2, 0.3}
			if i == 20 {
				v[2] = big
			}
			in = append(in, source.Input{Source: "sim", Time: t0.Add(time.Duration(i) * time.Second), Channels: chans, Values: v})
		}
		p, buf := run(t, Options{Streams: []StreamSpec{spec}, MaxBatch: 64}, in)
		if d := p.Stats().Drops; len(d) > 0 {
			t.Errorf("%g: drops %+v, want none", big, d)
		}
		scores := buf.scores(t)
		if len(scores) != 37 {
			t.Fatalf("%g: %d scores, want 37", big, len(scores))
		}
		for _, s := range scores {
			has := !s.TS.Before(t0.Add(20*time.Second)) && !s.TS.After(t0.Add(23*time.Second))
			if has != (s.Score == math.MaxFloat32) {
				t.Errorf("%g: window ending %v scores %v", big, s.TS, s.Score)
			}
		}
		al := buf.alerts(t)
		if len(al) != 2 || al[0].State != "open" || al[1].State != "closed" {
			t.Fatalf("%g: alerts %+v, want one episode", big, al)
		}
		top := al[0].TopFeatures
		if len(top) == 0 || top[0].Name != "c" || top[0].Share != 1 || al[0].Severity != "critical" {
			t.Errorf("%g: alert %+v names %+v, want critical with c at share 1", big, al[0], top)
		}
	}
}

// failModel fails to score a window with a value above 1e300, as a model
// might that cannot take it.
type failModel struct{ meanModel }

func (f *failModel) Score(ctx context.Context, w, scores, errs []float64) error {
	for _, v := range w {
		if v > 1e300 {
			return errors.New("failModel: value too large")
		}
	}
	return f.meanModel.Score(ctx, w, scores, errs)
}

// TestScoreErrorDropsOnlyItsWindows: a window the model fails on is
// dropped alone, counted under its stream's source; the rest of the batch
// is scored.
func TestScoreErrorDropsOnlyItsWindows(t *testing.T) {
	m := &failModel{meanModel{id: "fail@1", length: 2, hop: 1, chans: chans2, thr: 1e9}}
	in := samples(30, func(i int) []float64 {
		if i == 10 {
			return []float64{1e308, 0}
		}
		return []float64{1, 1}
	})
	p, buf := run(t, Options{Streams: []StreamSpec{sensorSpec(m)}, MaxBatch: 64}, in)
	d := p.Stats().Drops
	if len(d) != 1 || d[0].Source != "sim" || d[0].Reason != "score_error" || d[0].Count != 2 {
		t.Errorf("drops %+v, want the 2 windows with the value as sim score_error", d)
	}
	if n := len(buf.scores(t)); n != 29-2 {
		t.Fatalf("%d scores, want 27", n)
	}
}
