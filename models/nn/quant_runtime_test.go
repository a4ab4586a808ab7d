//go:build cgo

package nn

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/inference"
)

// denseQAE is a dense autoencoder over windows of shape in, as Keras
// writes one: flatten, dense layers, reshape back.
func denseQAE(t testing.TB, in []int, acts []Activation, seed uint64) *Network {
	t.Helper()
	n := size(in)
	layers := []Layer{&Dense{Units: 16, Act: acts[0]}, &Dense{Units: 4, Act: acts[1]}, &Dense{Units: 16, Act: acts[2]},
		&Dense{Units: n, Act: Linear}}
	if len(in) > 1 {
		layers = append(layers, &Reshape{Shape: in})
	}
	net := &Network{Input: in, Layers: layers}
	if err := net.Randomize(rand.New(rand.NewPCG(seed, 3))); err != nil {
		t.Fatal(err)
	}
	return net
}

// runtimeOutputs loads model and scores in at batch 1 and at one batch.
func runtimeOutputs(t *testing.T, model []byte, in []float32, is, os int) (*inference.TFLite, []float32) {
	t.Helper()
	s, err := inference.Load(model, inference.Options{Workers: 1})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if got := s.Spec().InputSize(); got != is {
		t.Fatalf("input size %d, want %d", got, is)
	}
	got := make([]float32, len(in)/is*os)
	if err := s.Score(context.Background(), in, got); err != nil {
		t.Fatalf("score: %v", err)
	}
	one := make([]float32, os)
	if err := s.Score(context.Background(), in[:is], one); err != nil {
		t.Fatalf("score one: %v", err)
	}
	for i := range one {
		if d := math.Abs(float64(one[i] - got[i])); d > 1e-6*(1+math.Abs(float64(got[i]))) {
			t.Fatalf("batch 1 and batch %d disagree at %d: %v, %v", len(in)/is, i, one[i], got[i])
		}
	}
	return s, got
}

// TestRuntimeFloatLayouts runs the float layouts converters emit: a
// flattened input [window·channels] and a channel-major [channels, window].
func TestRuntimeFloatLayouts(t *testing.T) {
	for _, in := range [][]int{{24}, {3, 8}} {
		net := denseQAE(t, in, []Activation{ReLU, Tanh, ReLU}, 5)
		model, err := net.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		is := size(in)
		x := randomInput(9, 10*is)
		_, got := runtimeOutputs(t, model, x, is, is)
		want := make([]float64, len(got))
		if err := net.Forward(x, want); err != nil {
			t.Fatal(err)
		}
		rms := rmsOf(want)
		for i := range got {
			if !closeEnough(got[i], want[i], rms) {
				t.Fatalf("input %v value %d: TFLite %v, reference %v", in, i, got[i], want[i])
			}
		}
	}
}

