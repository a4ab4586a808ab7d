package nn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// This file writes quantized models as TensorFlow Lite's converter does
// (post-training quantization), and gives each a Go reference of the
// runtime's integer arithmetic. Only networks of Dense and Reshape layers
// are quantized.

// QuantMode is a post-training quantization scheme.
type QuantMode uint8

// The quantization schemes.
const (
	// FullInteger: int8 weights (symmetric, one scale per tensor), int8
	// activations (asymmetric, ranges calibrated on sample windows), int32
	// biases; TFLiteConverter with a representative dataset and
	// TFLITE_BUILTINS_INT8.
	FullInteger QuantMode = iota + 1
	// DynamicRange: int8 weights, float32 activations; the runtime
	// quantizes each layer's input on the fly (TFLiteConverter with
	// Optimize.DEFAULT and no representative dataset).
	DynamicRange
)

// IOType is the element type of a full-integer model's input and output.
type IOType uint8

// The input and output types of a full-integer model.
const (
	// IOFloat32: float32 ends, a QUANTIZE after the input and a DEQUANTIZE
	// before the output (the converter's default).
	IOFloat32 IOType = iota
	// IOInt8: int8 input and output (inference_input_type = tf.int8).
	IOInt8
	// IOUInt8: uint8 input and output, converted to and from the int8
	// inside by QUANTIZE operators (inference_input_type = tf.uint8).
	IOUInt8
)

// QuantOptions configure Quantize.
type QuantOptions struct {
	Mode QuantMode
	// IO is the type of the input and output (FullInteger only).
	IO IOType
	// Calibration holds sample windows back to back, each of the network's
	// input size, whose activation ranges set the int8 scales
	// (FullInteger only; required).
	Calibration []float32
	// PerChannel gives each output unit of a DynamicRange model's dense
	// layers its own weight scale: FULLY_CONNECTED version 12, which
	// recent TensorFlow converters write and the 2.9 runtime lacks.
	PerChannel bool
}

// Affine is an affine quantization: real = Scale × (q − ZeroPoint).
type Affine struct {
	Scale     float32
	ZeroPoint int32
}

// Quantized is a network quantized with Quantize: Marshal writes it as a
// .tflite model and Forward is the reference of what the runtime computes.
type Quantized struct {
	net    *Network
	opts   QuantOptions
	shapes [][]int
	// in is the quantization of the (int8) input: FullInteger only.
	in     Affine
	layers []qlayer
}

type qlayer struct {
	dense   *Dense // nil for a reshape
	w       []int8
	wScales []float32 // one, or one per unit (PerChannel)
	bias    []int32   // FullInteger
	fcOut   Affine    // the FULLY_CONNECTED output (FullInteger)
	out     Affine    // after a separate activation; fcOut otherwise
	mult    int32     // the FC's fixed-point output multiplier and shift
	shift   int
}

// Quantize quantizes a network of Dense and Reshape layers.
func Quantize(n *Network, opts QuantOptions) (*Quantized, error) {
	shapes, err := n.Shapes()
	if err != nil {
		return nil, err
	}
	if opts.Mode != FullInteger && opts.Mode != DynamicRange {
		return nil, fmt.Errorf("nn: quantize: unknown mode %d", opts.Mode)
	}
	if opts.PerChannel && opts.Mode != DynamicRange {
		return nil, errors.New("nn: quantize: per-channel weights are written for dynamic-range models only")
	}
	q := &Quantized{net: n, opts: opts, shapes: shapes}
	for i, l := range n.Layers {
		switch l := l.(type) {
		case *Dense:
			ql := qlayer{dense: l}
			ql.w, ql.wScales = quantizeWeights(l.Weights, l.Units, opts.PerChannel)
			q.layers = append(q.layers, ql)
		case *Reshape:
			q.layers = append(q.layers, qlayer{})
		default:
			return nil, fmt.Errorf("nn: quantize: layer %d is %s; only dense and reshape layers are quantized", i, l.Kind())
		}
	}
	if opts.Mode == DynamicRange {
		return q, nil
	}
	is := size(n.Input)
	if len(opts.Calibration) == 0 || len(opts.Calibration)%is != 0 {
		return nil, fmt.Errorf("nn: quantize: %d calibration values is not a positive number of windows of %d", len(opts.Calibration), is)
	}
	if err := q.calibrate(opts.Calibration); err != nil {
		return nil, err
	}
	return q, nil
}

