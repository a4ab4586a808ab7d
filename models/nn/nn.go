// Package nn describes the small float32 networks Vigil runs: a sequential
// graph over windows of shape [window, channels] (or any per-window shape),
// made of dense layers, 1-D convolutions, nearest-neighbour upsampling,
// cropping and reshapes. It gives each graph two executions that must agree:
// a pure-Go reference forward pass (Network.Forward) and a TensorFlow Lite
// flatbuffer (Network.Marshal) that the TFLite 2.9 runtime runs.
//
// Every tensor in the written model keeps the batch dimension free: the
// input is stored as [1, ...] with shape signature [-1, ...], every RESHAPE
// uses -1 for the batch, and no constant depends on the batch size, so an
// interpreter can be resized to any batch at run time.
//
// Weights are float32, laid out as TFLite stores them (see each layer), so
// that the file holds exactly the numbers the reference pass uses.
package nn

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// Activation is an element-wise function applied after a layer.
type Activation uint8

// The activations a layer may apply. TFLite fuses Linear and ReLU into the
// layer's own operator; Tanh and Sigmoid are written as separate TANH and
// LOGISTIC operators (see Marshal).
const (
	Linear Activation = iota
	ReLU
	Tanh
	Sigmoid
)

var activationNames = [...]string{Linear: "linear", ReLU: "relu", Tanh: "tanh", Sigmoid: "sigmoid"}

// String returns the activation's name, as ParseActivation takes it.
func (a Activation) String() string {
	if int(a) < len(activationNames) {
		return activationNames[a]
	}
	return fmt.Sprintf("Activation(%d)", uint8(a))
}

// ParseActivation returns the activation named s ("linear", "relu", "tanh"
// or "sigmoid").
func ParseActivation(s string) (Activation, error) {
	for i, n := range activationNames {
		if n == s {
			return Activation(i), nil
		}
	}
	return 0, fmt.Errorf("unknown activation %q (want linear, relu, tanh or sigmoid)", s)
}

func (a Activation) valid() bool { return int(a) < len(activationNames) }

// Apply returns the activation of x, computed in float64.
func (a Activation) Apply(x float64) float64 {
	switch a {
	case ReLU:
		return max(x, 0)
	case Tanh:
		return math.Tanh(x)
	case Sigmoid:
		return 1 / (1 + math.Exp(-x))
	}
	return x
}

// Padding is the padding of a convolution, with TFLite's meaning: Same pads
// so that the output has ceil(in/stride) steps, splitting the padding with
// the smaller half before the input; Valid does not pad.
type Padding uint8

// The paddings of a convolution.
const (
	Same Padding = iota
	Valid
)

// String returns "same" or "valid".
func (p Padding) String() string {
	switch p {
	case Same:
		return "same"
	case Valid:
		return "valid"
	}
	return fmt.Sprintf("Padding(%d)", uint8(p))
}

// Network is a sequential graph. Input is the shape of one window without
// the batch dimension, for example []int{60, 8} for 60 samples of 8
// channels; each layer transforms the previous layer's output.
type Network struct {
	Input  []int
	Layers []Layer
	// Description is stored in the model file; it is for people.
	Description string
}

// Layer is one step of a Network: *Dense, *Conv1D, *Upsample1D, *Crop1D or
// *Reshape. The set is closed: each kind needs both a reference
// implementation and a TFLite encoding.
type Layer interface {
	// Kind names the layer in errors and descriptions ("dense", "conv1d"...).
	Kind() string
	// outShape returns the per-window output shape for an input shape, or
	// an error saying why the layer cannot take that input.
	outShape(in []int) ([]int, error)
	// forward runs the layer on one window.
	forward(in, out []float64, inShape, outShape []int)
	// emit writes the layer's operators; cur is its input.
	emit(w *writer, cur tensorRef, inShape, outShape []int, prefix string) (tensorRef, error)
}

// Dense is a fully connected layer over the whole window: the input is
// flattened to n values and the output has shape [Units]. Weights holds
// Units×n values, row u being the weights of output u (TFLite's
// FULLY_CONNECTED layout); Bias holds Units values.
type Dense struct {
	Units   int
	Act     Activation
	Weights []float32
	Bias    []float32
}

// Conv1D is a convolution along the first axis of a [steps, channels]
// input, giving [out, Filters] with out = ceil(steps/Stride) for Same
// padding and (steps-Kernel)/Stride+1 for Valid. Weights holds
// Filters×Kernel×channels values in that order (TFLite's CONV_2D layout
// [out, 1, kernel, in]); Bias holds Filters values.
type Conv1D struct {
	Filters int
	Kernel  int
	Stride  int
	Padding Padding
	Act     Activation
	Weights []float32
	Bias    []float32
}

// Upsample1D repeats every step of a [steps, channels] input Factor times,
// giving [steps×Factor, channels] (TFLite RESIZE_NEAREST_NEIGHBOR).
type Upsample1D struct {
	Factor int
}

