package inference

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/vigil-edge/vigil/models/nn"
)

func quantizedModel(t testing.TB) []byte {
	t.Helper()
	net := &nn.Network{Input: []int{6, 2}, Layers: []nn.Layer{
		&nn.Dense{Units: 4, Act: nn.Tanh}, &nn.Dense{Units: 12}, &nn.Reshape{Shape: []int{6, 2}}}}
	if err := net.Randomize(rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
	calib := make([]float32, 5*12)
	for i := range calib {
		calib[i] = float32(i%7) - 3
	}
	return quantizeInt8(t, net, calib)
}

// quantizeInt8 is the .tflite flatbuffer of net quantized to full integer
// (int8 input and output), calibrated on the windows in calib.
func quantizeInt8(t testing.TB, net *nn.Network, calib []float32) []byte {
	t.Helper()
	q, err := nn.Quantize(net, nn.QuantOptions{Mode: nn.FullInteger, IO: nn.IOInt8, Calibration: calib})
	if err != nil {
		t.Fatal(err)
	}
	b, err := q.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDescribeQuantizedModel(t *testing.T) {
	info, err := Describe(quantizedModel(t))
	if err != nil {
		t.Fatal(err)
	}
	in, out := info.Inputs[0], info.Outputs[0]
	if in.Type != "int8" || !in.Quantized() || len(in.Shape) != 3 || in.Shape[1] != 6 || in.Shape[2] != 2 {
		t.Errorf("input %s, want int8 [1 6 2] with a scale", in)
	}
	if out.Type != "int8" || !out.Quantized() {
		t.Errorf("output %s, want int8 with a scale", out)
	}
	// 12×4 + 4×12 int8 weights, 4 + 12 int32 biases, the flatten shape
	// [-1 12] and the output shape [-1 6 2].
	if want := 48 + 48 + 4 + 12 + 2 + 3; info.Params != want {
		t.Errorf("params %d, want %d", info.Params, want)
	}
	names := map[string]int{}
	for _, op := range info.Operators {
		names[op.Name] = op.Version
	}
	if names["FULLY_CONNECTED"] != 4 || names["TANH"] != 2 {
		t.Errorf("operators %v, want FULLY_CONNECTED 4 and TANH 2", info.Operators)
	}
}

// FuzzDescribe feeds arbitrary bytes to the flatbuffer reader: it must
// never panic, and every error wraps ErrInvalidModel.
func FuzzDescribe(f *testing.F) {
	b := quantizedModel(f)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte("\x10\x00\x00\x00TFL3\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := Describe(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("error %v does not wrap ErrInvalidModel", err)
			}
			return
		}
		for _, op := range info.Operators {
			_ = op.String()
		}
	})
}