// quantizeWeights quantizes rows of weights symmetrically to [-127, 127].
func quantizeWeights(w []float32, units int, perChannel bool) ([]int8, []float32) {
	rows := 1
	if perChannel {
		rows = units
	}
	per := len(w) / rows
	out := make([]int8, len(w))
	scales := make([]float32, rows)
	for r := range rows {
		m := 0.0
		for _, x := range w[r*per : (r+1)*per] {
			m = max(m, math.Abs(float64(x)))
		}
		s := float32(m / 127)
		if s == 0 {
			s = 1
		}
		scales[r] = s
		for i, x := range w[r*per : (r+1)*per] {
			out[r*per+i] = int8(max(-127, min(127, math.Round(float64(x/s)))))
		}
	}
	return out, scales
}

// rangeAffine is the int8 quantization of [lo, hi], widened to hold 0.
func rangeAffine(lo, hi float64) Affine {
	lo, hi = min(lo, 0), max(hi, 0)
	if hi == lo {
		hi = lo + 1e-3
	}
	s := float32((hi - lo) / 255)
	zp := math.Round(-128 - lo/float64(s))
	return Affine{Scale: s, ZeroPoint: int32(max(-128, min(127, zp)))}
}

// Fixed output quantizations of TFLite's int8 TANH and LOGISTIC kernels.
var (
	tanhOut     = Affine{Scale: 1.0 / 128, ZeroPoint: 0}
	logisticOut = Affine{Scale: 1.0 / 256, ZeroPoint: -128}
)

// calibrate runs the float network on the calibration windows and sets
// every int8 tensor's quantization from the range it sees.
func (q *Quantized) calibrate(windows []float32) error {
	n := q.net
	is := size(n.Input)
	type span struct{ lo, hi float64 }
	in := span{math.Inf(1), math.Inf(-1)}
	fc := make([]span, len(n.Layers))
	for i := range fc {
		fc[i] = span{math.Inf(1), math.Inf(-1)}
	}
	for w := 0; w < len(windows); w += is {
		a := make([]float64, is)
		for i, v := range windows[w : w+is] {
			a[i] = float64(v)
			in.lo, in.hi = min(in.lo, a[i]), max(in.hi, a[i])
		}
		for i, ql := range q.layers {
			if ql.dense == nil {
				continue
			}
			l := ql.dense
			z := make([]float64, l.Units)
			l.forward(a, z, nil, nil)
			fused, after := fuse(l.Act)
			for u := range z {
				if fused == actRelu {
					z[u] = max(z[u], 0)
				}
				fc[i].lo, fc[i].hi = min(fc[i].lo, z[u]), max(fc[i].hi, z[u])
				z[u] = after.Apply(z[u])
			}
			a = z
		}
	}
	q.in = rangeAffine(in.lo, in.hi)
	cur := q.in
	for i := range q.layers {
		ql := &q.layers[i]
		if ql.dense == nil {
			ql.out = cur
			continue
		}
		ql.fcOut = rangeAffine(fc[i].lo, fc[i].hi)
		ql.out = ql.fcOut
		switch _, after := fuse(ql.dense.Act); after {
		case Tanh:
			ql.out = tanhOut
		case Sigmoid:
			ql.out = logisticOut
		}
		bs := cur.Scale * ql.wScales[0]
		ql.bias = make([]int32, len(ql.dense.Bias))
		for u, b := range ql.dense.Bias {
			ql.bias[u] = int32(max(math.MinInt32, min(math.MaxInt32, math.Round(float64(b/bs)))))
		}
		real := float64(cur.Scale) * float64(ql.wScales[0]) / float64(ql.fcOut.Scale)
		ql.mult, ql.shift = quantizeMultiplier(real)
		cur = ql.out
	}
	return nil
}