// Crop1D keeps steps [Begin, Begin+Length) of a [steps, channels] input
// (TFLite SLICE). It trims what upsampling added beyond an odd window.
type Crop1D struct {
	Begin, Length int
}

// Reshape changes the per-window shape without moving data; the number of
// values must not change (TFLite RESHAPE with -1 for the batch).
type Reshape struct {
	Shape []int
}

// Kind implements Layer.
func (*Dense) Kind() string { return "dense" }

// Kind implements Layer.
func (*Conv1D) Kind() string { return "conv1d" }

// Kind implements Layer.
func (*Upsample1D) Kind() string { return "upsample1d" }

// Kind implements Layer.
func (*Crop1D) Kind() string { return "crop1d" }

// Kind implements Layer.
func (*Reshape) Kind() string { return "reshape" }

func (l *Dense) outShape(in []int) ([]int, error) {
	n := size(in)
	switch {
	case l.Units <= 0:
		return nil, fmt.Errorf("Units is %d, want > 0", l.Units)
	case !l.Act.valid():
		return nil, fmt.Errorf("unknown activation %d", l.Act)
	case len(l.Weights) != l.Units*n:
		return nil, fmt.Errorf("Weights has %d values, want Units×inputs = %d×%d = %d", len(l.Weights), l.Units, n, l.Units*n)
	case len(l.Bias) != l.Units:
		return nil, fmt.Errorf("Bias has %d values, want Units = %d", len(l.Bias), l.Units)
	}
	return []int{l.Units}, nil
}

func (l *Conv1D) outShape(in []int) ([]int, error) {
	if len(in) != 2 {
		return nil, fmt.Errorf("input shape %v, want [steps, channels]", in)
	}
	steps, ch := in[0], in[1]
	switch {
	case l.Filters <= 0:
		return nil, fmt.Errorf("Filters is %d, want > 0", l.Filters)
	case l.Kernel <= 0:
		return nil, fmt.Errorf("Kernel is %d, want > 0", l.Kernel)
	case l.Stride <= 0:
		return nil, fmt.Errorf("Stride is %d, want > 0", l.Stride)
	case l.Padding != Same && l.Padding != Valid:
		return nil, fmt.Errorf("unknown padding %d", l.Padding)
	case !l.Act.valid():
		return nil, fmt.Errorf("unknown activation %d", l.Act)
	case l.Padding == Valid && l.Kernel > steps:
		return nil, fmt.Errorf("Kernel %d is longer than the %d input steps with valid padding", l.Kernel, steps)
	case len(l.Weights) != l.Filters*l.Kernel*ch:
		return nil, fmt.Errorf("Weights has %d values, want Filters×Kernel×channels = %d×%d×%d = %d",
			len(l.Weights), l.Filters, l.Kernel, ch, l.Filters*l.Kernel*ch)
	case len(l.Bias) != l.Filters:
		return nil, fmt.Errorf("Bias has %d values, want Filters = %d", len(l.Bias), l.Filters)
	}
	return []int{ConvSteps(steps, l.Kernel, l.Stride, l.Padding), l.Filters}, nil
}

// ConvSteps is the number of output steps of a 1-D convolution over steps
// inputs, with TFLite's rules.
func ConvSteps(steps, kernel, stride int, p Padding) int {
	if p == Valid {
		return (steps-kernel)/stride + 1
	}
	return (steps + stride - 1) / stride
}

// ConvPadBefore is the number of zero steps TFLite puts before the input of
// a convolution with Same padding (the padding's smaller half).
func ConvPadBefore(steps, kernel, stride int, p Padding) int {
	if p == Valid {
		return 0
	}
	out := ConvSteps(steps, kernel, stride, p)
	return max((out-1)*stride+kernel-steps, 0) / 2
}

func (l *Upsample1D) outShape(in []int) ([]int, error) {
	if len(in) != 2 {
		return nil, fmt.Errorf("input shape %v, want [steps, channels]", in)
	}
	if l.Factor <= 0 {
		return nil, fmt.Errorf("Factor is %d, want > 0", l.Factor)
	}
	return []int{in[0] * l.Factor, in[1]}, nil
}

func (l *Crop1D) outShape(in []int) ([]int, error) {
	if len(in) != 2 {
		return nil, fmt.Errorf("input shape %v, want [steps, channels]", in)
	}
	if l.Begin < 0 || l.Length <= 0 || l.Begin+l.Length > in[0] {
		return nil, fmt.Errorf("steps [%d, %d) are not inside the input's %d steps", l.Begin, l.Begin+l.Length, in[0])
	}
	return []int{l.Length, in[1]}, nil
}

func (l *Reshape) outShape(in []int) ([]int, error) {
	if len(l.Shape) == 0 {
		return nil, errors.New("empty Shape")
	}
	for _, d := range l.Shape {
		if d <= 0 {
			return nil, fmt.Errorf("Shape %v has a non-positive dimension", l.Shape)
		}
	}
	if size(l.Shape) != size(in) {
		return nil, fmt.Errorf("Shape %v holds %d values, input %v holds %d", l.Shape, size(l.Shape), in, size(in))
	}
	return slices.Clone(l.Shape), nil
}

