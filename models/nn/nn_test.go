package nn

import (
	"bytes"
	"encoding/binary"
	"flag"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/vigil-edge/vigil/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestValidate(t *testing.T) {
	dense := func(units, in int) *Dense {
		return &Dense{Units: units, Weights: make([]float32, units*in), Bias: make([]float32, units)}
	}
	conv := func(f, k, s, ch int, p Padding) *Conv1D {
		return &Conv1D{Filters: f, Kernel: k, Stride: s, Padding: p,
			Weights: make([]float32, f*k*ch), Bias: make([]float32, f)}
	}
	tests := []struct {
		name string
		net  Network
		want string // substring of the error; "" for valid
	}{
		{"dense ok", Network{Input: []int{4, 2}, Layers: []Layer{dense(3, 8)}}, ""},
		{"no input", Network{Layers: []Layer{dense(3, 8)}}, "no input shape"},
		{"zero input dim", Network{Input: []int{4, 0}, Layers: []Layer{dense(3, 0)}}, "non-positive"},
		{"no layers", Network{Input: []int{4}}, "no layers"},
		{"nil layer", Network{Input: []int{4}, Layers: []Layer{nil}}, "layer 0 is nil"},
		{"typed nil layer", Network{Input: []int{4}, Layers: []Layer{(*Dense)(nil)}}, "layer 0 is nil"},
		{"dense weights", Network{Input: []int{4}, Layers: []Layer{&Dense{Units: 2, Weights: make([]float32, 7), Bias: make([]float32, 2)}}},
			"layer 0 (dense): Weights has 7 values, want Units×inputs = 2×4 = 8"},
		{"dense bias", Network{Input: []int{4}, Layers: []Layer{&Dense{Units: 2, Weights: make([]float32, 8)}}},
			"Bias has 0 values, want Units = 2"},
		{"dense units", Network{Input: []int{4}, Layers: []Layer{&Dense{}}}, "Units is 0"},
		{"dense activation", Network{Input: []int{4}, Layers: []Layer{&Dense{Units: 1, Act: 9, Weights: make([]float32, 4), Bias: make([]float32, 1)}}},
			"unknown activation 9"},
		{"conv ok valid", Network{Input: []int{10, 3}, Layers: []Layer{conv(2, 3, 2, 3, Valid)}}, ""},
		{"conv rank", Network{Input: []int{10}, Layers: []Layer{conv(2, 3, 1, 1, Same)}}, "input shape [10], want [steps, channels]"},
		{"conv stride", Network{Input: []int{10, 3}, Layers: []Layer{conv(2, 3, 0, 3, Same)}}, "Stride is 0"},
		{"conv kernel too long", Network{Input: []int{2, 3}, Layers: []Layer{conv(2, 3, 1, 3, Valid)}}, "Kernel 3 is longer than the 2 input steps"},
		{"conv weights", Network{Input: []int{10, 4}, Layers: []Layer{conv(2, 3, 1, 3, Same)}}, "Weights has 18 values, want Filters×Kernel×channels = 2×3×4 = 24"},
		{"conv padding", Network{Input: []int{10, 3}, Layers: []Layer{conv(2, 3, 1, 3, 7)}}, "unknown padding 7"},
		{"upsample factor", Network{Input: []int{10, 3}, Layers: []Layer{&Upsample1D{}}}, "Factor is 0"},
		{"crop outside", Network{Input: []int{10, 3}, Layers: []Layer{&Crop1D{Begin: 4, Length: 7}}}, "steps [4, 11) are not inside the input's 10 steps"},
		{"reshape size", Network{Input: []int{10, 3}, Layers: []Layer{&Reshape{Shape: []int{31}}}}, "Shape [31] holds 31 values, input [10 3] holds 30"},
		{"second layer named", Network{Input: []int{4}, Layers: []Layer{dense(2, 4), dense(2, 4)}}, "layer 1 (dense)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.net.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.want)
			}
			if _, err := tt.net.Marshal(); err == nil {
				t.Error("Marshal accepted an invalid network")
			}
		})
	}
}

