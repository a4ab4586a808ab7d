//go:build cgo

package nn

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/inference"
)

// TestRuntimeMatchesReference runs every architecture through the TFLite
// runtime and the Go reference pass, at batch 1 and larger batches of the
// same loaded model, and requires the outputs to agree (see closeEnough).
func TestRuntimeMatchesReference(t *testing.T) {
	for i, c := range archCases() {
		t.Run(c.name, func(t *testing.T) {
			n := randomNet(t, c, uint64(100+i))
			model, err := n.Marshal()
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			out, _ := n.Output()
			want := inference.Spec{Input: n.Input, Output: out}
			s, err := inference.Load(model, inference.Options{Workers: 1, Expect: &want})
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			defer s.Close()
			is, os := size(n.Input), size(out)
			for _, batch := range []int{1, 7, 3, 64} {
				in := randomInput(uint64(batch*1000+i), batch*is)
				ref := make([]float64, batch*os)
				if err := n.Forward(in, ref); err != nil {
					t.Fatalf("forward: %v", err)
				}
				got := make([]float32, batch*os)
				if err := s.Score(context.Background(), in, got); err != nil {
					t.Fatalf("batch %d: score: %v", batch, err)
				}
				rms := rmsOf(ref)
				bad, worst := 0, 0.0
				for j := range ref {
					worst = max(worst, math.Abs(float64(got[j])-ref[j])/(math.Abs(ref[j])+rms))
					if !closeEnough(got[j], ref[j], rms) {
						if bad < 5 {
							t.Errorf("batch %d window %d value %d: TFLite %g, reference %g", batch, j/os, j%os, got[j], ref[j])
						}
						bad++
					}
				}
				if bad > 0 {
					t.Errorf("batch %d: %d of %d values differ", batch, bad, len(ref))
				}
				t.Logf("batch %d: worst error %.2g of |want|+rms", batch, worst)
			}
		})
	}
}

// TestRuntimeFusedTanhUnsupported documents why Marshal writes TANH as an
// operator of its own: in the 2.9 runtime, FULLY_CONNECTED refuses a fused
// TANH when tensors are allocated and CONV_2D silently computes it as NONE.
func TestRuntimeFusedTanhUnsupported(t *testing.T) {
	probe := func(code int32, inShape, wShape, outShape []int, opts options) (float32, error) {
		w := &writer{buffers: [][]byte{nil}, codes: map[int32]int{}}
		in := w.tensor("input", inShape)
		wt := w.constF32("weights", wShape, []float32{1, 1})
		b := w.constF32("bias", []int{1}, []float32{0})
		out := w.tensor("output", outShape)
		w.op(code, 1, []int32{in, wt, b}, []int32{out}, opts)
		s, err := inference.Load(w.finish(in, out, "fused tanh probe"), inference.Options{Workers: 1})
		if err != nil {
			return 0, err
		}
		defer s.Close()
		got := make([]float32, 1)
		err = s.Score(context.Background(), []float32{1, 2}, got)
		return got[0], err
	}
	const fusedTanh = 4 // ActivationFunctionType TANH
	if _, err := probe(opFullyConnected, []int{2}, []int{1, 2}, []int{1}, fcOptions{act: fusedTanh}); err == nil ||
		!strings.Contains(err.Error(), "FULLY_CONNECTED") {
		t.Errorf("FULLY_CONNECTED with fused TANH: err = %v, want the runtime to refuse it", err)
	}
	got, err := probe(opConv2D, []int{1, 1, 2}, []int{1, 1, 1, 2}, []int{1, 1, 1},
		convOptions{strideW: 1, strideH: 1, act: fusedTanh})
	if err != nil {
		t.Fatalf("CONV_2D with fused TANH: %v", err)
	}
	if got != 3 {
		t.Errorf("CONV_2D(1+2) with fused TANH = %g; the runtime now applies it (tanh(3) = %g), fuse() could use it", got, math.Tanh(3))
	}
}