// InputQuant is the quantization of a full-integer model's int8 input and
// OutputQuant that of its int8 output (before any uint8 or float end).
func (q *Quantized) InputQuant() Affine { return q.in }

// OutputQuant is the quantization of a full-integer model's int8 output.
func (q *Quantized) OutputQuant() Affine {
	if len(q.layers) == 0 {
		return q.in
	}
	return q.layers[len(q.layers)-1].out
}

// quantizeMultiplier splits a positive real multiplier into a Q31 value
// and a power of two, as TFLite's QuantizeMultiplier does.
func quantizeMultiplier(m float64) (int32, int) {
	if m == 0 {
		return 0, 0
	}
	frac, exp := math.Frexp(m)
	qf := int64(math.Round(frac * (1 << 31)))
	if qf == 1<<31 {
		qf /= 2
		exp++
	}
	if exp < -31 {
		return 0, 0
	}
	return int32(qf), exp
}

// multiplyByQuantizedMultiplier is gemmlowp's fixed-point rescale: a
// saturating rounding doubling high multiply, then a rounding right shift.
func multiplyByQuantizedMultiplier(x, mult int32, shift int) int32 {
	left, right := max(shift, 0), max(-shift, 0)
	a := int64(x) << left
	if a > math.MaxInt32 || a < math.MinInt32 { // overflow: saturate as the kernel's int32 would wrap; never for real models
		a = max(math.MinInt32, min(math.MaxInt32, a))
	}
	v := srdhm(int32(a), mult)
	return roundingDivideByPOT(v, right)
}

func srdhm(a, b int32) int32 {
	if a == math.MinInt32 && b == math.MinInt32 {
		return math.MaxInt32
	}
	ab := int64(a) * int64(b)
	nudge := int64(1 << 30)
	if ab < 0 {
		nudge = 1 - (1 << 30)
	}
	return int32((ab + nudge) / (1 << 31))
}

func roundingDivideByPOT(x int32, exp int) int32 {
	mask := int32(1)<<exp - 1
	rem := x & mask
	threshold := mask >> 1
	if x < 0 {
		threshold++
	}
	r := x >> exp
	if rem > threshold {
		r++
	}
	return r
}

func quantizeValue(x float32, a Affine) int32 {
	r := float64(x / a.Scale)
	if r != r {
		return a.ZeroPoint
	}
	return int32(max(-128, min(127, math.Round(r)+float64(a.ZeroPoint))))
}

// Forward is the reference of what the TFLite runtime computes for the
// quantized model, on real-valued windows back to back (as inference's
// scorer feeds them), written to out dequantized, in float64.
func (q *Quantized) Forward(in []float32, out []float64) error {
	n := q.net
	is, os := size(n.Input), size(q.shapes[len(q.shapes)-1])
	if len(in) == 0 || len(in)%is != 0 || len(out) != len(in)/is*os {
		return fmt.Errorf("nn: quantized forward: %d inputs and %d outputs for windows of %d → %d", len(in), len(out), is, os)
	}
	for w := range len(in) / is {
		x := in[w*is : (w+1)*is]
		var res []float64
		if q.opts.Mode == FullInteger {
			res = q.forwardInt(x)
		} else {
			res = q.forwardHybrid(x)
		}
		copy(out[w*os:(w+1)*os], res)
	}
	return nil
}