func TestConvGeometry(t *testing.T) {
	// Against TFLite's ComputeOutSize and ComputePaddingHeightWidth.
	tests := []struct {
		steps, kernel, stride int
		p                     Padding
		out, before           int
	}{
		{10, 3, 1, Same, 10, 1},
		{10, 4, 1, Same, 10, 1}, // total 3: 1 before, 2 after
		{10, 3, 2, Same, 5, 0},  // total (5-1)*2+3-10 = 1
		{15, 4, 2, Same, 8, 1},  // total 3
		{13, 6, 3, Same, 5, 2},  // total 5: 2 before, 3 after
		{7, 1, 3, Same, 3, 0},
		{10, 3, 1, Valid, 8, 0},
		{21, 4, 2, Valid, 9, 0},
		{5, 5, 2, Valid, 1, 0},
	}
	for _, tt := range tests {
		if got := ConvSteps(tt.steps, tt.kernel, tt.stride, tt.p); got != tt.out {
			t.Errorf("ConvSteps(%d,%d,%d,%s) = %d, want %d", tt.steps, tt.kernel, tt.stride, tt.p, got, tt.out)
		}
		if got := ConvPadBefore(tt.steps, tt.kernel, tt.stride, tt.p); got != tt.before {
			t.Errorf("ConvPadBefore(%d,%d,%d,%s) = %d, want %d", tt.steps, tt.kernel, tt.stride, tt.p, got, tt.before)
		}
	}
}