// Shapes checks the network and returns the per-window shape after each
// layer: Shapes()[i] is the output shape of Layers[i].
func (n *Network) Shapes() ([][]int, error) {
	if len(n.Input) == 0 {
		return nil, errors.New("nn: network has no input shape")
	}
	for _, d := range n.Input {
		if d <= 0 {
			return nil, fmt.Errorf("nn: input shape %v has a non-positive dimension", n.Input)
		}
	}
	if len(n.Layers) == 0 {
		return nil, errors.New("nn: network has no layers")
	}
	shapes := make([][]int, len(n.Layers))
	in := n.Input
	for i, l := range n.Layers {
		if isNil(l) {
			return nil, fmt.Errorf("nn: layer %d is nil", i)
		}
		out, err := l.outShape(in)
		if err != nil {
			return nil, fmt.Errorf("nn: layer %d (%s): %w", i, l.Kind(), err)
		}
		shapes[i] = out
		in = out
	}
	return shapes, nil
}

// Validate reports whether the network is well formed: every layer accepts
// its input shape and has weights of the right size.
func (n *Network) Validate() error {
	_, err := n.Shapes()
	return err
}

// Output returns the per-window output shape.
func (n *Network) Output() ([]int, error) {
	s, err := n.Shapes()
	if err != nil {
		return nil, err
	}
	return s[len(s)-1], nil
}

// Params is the number of weights and biases in the network.
func (n *Network) Params() int {
	p := 0
	for _, l := range n.Layers {
		switch l := l.(type) {
		case *Dense:
			p += len(l.Weights) + len(l.Bias)
		case *Conv1D:
			p += len(l.Weights) + len(l.Bias)
		}
	}
	return p
}

// String describes the architecture, e.g.
// "[32 8] conv1d(16,k5,s2,same,relu) → [16 16] ...".
func (n *Network) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%v", n.Input)
	shapes, err := n.Shapes()
	for i, l := range n.Layers {
		sb.WriteString(" → ")
		sb.WriteString(describe(l))
		if err == nil {
			fmt.Fprintf(&sb, " %v", shapes[i])
		}
	}
	return sb.String()
}

func describe(l Layer) string {
	if isNil(l) {
		return "nil"
	}
	switch l := l.(type) {
	case *Dense:
		return fmt.Sprintf("dense(%d,%s)", l.Units, l.Act)
	case *Conv1D:
		return fmt.Sprintf("conv1d(%d,k%d,s%d,%s,%s)", l.Filters, l.Kernel, l.Stride, l.Padding, l.Act)
	case *Upsample1D:
		return fmt.Sprintf("upsample1d(%d)", l.Factor)
	case *Crop1D:
		return fmt.Sprintf("crop1d(%d,%d)", l.Begin, l.Length)
	case *Reshape:
		return fmt.Sprintf("reshape%v", l.Shape)
	}
	return l.Kind()
}

// Randomize allocates and fills every layer's weights with Glorot-uniform
// values and its biases with small uniform values drawn from r. It is for
// tests and self-tests; the trainer sets weights itself.
func (n *Network) Randomize(r *rand.Rand) error {
	in := n.Input
	for i, l := range n.Layers {
		if isNil(l) {
			return fmt.Errorf("nn: layer %d is nil", i)
		}
		switch l := l.(type) {
		case *Dense:
			fanIn, fanOut := size(in), l.Units
			l.Weights = glorot(r, l.Units*fanIn, fanIn, fanOut)
			l.Bias = uniform(r, l.Units, 0.1)
		case *Conv1D:
			if len(in) != 2 {
				return fmt.Errorf("nn: layer %d (conv1d): input shape %v, want [steps, channels]", i, in)
			}
			fanIn, fanOut := l.Kernel*in[1], l.Kernel*l.Filters
			l.Weights = glorot(r, l.Filters*l.Kernel*in[1], fanIn, fanOut)
			l.Bias = uniform(r, l.Filters, 0.1)
		}
		out, err := l.outShape(in)
		if err != nil {
			return fmt.Errorf("nn: layer %d (%s): %w", i, l.Kind(), err)
		}
		in = out
	}
	return nil
}

// isNil reports whether l is nil or a nil pointer of a layer type.
func isNil(l Layer) bool {
	switch l := l.(type) {
	case nil:
		return true
	case *Dense:
		return l == nil
	case *Conv1D:
		return l == nil
	case *Upsample1D:
		return l == nil
	case *Crop1D:
		return l == nil
	case *Reshape:
		return l == nil
	}
	return false
}

func glorot(r *rand.Rand, n, fanIn, fanOut int) []float32 {
	return uniform(r, n, math.Sqrt(6/float64(fanIn+fanOut)))
}

func uniform(r *rand.Rand, n int, limit float64) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = float32((2*r.Float64() - 1) * limit)
	}
	return w
}

func size(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