func (q *Quantized) forwardInt(x []float32) []float64 {
	a := make([]int32, len(x))
	for i, v := range x {
		a[i] = quantizeValue(v, q.in)
	}
	cur := q.in
	for _, ql := range q.layers {
		if ql.dense == nil {
			continue
		}
		l := ql.dense
		nIn := len(a)
		lo := int32(-128)
		fused, after := fuse(l.Act)
		if fused == actRelu {
			lo = max(lo, ql.fcOut.ZeroPoint)
		}
		z := make([]int32, l.Units)
		for u := range l.Units {
			acc := ql.bias[u]
			row := ql.w[u*nIn : (u+1)*nIn]
			for i, v := range a {
				acc += (v - cur.ZeroPoint) * int32(row[i])
			}
			y := multiplyByQuantizedMultiplier(acc, ql.mult, ql.shift) + ql.fcOut.ZeroPoint
			z[u] = max(lo, min(127, y))
		}
		if after == Tanh || after == Sigmoid {
			for u, v := range z {
				z[u] = lookup(v, ql.fcOut, ql.out, after)
			}
		}
		a, cur = z, ql.out
	}
	res := make([]float64, len(a))
	for i, v := range a {
		res[i] = float64(cur.Scale * float32(v-cur.ZeroPoint))
	}
	return res
}

// lookup is TFLite's int8 TANH and LOGISTIC: a table of the float function
// of each dequantized input, rounded to the output's quantization.
func lookup(v int32, in, out Affine, act Activation) int32 {
	x := in.Scale * float32(v-in.ZeroPoint)
	y := float32(act.Apply(float64(x)))
	r := float32(math.Round(float64(y * (1 / out.Scale))))
	return max(-128, min(127, int32(r)+out.ZeroPoint))
}

func (q *Quantized) forwardHybrid(x []float32) []float64 {
	a := slices.Clone(x)
	for _, ql := range q.layers {
		if ql.dense == nil {
			continue
		}
		l := ql.dense
		nIn := len(a)
		// Symmetric per-window quantization of the layer's input.
		rng := float32(0)
		for _, v := range a {
			rng = max(rng, float32(math.Abs(float64(v))))
		}
		xq := make([]int32, nIn)
		sf := float32(1)
		if rng > 0 {
			sf = rng / 127
			inv := 127 / rng
			for i, v := range a {
				xq[i] = int32(max(-127, min(127, math.Round(float64(v*inv)))))
			}
		}
		fused, after := fuse(l.Act)
		z := make([]float32, l.Units)
		for u := range l.Units {
			ws := ql.wScales[0]
			if len(ql.wScales) > 1 {
				ws = ql.wScales[u]
			}
			acc := int32(0)
			row := ql.w[u*nIn : (u+1)*nIn]
			for i, v := range xq {
				acc += v * int32(row[i])
			}
			y := l.Bias[u] + float32(acc)*(sf*ws)
			if fused == actRelu {
				y = max(y, 0)
			}
			z[u] = float32(after.Apply(float64(y)))
		}
		a = z
	}
	res := make([]float64, len(a))
	for i, v := range a {
		res[i] = float64(v)
	}
	return res
}