// TestForwardByHand checks the reference pass on values computed by hand.
func TestForwardByHand(t *testing.T) {
	tests := []struct {
		name string
		net  Network
		in   []float32
		want []float64
	}{
		{"dense linear", Network{Input: []int{2}, Layers: []Layer{
			&Dense{Units: 2, Weights: []float32{1, 2, -1, 0.5}, Bias: []float32{0.5, 1}},
		}}, []float32{3, 4}, []float64{1*3 + 2*4 + 0.5, -3 + 2 + 1}},
		{"dense relu", Network{Input: []int{2}, Layers: []Layer{
			&Dense{Units: 2, Act: ReLU, Weights: []float32{1, 2, -1, -0.5}, Bias: []float32{0, 0}},
		}}, []float32{3, 4}, []float64{11, 0}},
		{"dense sigmoid tanh", Network{Input: []int{1}, Layers: []Layer{
			&Dense{Units: 1, Act: Sigmoid, Weights: []float32{2}, Bias: []float32{0}},
			&Dense{Units: 1, Act: Tanh, Weights: []float32{1}, Bias: []float32{-0.5}},
		}}, []float32{0}, []float64{math.Tanh(0)}},
		{"conv same pads before and after", Network{Input: []int{4, 1}, Layers: []Layer{
			// kernel [1 10 100], total padding 2: one zero each side.
			&Conv1D{Filters: 1, Kernel: 3, Stride: 1, Weights: []float32{1, 10, 100}, Bias: []float32{0}},
		}}, []float32{1, 2, 3, 4}, []float64{0*1 + 1*10 + 2*100, 1 + 20 + 300, 2 + 30 + 400, 3 + 40 + 0}},
		{"conv stride 2 two channels", Network{Input: []int{3, 2}, Layers: []Layer{
			// out = ceil(3/2) = 2, total padding (2-1)*2+2-3 = 1: none before.
			&Conv1D{Filters: 1, Kernel: 2, Stride: 2, Weights: []float32{1, 0, 0, 1}, Bias: []float32{1}},
		}}, []float32{1, 2, 3, 4, 5, 6}, []float64{1 + 4 + 1, 5 + 0 + 1}},
		{"upsample crop", Network{Input: []int{2, 2}, Layers: []Layer{
			&Upsample1D{Factor: 3}, &Crop1D{Begin: 2, Length: 3},
		}}, []float32{1, 2, 3, 4}, []float64{1, 2, 3, 4, 3, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make([]float64, len(tt.want))
			if err := tt.net.Forward(tt.in, got); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if math.Abs(got[i]-tt.want[i]) > 1e-12 {
					t.Fatalf("Forward = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestForwardBatchIsPerWindow(t *testing.T) {
	for i, c := range archCases() {
		n := randomNet(t, c, uint64(i))
		is := size(n.Input)
		out, _ := n.Output()
		os := size(out)
		const batch = 5
		in := randomInput(uint64(i), batch*is)
		all := make([]float64, batch*os)
		if err := n.Forward(in, all); err != nil {
			t.Fatal(err)
		}
		for w := range batch {
			one := make([]float64, os)
			if err := n.Forward(in[w*is:(w+1)*is], one); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(one, all[w*os:(w+1)*os]) {
				t.Fatalf("%s: window %d differs between batch and single pass", c.name, w)
			}
		}
	}
}

func TestForwardBufferErrors(t *testing.T) {
	n := randomNet(t, archCases()[0], 1)
	if err := n.Forward(make([]float32, 47), make([]float64, 48)); err == nil {
		t.Error("Forward accepted 47 input values for a window of 48")
	}
	if err := n.Forward(nil, nil); err == nil {
		t.Error("Forward accepted an empty batch")
	}
	if err := n.Forward(make([]float32, 96), make([]float64, 48)); err == nil {
		t.Error("Forward accepted an output buffer for 1 window with 2 windows in")
	}
}

// fbTable reads a flatbuffer table the way TFLite does: field i lives at
// vtable slot 4+2i.
type fbTable struct{ flatbuffers.Table }

func rootTable(buf []byte) fbTable {
	return fbTable{flatbuffers.Table{Bytes: buf, Pos: flatbuffers.GetUOffsetT(buf)}}
}

func (t fbTable) field(i int) flatbuffers.UOffsetT {
	return flatbuffers.UOffsetT(t.Offset(flatbuffers.VOffsetT(4 + 2*i)))
}

func (t fbTable) has(i int) bool { return t.field(i) != 0 }

func (t fbTable) u32(i int, def uint32) uint32 {
	if o := t.field(i); o != 0 {
		return t.GetUint32(o + t.Pos)
	}
	return def
}

func (t fbTable) i32(i int, def int32) int32 {
	if o := t.field(i); o != 0 {
		return t.GetInt32(o + t.Pos)
	}
	return def
}

func (t fbTable) i8(i int, def int8) int8 {
	if o := t.field(i); o != 0 {
		return t.GetInt8(o + t.Pos)
	}
	return def
}

func (t fbTable) str(i int) string {
	if o := t.field(i); o != 0 {
		return t.String(o + t.Pos)
	}
	return ""
}

// vector reads vector field i, whose elements are 4 bytes each, with at
// (given an element's position); nil when the field is absent.
func vector[T any](t fbTable, i int, at func(pos flatbuffers.UOffsetT) T) []T {
	o := t.field(i)
	if o == 0 {
		return nil
	}
	start := t.Vector(o)
	out := make([]T, t.VectorLen(o))
	for j := range out {
		out[j] = at(start + flatbuffers.UOffsetT(4*j))
	}
	return out
}

// tables reads a vector of tables.
func (t fbTable) tables(i int) []fbTable {
	return vector(t, i, func(pos flatbuffers.UOffsetT) fbTable {
		return fbTable{flatbuffers.Table{Bytes: t.Bytes, Pos: t.Indirect(pos)}}
	})
}

// ints reads a vector of int32.
func (t fbTable) ints(i int) []int32 { return vector(t, i, t.GetInt32) }

// bytesAt returns a [ubyte] field and its offset in the buffer.
func (t fbTable) bytesAt(i int) ([]byte, int) {
	o := t.field(i)
	if o == 0 {
		return nil, 0
	}
	start := t.Vector(o)
	return t.ByteVector(o + t.Pos), int(start)
}

// TestMarshalStructure reads the written flatbuffer back field by field and
// checks what the schema and the batch contract require.
func TestMarshalStructure(t *testing.T) {
	for i, c := range archCases() {
		t.Run(c.name, func(t *testing.T) {
			n := randomNet(t, c, uint64(i))
			n.Description = "test " + c.name
			buf, err := n.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[4:8]) != "TFL3" {
				t.Fatalf("file identifier %q, want TFL3", buf[4:8])
			}
			m := rootTable(buf)
			if v := m.u32(0, 0); v != 3 {
				t.Errorf("Model.version = %d, want 3", v)
			}
			if d := m.str(3); d != n.Description {
				t.Errorf("Model.description = %q, want %q", d, n.Description)
			}
			codes := m.tables(1)
			for j, oc := range codes {
				dep, ext := oc.i8(0, 0), oc.i32(3, 0)
				if int32(dep) != ext || ext == 0 && oc.has(0) {
					t.Errorf("operator code %d: deprecated_builtin_code %d, builtin_code %d", j, dep, ext)
				}
				if !oc.has(3) || !oc.has(0) {
					t.Errorf("operator code %d: deprecated_builtin_code and builtin_code must both be set", j)
				}
				if v := oc.i32(2, 1); v < 1 {
					t.Errorf("operator code %d: version %d", j, v)
				}
			}
			buffers := m.tables(4)
			if len(buffers) == 0 || buffers[0].has(0) {
				t.Fatal("buffer 0 must exist and be empty")
			}
			sgs := m.tables(2)
			if len(sgs) != 1 {
				t.Fatalf("%d subgraphs, want 1", len(sgs))
			}
			sg := sgs[0]
			tensors := sg.tables(0)
			ins, outs := sg.ints(1), sg.ints(2)
			if len(ins) != 1 || len(outs) != 1 {
				t.Fatalf("subgraph inputs %v outputs %v, want one each", ins, outs)
			}
			out, _ := n.Output()
			for _, io := range []struct {
				idx   int32
				shape []int
			}{{ins[0], n.Input}, {outs[0], out}} {
				tt := tensors[io.idx]
				want := append([]int32{1}, toInt32(io.shape)...)
				if got := tt.ints(0); !slices.Equal(got, want) {
					t.Errorf("tensor %q shape %v, want %v", tt.str(3), got, want)
				}
				want[0] = -1
				if got := tt.ints(7); !slices.Equal(got, want) {
					t.Errorf("tensor %q shape_signature %v, want %v", tt.str(3), got, want)
				}
				if tt.i8(1, 0) != typeFloat32 || tt.u32(2, 0) != 0 {
					t.Errorf("tensor %q: type %d buffer %d, want float32 without data", tt.str(3), tt.i8(1, 0), tt.u32(2, 0))
				}
			}
			// Constants: aligned data, and every RESHAPE target with -1 first.
			for j, tt := range tensors {
				b := tt.u32(2, 0)
				if b == 0 {
					continue
				}
				data, at := buffers[b].bytesAt(0)
				if len(data) == 0 {
					t.Errorf("constant tensor %d (%q) has an empty buffer", j, tt.str(3))
				}
				if at%16 != 0 {
					t.Errorf("constant tensor %q data at offset %d, want 16-byte aligned", tt.str(3), at)
				}
				if strings.HasSuffix(tt.str(3), "/shape") && int32(binary.LittleEndian.Uint32(data)) != -1 {
					t.Errorf("reshape target %q does not start with -1", tt.str(3))
				}
			}
			ops := sg.tables(3)
			if len(ops) == 0 {
				t.Fatal("no operators")
			}
			for j, op := range ops {
				if idx := op.u32(0, 0); int(idx) >= len(codes) {
					t.Errorf("operator %d: opcode_index %d of %d codes", j, idx, len(codes))
				}
			}
			// The first layer's weights are stored exactly.
			for j, tt := range tensors {
				name := tt.str(3)
				var want []float32
				switch l := n.Layers[0].(type) {
				case *Dense:
					if name == "dense0/weights" {
						want = l.Weights
					}
				case *Conv1D:
					if name == "conv1d0/filter" {
						want = l.Weights
					}
				}
				if want == nil {
					continue
				}
				data, _ := buffers[tt.u32(2, 0)].bytesAt(0)
				for k, w := range want {
					if got := math.Float32frombits(binary.LittleEndian.Uint32(data[4*k:])); got != w {
						t.Fatalf("tensor %d %q value %d = %g, want %g", j, name, k, got, w)
					}
				}
			}
		})
	}
}

func toInt32(s []int) []int32 {
	out := make([]int32, len(s))
	for i, v := range s {
		out[i] = int32(v)
	}
	return out
}

func TestMarshalDeterministic(t *testing.T) {
	c := archCases()[6]
	a, err := randomNet(t, c, 3).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, err := randomNet(t, c, 3).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("the same network marshalled to different bytes")
	}
}

// TestMarshalGolden pins the encoding of a small conv autoencoder, so that a
// change to the writer shows up as a diff to review (go test -update).
func TestMarshalGolden(t *testing.T) {
	n := &Network{Input: []int{6, 2}, Description: "golden", Layers: []Layer{
		&Conv1D{Filters: 2, Kernel: 3, Stride: 2, Padding: Same, Act: ReLU},
		&Dense{Units: 2, Act: Tanh},
		&Dense{Units: 6, Act: Sigmoid},
		&Reshape{Shape: []int{3, 2}},
		&Upsample1D{Factor: 2},
		&Crop1D{Begin: 0, Length: 6},
		&Conv1D{Filters: 2, Kernel: 1, Stride: 1, Padding: Valid},
	}}
	for _, l := range n.Layers {
		switch l := l.(type) {
		case *Dense:
			l.Weights, l.Bias = ramp(l.Units*denseInputSize(n, l)), ramp(l.Units)
		case *Conv1D:
			l.Weights, l.Bias = ramp(l.Filters*l.Kernel*2), ramp(l.Filters)
		}
	}
	got, err := n.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "golden_conv.tflite")
	want := golden.Want(t, path, got, *update)
	if !bytes.Equal(got, want) {
		t.Fatalf("Marshal output (%d bytes) differs from %s (%d bytes); if the change is intended, run go test -update", len(got), path, len(want))
	}
}

// denseInputSize returns the input size of Dense layer l in n (which has no
// weights yet, so Shapes cannot be used).
func denseInputSize(n *Network, l *Dense) int {
	in := n.Input
	for _, x := range n.Layers {
		if x == l {
			return size(in)
		}
		switch x := x.(type) {
		case *Dense:
			in = []int{x.Units}
		case *Conv1D:
			in = []int{ConvSteps(in[0], x.Kernel, x.Stride, x.Padding), x.Filters}
		}
	}
	panic("layer not in network")
}

func ramp(n int) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(i%7-3) / 8
	}
	return w
}

