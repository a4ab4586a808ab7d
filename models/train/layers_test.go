package train

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/vigil-edge/vigil/models/nn"
)

// TestGradients compares backprop with central finite differences of
// L = ½·Σ(y - target)² for every parameter and input of small networks
// covering each layer kind, activation, stride, padding and crop.
func TestGradients(t *testing.T) {
	tests := []struct {
		name  string
		shape []int
		build func(r *rand.Rand) []layer
	}{
		{"dense each activation", []int{3, 2}, func(r *rand.Rand) []layer {
			return []layer{
				newDense(r, 6, 5, nn.Tanh),
				newDense(r, 5, 4, nn.Sigmoid),
				newDense(r, 4, 4, nn.Linear),
				newDense(r, 4, 6, nn.ReLU),
				&reshape{shape: []int{3, 2}, n: 6},
			}
		}},
		{"conv same stride 2", []int{7, 2}, func(r *rand.Rand) []layer {
			return []layer{
				newConv1D(r, 7, 2, 3, 4, 2, nn.Same, nn.Tanh), // 4 steps
				newConv1D(r, 4, 3, 2, 3, 1, nn.Same, nn.Sigmoid),
				&upsample{steps: 4, ch: 2, factor: 2},
				&crop{steps: 8, ch: 2, begin: 1, length: 7},
				newConv1D(r, 7, 2, 2, 3, 1, nn.Same, nn.Linear),
			}
		}},
		{"conv valid stride 3 then dense", []int{10, 3}, func(r *rand.Rand) []layer {
			return []layer{
				newConv1D(r, 10, 3, 2, 4, 3, nn.Valid, nn.ReLU), // 3 steps
				newDense(r, 6, 30, nn.Linear),
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(i), 9))
			net := newNetwork(tt.shape, tt.build(r))
			// Keep ReLU inputs away from 0, where the derivative jumps.
			for _, p := range net.params {
				for j := range p.w {
					p.w[j] += 0.05 * math.Copysign(1, p.w[j])
				}
			}
			x := make([]float64, len(net.acts[0]))
			for j := range x {
				x[j] = r.NormFloat64()
			}
			out := len(net.acts[len(net.layers)])
			target := make([]float64, out)
			for j := range target {
				target[j] = r.NormFloat64()
			}
			loss := func() float64 {
				y := net.forward(x)
				s := 0.0
				for j := range y {
					s += 0.5 * (y[j] - target[j]) * (y[j] - target[j])
				}
				return s
			}
			net.zeroGrad()
			y := net.forward(x)
			for j := range y {
				net.grads[len(net.layers)][j] = y[j] - target[j]
			}
			net.backward()
			check := func(what string, v []float64, j int, analytic float64) {
				const h = 1e-6
				orig := v[j]
				v[j] = orig + h
				up := loss()
				v[j] = orig - h
				down := loss()
				v[j] = orig
				numeric := (up - down) / (2 * h)
				if math.Abs(numeric-analytic) > 1e-6*max(1, math.Abs(numeric)) {
					t.Errorf("%s[%d]: backprop %.9g, finite difference %.9g", what, j, analytic, numeric)
				}
			}
			for pi, p := range net.params {
				for j := range p.w {
					check("param "+string(rune('A'+pi)), p.w, j, p.g[j])
				}
			}
			// dL/dx: rerun backward to get the first layer's input gradient.
			dx := make([]float64, len(x))
			net.forward(x)
			net.layers[0].backward(net.acts[0], net.acts[1], net.grads[1], dx)
			for j := range x {
				check("input", x, j, dx[j])
			}
		})
	}
}

func TestAdamFirstStep(t *testing.T) {
	// With bias correction, Adam's first step moves every weight by almost
	// exactly lr against the sign of its gradient.
	p := newParam(3)
	copy(p.w, []float64{1, 2, 3})
	copy(p.g, []float64{0.5, -2, 1e-3})
	a := &adam{lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8}
	a.step([]*param{p}, 1)
	want := []float64{0.9, 2.1, 2.9}
	for i := range want {
		if math.Abs(p.w[i]-want[i]) > 1e-5 {
			t.Errorf("w[%d] = %v, want %v", i, p.w[i], want[i])
		}
	}
}

func TestExportRoundsWeights(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	net := newNetwork([]int{4}, []layer{newDense(r, 4, 2, nn.Linear)})
	net.params[0].w[0] = 0.1 // not a float32
	out := net.export("d")
	if net.params[0].w[0] != float64(float32(0.1)) {
		t.Errorf("trainer weight %v, want it rounded to float32", net.params[0].w[0])
	}
	if got := out.Layers[0].(*nn.Dense).Weights[0]; got != float32(0.1) {
		t.Errorf("exported weight %v", got)
	}
	if err := out.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestTrainerForwardMatchesReference: the trainer's own forward pass and
// nn's reference pass agree on the exported network.
func TestTrainerForwardMatchesReference(t *testing.T) {
	for _, arch := range []Arch{Dense, Conv} {
		o := DefaultOptions()
		o.Arch, o.Window = arch, 13
		net := build(rand.New(rand.NewPCG(5, 5)), o, 3)
		ref := net.export("x")
		r := rand.New(rand.NewPCG(6, 6))
		in := make([]float32, 13*3)
		x := make([]float64, len(in))
		for i := range in {
			in[i] = float32(r.NormFloat64())
			x[i] = float64(in[i])
		}
		want := make([]float64, len(in))
		if err := ref.Forward(in, want); err != nil {
			t.Fatalf("%s: %v (%s)", arch, err, ref)
		}
		got := net.forward(x)
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-12*max(1, math.Abs(want[i])) {
				t.Fatalf("%s: value %d: trainer %v, reference %v", arch, i, got[i], want[i])
			}
		}
	}
}