// Marshal writes the quantized network as a .tflite model whose input is
// [batch, Input...] and output [batch, output...], with a free batch.
func (q *Quantized) Marshal() ([]byte, error) {
	n := q.net
	w := &writer{buffers: [][]byte{nil}, codes: map[int32]int{}}
	var input int32
	var cur tensorRef
	full := q.opts.Mode == FullInteger
	i8 := func(a Affine) *tensorQuant {
		return &tensorQuant{scales: []float32{a.Scale}, zps: []int64{int64(a.ZeroPoint)}}
	}
	u8 := func(a Affine) *tensorQuant {
		return &tensorQuant{scales: []float32{a.Scale}, zps: []int64{int64(a.ZeroPoint) + 128}}
	}
	switch {
	case !full || q.opts.IO == IOFloat32:
		input = w.tensor("input", n.Input)
		cur = tensorRef{id: input, phys: n.Input}
		if full {
			cur = w.convert(cur, "input/quantize", typeInt8, i8(q.in), opQuantize, 1)
		}
	case q.opts.IO == IOInt8:
		input = w.typedTensor("input", n.Input, typeInt8, i8(q.in))
		cur = tensorRef{id: input, phys: n.Input}
	case q.opts.IO == IOUInt8:
		input = w.typedTensor("input", n.Input, typeUInt8, u8(q.in))
		cur = w.convert(tensorRef{id: input, phys: n.Input}, "input/int8", typeInt8, i8(q.in), opQuantize, 1)
	default:
		return nil, fmt.Errorf("nn: quantized marshal: unknown IO type %d", q.opts.IO)
	}
	for i, ql := range q.layers {
		if ql.dense == nil {
			continue
		}
		l := ql.dense
		prefix := fmt.Sprintf("dense%d", i)
		x := w.ensure(cur, []int{size(cur.phys)}, prefix+"/flatten")
		nIn := size(x.phys)
		wq := &tensorQuant{scales: ql.wScales, zps: make([]int64, len(ql.wScales))}
		wb := make([]byte, len(ql.w))
		for k, v := range ql.w {
			wb[k] = byte(v)
		}
		weights := w.constant(prefix+"/weights", []int{l.Units, nIn}, typeInt8, wb)
		w.tensors[weights].quant = wq
		fused, after := fuse(l.Act)
		var bias, y int32
		version := int32(4)
		if full {
			bb := make([]byte, 4*len(ql.bias))
			for k, v := range ql.bias {
				binary.LittleEndian.PutUint32(bb[4*k:], uint32(v))
			}
			in := w.tensors[x.id].quant
			bias = w.constant(prefix+"/bias", []int{l.Units}, typeInt32, bb)
			w.tensors[bias].quant = &tensorQuant{scales: []float32{in.scales[0] * ql.wScales[0]}, zps: []int64{0}}
			y = w.typedTensor(prefix, []int{l.Units}, typeInt8, i8(ql.fcOut))
		} else {
			bias = w.constF32(prefix+"/bias", []int{l.Units}, l.Bias)
			y = w.tensor(prefix, []int{l.Units})
			version = 3
			if q.opts.PerChannel {
				version = 12
			}
		}
		w.op(opFullyConnected, version, []int32{x.id, weights, bias}, []int32{y}, fcOptions{act: fused})
		cur = tensorRef{id: y, phys: []int{l.Units}}
		if after == Tanh || after == Sigmoid {
			if full {
				code := int32(opTanh)
				if after == Sigmoid {
					code = opLogistic
				}
				out := w.typedTensor(prefix+"/"+after.String(), cur.phys, typeInt8, i8(ql.out))
				w.op(code, 2, []int32{cur.id}, []int32{out}, nil)
				cur = tensorRef{id: out, phys: cur.phys}
			} else {
				cur = w.activate(cur, after, prefix+"/"+after.String())
			}
		}
	}
	outShape := q.shapes[len(q.shapes)-1]
	if cur.id == input {
		cur = w.reshape(cur, outShape, "output/reshape")
	} else {
		cur = w.ensure(cur, outShape, "output/reshape")
	}
	if full {
		switch q.opts.IO {
		case IOFloat32:
			out := w.tensor("output", outShape)
			w.op(opDequantize, 2, []int32{cur.id}, []int32{out}, nil)
			cur = tensorRef{id: out, phys: outShape}
		case IOUInt8:
			cur = w.convert(cur, "output", typeUInt8, u8(q.OutputQuant()), opQuantize, 1)
		}
	}
	w.tensors[cur.id].name = "output"
	return w.finish(input, cur.id, n.Description), nil
}

// typedTensor adds an activation tensor of the given type and quantization.
func (w *writer) typedTensor(name string, s []int, typ int8, q *tensorQuant) int32 {
	id := w.tensor(name, s)
	w.tensors[id].typ, w.tensors[id].quant = typ, q
	return id
}

// convert adds a QUANTIZE or DEQUANTIZE from cur to a new tensor.
func (w *writer) convert(cur tensorRef, name string, typ int8, q *tensorQuant, code, version int32) tensorRef {
	out := w.typedTensor(name, cur.phys, typ, q)
	w.op(code, version, []int32{cur.id}, []int32{out}, nil)
	return tensorRef{id: out, phys: cur.phys}
}
