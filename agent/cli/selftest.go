package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models/nn"
)

// Selftest returns `vigil selftest` for the given vigil version: it builds
// a small 1-D convolutional autoencoder and a dense one in memory with the
// project's TFLite writer, runs a batch through the linked TFLite runtime,
// and compares every output with the pure-Go reference.
func Selftest(version string) func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return selftest(ctx, version, args, stdout, stderr)
	}
}

func selftest(ctx context.Context, version string, args []string, stdout, stderr io.Writer) error {
	fs := NewFlags("selftest", stderr)
	tol := fs.Float64("tolerance", 1e-5, "largest relative difference allowed between TFLite and the Go reference")
	batch := fs.Int("batch", 16, "windows per Invoke")
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "vigil %s selftest on %s/%s, TensorFlow Lite %s\n", version, runtime.GOOS, runtime.GOARCH, inference.Version())
	nets := []struct {
		name string
		net  *nn.Network
	}{
		{"dense autoencoder 60x8", &nn.Network{Input: []int{60, 8}, Layers: []nn.Layer{
			&nn.Dense{Units: 32, Act: nn.ReLU},
			&nn.Dense{Units: 8, Act: nn.Tanh},
			&nn.Dense{Units: 32, Act: nn.ReLU},
			&nn.Dense{Units: 480, Act: nn.Linear},
			&nn.Reshape{Shape: []int{60, 8}},
		}}},
		{"conv autoencoder 60x8", &nn.Network{Input: []int{60, 8}, Layers: []nn.Layer{
			&nn.Conv1D{Filters: 16, Kernel: 7, Stride: 2, Padding: nn.Same, Act: nn.ReLU},
			&nn.Conv1D{Filters: 8, Kernel: 7, Stride: 2, Padding: nn.Same, Act: nn.ReLU},
			&nn.Upsample1D{Factor: 2},
			&nn.Conv1D{Filters: 16, Kernel: 7, Stride: 1, Padding: nn.Same, Act: nn.ReLU},
			&nn.Upsample1D{Factor: 2},
			&nn.Conv1D{Filters: 8, Kernel: 7, Stride: 1, Padding: nn.Same, Act: nn.Linear},
		}}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range nets {
		if err := selftestOne(ctx, stdout, c.name, c.net, rng, *batch, *tol); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	fmt.Fprintln(stdout, "selftest passed")
	return nil
}

func selftestOne(ctx context.Context, w io.Writer, name string, net *nn.Network, rng *rand.Rand, batch int, tol float64) error {
	if err := net.Randomize(rng); err != nil {
		return err
	}
	model, err := net.Marshal()
	if err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	out, err := net.Output()
	if err != nil {
		return err
	}
	s, err := inference.Load(model, inference.Options{Workers: 1, Expect: &inference.Spec{Input: net.Input, Output: out}})
	if err != nil {
		return err
	}
	defer s.Close()
	spec := s.Spec()
	in := make([]float32, batch*spec.InputSize())
	for i := range in {
		in[i] = float32(rng.NormFloat64())
	}
	got := make([]float32, batch*spec.OutputSize())
	if err := s.Score(ctx, in, got); err != nil {
		return err
	}
	want := make([]float64, len(got))
	if err := net.Forward(in, want); err != nil {
		return fmt.Errorf("reference forward pass: %w", err)
	}
	var worst float64
	for i := range got {
		d := math.Abs(float64(got[i])-want[i]) / math.Max(1, math.Abs(want[i]))
		worst = math.Max(worst, d)
	}
	const runs = 50
	t0 := time.Now()
	for range runs {
		if err := s.Score(ctx, in, got); err != nil {
			return err
		}
	}
	per := time.Since(t0) / time.Duration(runs*batch)
	fmt.Fprintf(w, "  %-24s %6d bytes, %d params, batch %d: max relative difference %.2e, %v per window\n",
		name, len(model), net.Params(), batch, worst, per)
	if worst > tol || math.IsNaN(worst) {
		return fmt.Errorf("TFLite and the Go reference differ by %.3g (tolerance %.3g)", worst, tol)
	}
	return nil
}
