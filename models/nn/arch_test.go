package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// archCase is one architecture of the equivalence tests.
type archCase struct {
	name string
	net  func() *Network
}

// archCases covers what the trainer builds and the odd corners: every
// activation in a dense autoencoder, convolutional autoencoders with same
// and valid padding, strides, upsampling, cropping back to odd windows,
// mixed conv/dense graphs, a one-step window and a score-style output.
func archCases() []archCase {
	denseAE := func(act Activation) func() *Network {
		return func() *Network {
			return &Network{Input: []int{16, 3}, Layers: []Layer{
				&Dense{Units: 12, Act: act},
				&Dense{Units: 4, Act: act},
				&Dense{Units: 12, Act: act},
				&Dense{Units: 48, Act: Linear},
				&Reshape{Shape: []int{16, 3}},
			}}
		}
	}
	return []archCase{
		{"dense-linear", denseAE(Linear)},
		{"dense-relu", denseAE(ReLU)},
		{"dense-tanh", denseAE(Tanh)},
		{"dense-sigmoid", denseAE(Sigmoid)},
		{"dense-sigmoid-output", func() *Network {
			return &Network{Input: []int{9, 2}, Layers: []Layer{
				&Dense{Units: 5, Act: Tanh},
				&Dense{Units: 18, Act: Sigmoid},
				&Reshape{Shape: []int{9, 2}},
			}}
		}},
		{"conv-ae", func() *Network {
			return &Network{Input: []int{32, 4}, Layers: []Layer{
				&Conv1D{Filters: 8, Kernel: 5, Stride: 2, Padding: Same, Act: ReLU},
				&Conv1D{Filters: 4, Kernel: 3, Stride: 2, Padding: Same, Act: Tanh},
				&Upsample1D{Factor: 2},
				&Conv1D{Filters: 8, Kernel: 3, Stride: 1, Padding: Same, Act: ReLU},
				&Upsample1D{Factor: 2},
				&Conv1D{Filters: 4, Kernel: 5, Stride: 1, Padding: Same, Act: Linear},
			}}
		}},
		{"conv-ae-odd-window", func() *Network {
			return &Network{Input: []int{15, 2}, Layers: []Layer{
				&Conv1D{Filters: 6, Kernel: 4, Stride: 2, Padding: Same, Act: ReLU},    // 8
				&Conv1D{Filters: 3, Kernel: 3, Stride: 2, Padding: Same, Act: Sigmoid}, // 4
				&Upsample1D{Factor: 2}, // 8
				&Conv1D{Filters: 6, Kernel: 3, Stride: 1, Padding: Same, Act: Tanh},
				&Upsample1D{Factor: 2}, // 16
				&Crop1D{Begin: 0, Length: 15},
				&Conv1D{Filters: 2, Kernel: 3, Stride: 1, Padding: Same, Act: Linear},
			}}
		}},
		{"conv-valid-dense-bottleneck", func() *Network {
			return &Network{Input: []int{21, 5}, Layers: []Layer{
				&Conv1D{Filters: 4, Kernel: 4, Stride: 2, Padding: Valid, Act: ReLU}, // 9
				&Dense{Units: 6, Act: Sigmoid},
				&Dense{Units: 27, Act: ReLU},
				&Reshape{Shape: []int{9, 3}},
				&Upsample1D{Factor: 3}, // 27
				&Crop1D{Begin: 3, Length: 21},
				&Conv1D{Filters: 5, Kernel: 1, Stride: 1, Padding: Valid, Act: Linear},
			}}
		}},
		{"conv-stride3-even-kernel", func() *Network {
			return &Network{Input: []int{13, 3}, Layers: []Layer{
				&Conv1D{Filters: 5, Kernel: 6, Stride: 3, Padding: Same, Act: Tanh}, // 5
				&Upsample1D{Factor: 3}, // 15
				&Crop1D{Begin: 1, Length: 13},
				&Conv1D{Filters: 3, Kernel: 2, Stride: 1, Padding: Same, Act: Linear},
			}}
		}},
		{"single-step", func() *Network {
			return &Network{Input: []int{1, 7}, Layers: []Layer{
				&Dense{Units: 3, Act: Tanh},
				&Dense{Units: 7, Act: Linear},
				&Reshape{Shape: []int{1, 7}},
			}}
		}},
		{"score-output", func() *Network {
			return &Network{Input: []int{10}, Layers: []Layer{
				&Dense{Units: 6, Act: ReLU},
				&Dense{Units: 1, Act: Sigmoid},
			}}
		}},
		{"reshape-only", func() *Network {
			return &Network{Input: []int{4, 3}, Layers: []Layer{&Reshape{Shape: []int{12}}}}
		}},
	}
}

// randomNet builds c's network with weights from seed.
func randomNet(t testing.TB, c archCase, seed uint64) *Network {
	t.Helper()
	n := c.net()
	if err := n.Randomize(rand.New(rand.NewPCG(seed, 1))); err != nil {
		t.Fatalf("randomize: %v", err)
	}
	if err := n.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	return n
}

func randomInput(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 2))
	in := make([]float32, n)
	for i := range in {
		in[i] = float32(r.NormFloat64())
	}
	return in
}

// closeEnough is the equivalence criterion between TFLite's float32 result
// got and the float64 reference want: a relative error of 1e-5, with an
// absolute floor of 1e-5 times the output's RMS for values that sum to
// nearly zero (float32 accumulation error scales with the terms' size, not
// with their sum).
func closeEnough(got float32, want, rms float64) bool {
	return math.Abs(float64(got)-want) <= 1e-5*math.Abs(want)+1e-5*rms
}

func rmsOf(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s / float64(len(v)))
}