// TestRuntimeQuantizedMatchesReference runs full-integer models (int8,
// uint8 and float ends) and dynamic-range models through TFLite and
// compares them with the Go reference of the integer arithmetic: a
// full-integer output may differ by one step of its scale, a dynamic-range
// one by float rounding.
func TestRuntimeQuantizedMatchesReference(t *testing.T) {
	cases := []struct {
		name string
		in   []int
		acts []Activation
		opts QuantOptions
		ops  []string
		typ  string
	}{
		{"int8", []int{8, 3}, []Activation{ReLU, Tanh, ReLU}, QuantOptions{Mode: FullInteger, IO: IOInt8}, []string{"FULLY_CONNECTED version 4", "TANH version 2", "RESHAPE version 1"}, "int8"},
		{"uint8", []int{24}, []Activation{Tanh, Tanh, Sigmoid}, QuantOptions{Mode: FullInteger, IO: IOUInt8}, []string{"QUANTIZE version 1", "LOGISTIC version 2"}, "uint8"},
		{"float-ends", []int{3, 8}, []Activation{ReLU, Linear, Tanh}, QuantOptions{Mode: FullInteger, IO: IOFloat32}, []string{"QUANTIZE version 1", "DEQUANTIZE version 2"}, "float32"},
		{"dynamic-range", []int{8, 3}, []Activation{ReLU, Tanh, ReLU}, QuantOptions{Mode: DynamicRange}, []string{"FULLY_CONNECTED version 3"}, "float32"},
	}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			net := denseQAE(t, c.in, c.acts, uint64(20+ci))
			is := size(c.in)
			c.opts.Calibration = randomInput(uint64(40+ci), 64*is)
			if c.opts.Mode == DynamicRange {
				c.opts.Calibration = nil
			}
			q, err := Quantize(net, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			model, err := q.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			info, err := inference.Inspect(model)
			if err != nil {
				t.Fatal(err)
			}
			var ops []string
			for _, op := range info.Operators {
				ops = append(ops, op.String())
				if !op.Supported {
					t.Errorf("%s not supported", op)
				}
			}
			for _, want := range c.ops {
				if !strings.Contains(strings.Join(ops, ", "), want) {
					t.Errorf("operators %v, want %s", ops, want)
				}
			}
			if info.Inputs[0].Type != c.typ || info.Outputs[0].Type != c.typ {
				t.Errorf("input %s output %s, want %s", info.Inputs[0], info.Outputs[0], c.typ)
			}
			// Windows a little wider than the calibration's, so that some
			// values clamp.
			x := randomInput(uint64(60+ci), 33*is)
			for i := range x {
				x[i] *= 1.3
			}
			s, got := runtimeOutputs(t, model, x, is, is)
			want := make([]float64, len(got))
			if err := q.Forward(x, want); err != nil {
				t.Fatal(err)
			}
			tol := 1e-4
			switch {
			case c.opts.Mode == FullInteger && c.opts.IO == IOFloat32:
				// The runtime's own QUANTIZE of the float input multiplies
				// by 1/scale on arm64 (NEON) where the reference divides:
				// an input one step off moves outputs by a few steps.
				tol = 3.01 * float64(q.OutputQuant().Scale)
			case c.opts.Mode == FullInteger:
				tol = 1.01 * float64(q.OutputQuant().Scale)
			}
			bad, exact := 0, 0
			for i := range got {
				d := math.Abs(float64(got[i]) - want[i])
				if d == 0 {
					exact++
				}
				if d > tol*(1+math.Abs(want[i])*boolf(c.opts.Mode == DynamicRange)) {
					if bad < 5 {
						t.Errorf("value %d: TFLite %v, reference %v", i, got[i], want[i])
					}
					bad++
				}
			}
			t.Logf("%d of %d values bit-exact; clamped %d", exact, len(got), s.Clamped())
			if c.opts.IO != IOFloat32 && c.opts.Mode == FullInteger && s.Clamped() == 0 {
				t.Errorf("no input value was clamped, want some (inputs wider than the calibration)")
			}
			// The quantized model stays close to the float one.
			fl := make([]float64, len(got))
			if err := net.Forward(x, fl); err != nil {
				t.Fatal(err)
			}
			if e := rmsDiff(fl, got) / rmsOf(fl); e > 0.2 {
				t.Errorf("relative RMS error against the float network %.3f, want ≤ 0.2", e)
			}
		})
	}
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func rmsDiff(a []float64, b []float32) float64 {
	s := 0.0
	for i := range a {
		d := a[i] - float64(b[i])
		s += d * d
	}
	return math.Sqrt(s / float64(len(a)))
}

// TestRuntimeRefusesNewerOperatorVersion loads a dynamic-range model with
// per-channel dense weights (FULLY_CONNECTED version 12, as recent
// TensorFlow converters write): the 2.9 runtime lacks it, and the error
// says so.
func TestRuntimeRefusesNewerOperatorVersion(t *testing.T) {
	net := denseQAE(t, []int{8, 3}, []Activation{ReLU, Tanh, ReLU}, 7)
	q, err := Quantize(net, QuantOptions{Mode: DynamicRange, PerChannel: true})
	if err != nil {
		t.Fatal(err)
	}
	model, err := q.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	_, err = inference.Load(model, inference.Options{Workers: 1})
	if err == nil {
		t.Fatal("loaded a model with FULLY_CONNECTED version 12")
	}
	if !errors.Is(err, inference.ErrUnsupportedOp) || !errors.Is(err, inference.ErrInvalidModel) {
		t.Errorf("error %v does not wrap ErrUnsupportedOp and ErrInvalidModel", err)
	}
	if !strings.Contains(err.Error(), "FULLY_CONNECTED version 12") || !strings.Contains(err.Error(), inference.Version()) {
		t.Errorf("error %q does not name FULLY_CONNECTED version 12 and the runtime version", err)
	}
}
