//go:build cgo

package models

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models/nn"
)

// layoutVariants returns a time-major dense autoencoder for windows of
// w×c, the same network taking flattened windows, and the same network
// taking channel-major windows (its first layer's columns and last
// layer's rows permuted), which all compute the same function.
func layoutVariants(t *testing.T, w, c int) (tm, flat, cm *nn.Network) {
	tm = denseAE(t, w, c)
	d0, d1 := tm.Layers[0].(*nn.Dense), tm.Layers[1].(*nn.Dense)
	flat = &nn.Network{Input: []int{w * c}, Layers: []nn.Layer{d0, d1}}
	perm := func(i int) int { return i%c*w + i/c } // time-major index → channel-major
	c0 := &nn.Dense{Units: d0.Units, Act: d0.Act, Bias: d0.Bias, Weights: make([]float32, len(d0.Weights))}
	for u := range d0.Units {
		for i := range w * c {
			c0.Weights[u*w*c+perm(i)] = d0.Weights[u*w*c+i]
		}
	}
	c1 := &nn.Dense{Units: d1.Units, Act: d1.Act, Bias: make([]float32, len(d1.Bias)), Weights: make([]float32, len(d1.Weights))}
	for i := range w * c {
		c1.Bias[perm(i)] = d1.Bias[i]
		copy(c1.Weights[perm(i)*d0.Units:(perm(i)+1)*d0.Units], d1.Weights[i*d0.Units:(i+1)*d0.Units])
	}
	cm = &nn.Network{Input: []int{c, w}, Layers: []nn.Layer{c0, c1, &nn.Reshape{Shape: []int{c, w}}}}
	return tm, flat, cm
}

func rawWindows(n, w, c int, seed uint64) []float64 {
	r := rand.New(rand.NewPCG(seed, 9))
	raw := make([]float64, n*w*c)
	for i := range raw {
		raw[i] = float64(10*(i%c)) + r.NormFloat64()*float64(i%c+1)
	}
	return raw
}

func scoresOf(t *testing.T, path string, raw []float64, n, c int) ([]float64, []float64) {
	t.Helper()
	md, err := Load(path, inference.Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	scores, contrib := make([]float64, n), make([]float64, n*c)
	if err := md.Score(context.Background(), raw, scores, contrib); err != nil {
		t.Fatal(err)
	}
	return scores, contrib
}

// TestLayoutsScoreAlike scores the same windows through a time-major, a
// flattened and a channel-major model of the same function: the scores
// and contributions agree.
func TestLayoutsScoreAlike(t *testing.T) {
	const w, c, n = 5, 3, 7
	tm, flat, cm := layoutVariants(t, w, c)
	raw := rawWindows(n, w, c, 1)
	want, wantC := scoresOf(t, saved(t, tm, manifestFor(w, "a", "b", "c")), raw, n, c)
	mf := manifestFor(w, "a", "b", "c")
	gotF, gotFC := scoresOf(t, saved(t, flat, mf), raw, n, c)
	mc := manifestFor(w, "a", "b", "c")
	mc.Input.Layout = LayoutChannelMajor
	gotC, gotCC := scoresOf(t, saved(t, cm, mc), raw, n, c)
	for name, got := range map[string][2][]float64{"flattened": {gotF, gotFC}, "channel-major": {gotC, gotCC}} {
		for i := range want {
			if math.Abs(got[0][i]-want[i]) > 1e-5*want[i] {
				t.Errorf("%s: score %d is %v, time-major %v", name, i, got[0][i], want[i])
			}
		}
		for i := range wantC {
			if math.Abs(got[1][i]-wantC[i]) > 1e-5*(wantC[i]+1e-3) {
				t.Errorf("%s: contribution %d is %v, time-major %v", name, i, got[1][i], wantC[i])
			}
		}
	}
}

// TestLayoutMismatchNamesTheField loads a channel-major model under a
// time-major manifest: the error shows both shapes and names input.layout.
func TestLayoutMismatchNamesTheField(t *testing.T) {
	_, _, cm := layoutVariants(t, 5, 3)
	_, err := Load(saved(t, cm, manifestFor(5, "a", "b", "c")), inference.Options{Workers: 1})
	if err == nil || !strings.Contains(err.Error(), `set input.layout to "channel-major"`) || !strings.Contains(err.Error(), "[3 5]") {
		t.Fatalf("err = %v, want one naming input.layout and the tensor's [3 5]", err)
	}
	m := manifestFor(4, "a", "b", "c")
	_, err = Load(saved(t, cm, m), inference.Options{Workers: 1})
	if err == nil || !strings.Contains(err.Error(), "declare input [4 3] per window, the model's input tensor is [3 5] (15 values, want 12)") {
		t.Fatalf("err = %v, want both shapes", err)
	}
}

// TestQuantizedModelScores loads full-integer versions (int8 and uint8
// ends) of a model through Load and checks their scores against the
// float model's, and that windows beyond the calibration clamp.
func TestQuantizedModelScores(t *testing.T) {
	const w, c, n = 5, 3, 40
	tm, _, _ := layoutVariants(t, w, c)
	m := manifestFor(w, "a", "b", "c")
	raw := rawWindows(n, w, c, 2)
	want, _ := scoresOf(t, saved(t, tm, m), raw, n, c)
	// Calibrate on the normalised windows, as the trainer does.
	calib := make([]float32, len(raw))
	for i, x := range raw {
		calib[i] = float32((x - m.Normalization.Mean[i%c]) / m.Normalization.Std[i%c])
	}
	for _, io := range []nn.IOType{nn.IOInt8, nn.IOUInt8} {
		q, err := nn.Quantize(tm, nn.QuantOptions{Mode: nn.FullInteger, IO: io, Calibration: calib})
		if err != nil {
			t.Fatal(err)
		}
		b, err := q.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		mq := manifestFor(w, "a", "b", "c")
		if err := Save(dir, "ae", b, mq); err != nil {
			t.Fatal(err)
		}
		got, _ := scoresOf(t, dir+"/ae", raw, n, c)
		// The reference: the integer arithmetic's reconstruction of the
		// normalised windows, reduced by mse.
		ref := make([]float64, len(calib))
		if err := q.Forward(calib, ref); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			mse := 0.0
			for j := i * w * c; j < (i+1)*w*c; j++ {
				d := ref[j] - float64(calib[j])
				mse += d * d
			}
			mse /= w * c
			if math.Abs(got[i]-mse) > 0.02*mse {
				t.Errorf("io %d: score %d is %v, reference of the int8 arithmetic %v", io, i, got[i], mse)
			}
			if math.Abs(got[i]-want[i]) > 0.25*want[i] {
				t.Errorf("io %d: score %d is %v, float model %v", io, i, got[i], want[i])
			}
		}
		before := inference.ClampedTotal()
		wide := slices.Clone(raw)
		for i := range wide {
			wide[i] *= 3
		}
		scoresOf(t, dir+"/ae", wide, n, c)
		if inference.ClampedTotal() == before {
			t.Errorf("io %d: no value clamped for windows three times wider than the calibration", io)
		}
	}
}