func TestParseActivation(t *testing.T) {
	for _, a := range []Activation{Linear, ReLU, Tanh, Sigmoid} {
		got, err := ParseActivation(a.String())
		if err != nil || got != a {
			t.Errorf("ParseActivation(%q) = %v, %v", a.String(), got, err)
		}
	}
	if _, err := ParseActivation("gelu"); err == nil {
		t.Error("ParseActivation accepted gelu")
	}
}

func TestString(t *testing.T) {
	n := randomNet(t, archCases()[5], 1)
	want := "[32 4] → conv1d(8,k5,s2,same,relu) [16 8] → conv1d(4,k3,s2,same,tanh) [8 4] → upsample1d(2) [16 4]"
	if got := n.String(); !strings.HasPrefix(got, want) {
		t.Errorf("String() = %q, want prefix %q", got, want)
	}
	if p := n.Params(); p != (8*5*4+8)+(4*3*8+4)+(8*3*4+8)+(4*5*8+4) {
		t.Errorf("Params() = %d", p)
	}
}

func BenchmarkForward(b *testing.B) {
	for _, c := range []archCase{archCases()[1], archCases()[5]} {
		b.Run(c.name, func(b *testing.B) {
			n := randomNet(b, c, 1)
			out, _ := n.Output()
			in := randomInput(1, 16*size(n.Input))
			res := make([]float64, 16*size(out))
			b.ReportAllocs()
			for b.Loop() {
				if err := n.Forward(in, res); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMarshal(b *testing.B) {
	n := randomNet(b, archCases()[5], 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}
