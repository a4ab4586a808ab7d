package nn

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	flatbuffers "github.com/google/flatbuffers/go"
)

// This file writes a Network as a TensorFlow Lite flatbuffer following
// tensorflow/lite/schema/schema.fbs (schema version 3, as read by the 2.9
// runtime). Field slots below are the fields' ids in declaration order; a
// union field takes two slots, its type and then its value.

// BuiltinOperator codes used here (schema enum BuiltinOperator).
const (
	opConv2D                = 3
	opDequantize            = 6
	opFullyConnected        = 9
	opLogistic              = 14
	opReshape               = 22
	opTanh                  = 28
	opSlice                 = 65
	opResizeNearestNeighbor = 97
	opQuantize              = 114
)

// BuiltinOptions union member numbers (NONE is 0).
const (
	optConv2D                = 1
	optFullyConnected        = 8
	optReshape               = 17
	optSlice                 = 48
	optResizeNearestNeighbor = 74
)

// TensorType and enum values.
const (
	typeFloat32 = 0
	typeInt32   = 2
	typeUInt8   = 3
	typeInt8    = 9

	actNone = 0 // ActivationFunctionType
	actRelu = 1

	padSame  = 0 // Padding
	padValid = 1
)

// schemaVersion is Model.version: buffers live in Model.buffers.
const schemaVersion = 3

// Marshal writes the network as a .tflite model: one subgraph whose input
// is [batch, Input...] and whose output is [batch, output...], both float32,
// with every weight a constant tensor. The stored batch size is 1 and every
// shape signature has -1 for the batch, which the runtime can resize.
// The output is deterministic: the same network gives the same bytes.
func (n *Network) Marshal() ([]byte, error) {
	shapes, err := n.Shapes()
	if err != nil {
		return nil, err
	}
	w := &writer{buffers: [][]byte{nil}, codes: map[int32]int{}}
	input := w.tensor("input", n.Input)
	cur := tensorRef{id: input, phys: n.Input}
	in := n.Input
	for i, l := range n.Layers {
		cur, err = l.emit(w, cur, in, shapes[i], fmt.Sprintf("%s%d", l.Kind(), i))
		if err != nil {
			return nil, fmt.Errorf("nn: marshal layer %d (%s): %w", i, l.Kind(), err)
		}
		in = shapes[i]
	}
	out := shapes[len(shapes)-1]
	if cur.id == input {
		// Only reshapes: the graph still needs one operator between input
		// and output.
		cur = w.reshape(cur, out, "output")
	} else {
		cur = w.ensure(cur, out, "output")
	}
	w.tensors[cur.id].name = "output"
	return w.finish(input, cur.id, n.Description), nil
}

// tensorRef is a graph tensor and its physical per-window shape, which may
// differ from the logical shape by leading 1s (a [steps, channels] window is
// [1, steps, channels] around a CONV_2D) or by a pending reshape.
type tensorRef struct {
	id   int32
	phys []int
}

type tensorDef struct {
	name   string
	shape  []int // with the batch dimension first
	typ    int8
	buffer uint32
	dynBat bool // the first dimension is the batch (shape signature -1)
	quant  *tensorQuant
}

// tensorQuant is a tensor's affine quantization: one scale and zero point,
// or one per slice of dimension 0 (per-channel weights).
type tensorQuant struct {
	scales []float32
	zps    []int64
}

type opDef struct {
	code    int32
	inputs  []int32
	outputs []int32
	opts    options
}

type opCode struct {
	builtin int32
	version int32
}

type writer struct {
	tensors  []tensorDef
	buffers  [][]byte
	codeList []opCode
	codes    map[int32]int
	ops      []opDef
}

// tensor adds an activation tensor of per-window shape s.
func (w *writer) tensor(name string, s []int) int32 {
	w.tensors = append(w.tensors, tensorDef{
		name: name, shape: append([]int{1}, s...), typ: typeFloat32, dynBat: true,
	})
	return int32(len(w.tensors) - 1)
}

func (w *writer) constant(name string, shape []int, typ int8, data []byte) int32 {
	w.buffers = append(w.buffers, data)
	w.tensors = append(w.tensors, tensorDef{
		name: name, shape: slices.Clone(shape), typ: typ, buffer: uint32(len(w.buffers) - 1),
	})
	return int32(len(w.tensors) - 1)
}

func (w *writer) constF32(name string, shape []int, v []float32) int32 {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return w.constant(name, shape, typeFloat32, b)
}

func (w *writer) constI32(name string, v ...int32) int32 {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return w.constant(name, []int{len(v)}, typeInt32, b)
}

func (w *writer) op(code, version int32, inputs, outputs []int32, opts options) {
	if _, ok := w.codes[code]; !ok {
		w.codes[code] = len(w.codeList)
		w.codeList = append(w.codeList, opCode{builtin: code, version: version})
	}
	w.ops = append(w.ops, opDef{code: code, inputs: inputs, outputs: outputs, opts: opts})
}

// ensure returns cur with physical shape phys, adding a RESHAPE when it has
// another one.
func (w *writer) ensure(cur tensorRef, phys []int, name string) tensorRef {
	if slices.Equal(cur.phys, phys) {
		return cur
	}
	return w.reshape(cur, phys, name)
}

func (w *writer) reshape(cur tensorRef, phys []int, name string) tensorRef {
	target := make([]int32, 0, len(phys)+1)
	target = append(target, -1) // the batch
	for _, d := range phys {
		target = append(target, int32(d))
	}
	shape := w.constI32(name+"/shape", target...)
	out := w.tensor(name, phys)
	// A reshape keeps its input's type and quantization.
	w.tensors[out].typ, w.tensors[out].quant = w.tensors[cur.id].typ, w.tensors[cur.id].quant
	w.op(opReshape, 1, []int32{cur.id, shape}, []int32{out}, reshapeOptions{target})
	return tensorRef{id: out, phys: slices.Clone(phys)}
}

// fuse splits an activation into what the layer's operator fuses and what
// needs an operator of its own. TFLite 2.9's ActivationFunctionType has no
// sigmoid, so Sigmoid is a LOGISTIC operator. TANH is in the enum, but the
// 2.9 float kernels do not compute it: FULLY_CONNECTED refuses it when
// tensors are allocated and CONV_2D silently treats it as NONE (see
// TestRuntimeFusedTanhUnsupported), so Tanh is a TANH operator. Only ReLU,
// a clamp every kernel applies, is fused.
func fuse(a Activation) (fused int8, separate Activation) {
	if a == ReLU {
		return actRelu, Linear
	}
	return actNone, a
}

// activate applies a separate activation operator when a needs one.
func (w *writer) activate(cur tensorRef, a Activation, name string) tensorRef {
	var code int32
	switch a {
	case Tanh:
		code = opTanh
	case Sigmoid:
		code = opLogistic
	default:
		return cur
	}
	out := w.tensor(name, cur.phys)
	w.op(code, 1, []int32{cur.id}, []int32{out}, nil)
	return tensorRef{id: out, phys: cur.phys}
}

func (l *Dense) emit(w *writer, cur tensorRef, in, out []int, prefix string) (tensorRef, error) {
	n := size(in)
	x := w.ensure(cur, []int{n}, prefix+"/flatten")
	weights := w.constF32(prefix+"/weights", []int{l.Units, n}, l.Weights)
	bias := w.constF32(prefix+"/bias", []int{l.Units}, l.Bias)
	fused, after := fuse(l.Act)
	y := w.tensor(prefix, out)
	w.op(opFullyConnected, 1, []int32{x.id, weights, bias}, []int32{y}, fcOptions{act: fused})
	return w.activate(tensorRef{id: y, phys: out}, after, prefix+"/"+after.String()), nil
}

func (l *Conv1D) emit(w *writer, cur tensorRef, in, out []int, prefix string) (tensorRef, error) {
	steps, ch := in[0], in[1]
	x := w.ensure(cur, []int{1, steps, ch}, prefix+"/expand")
	filter := w.constF32(prefix+"/filter", []int{l.Filters, 1, l.Kernel, ch}, l.Weights)
	bias := w.constF32(prefix+"/bias", []int{l.Filters}, l.Bias)
	fused, after := fuse(l.Act)
	phys := []int{1, out[0], out[1]}
	y := w.tensor(prefix, phys)
	pad := int8(padSame)
	if l.Padding == Valid {
		pad = padValid
	}
	w.op(opConv2D, 1, []int32{x.id, filter, bias}, []int32{y},
		convOptions{padding: pad, strideW: int32(l.Stride), strideH: 1, act: fused})
	return w.activate(tensorRef{id: y, phys: phys}, after, prefix+"/"+after.String()), nil
}

func (l *Upsample1D) emit(w *writer, cur tensorRef, in, out []int, prefix string) (tensorRef, error) {
	x := w.ensure(cur, []int{1, in[0], in[1]}, prefix+"/expand")
	// RESIZE_NEAREST_NEIGHBOR takes the new [height, width]; with an integer
	// factor, no align_corners and no half-pixel centres, output step t
	// reads input step floor(t/Factor).
	sz := w.constI32(prefix+"/size", 1, int32(out[0]))
	phys := []int{1, out[0], out[1]}
	y := w.tensor(prefix, phys)
	w.op(opResizeNearestNeighbor, 1, []int32{x.id, sz}, []int32{y}, resizeOptions{})
	return tensorRef{id: y, phys: phys}, nil
}

func (l *Crop1D) emit(w *writer, cur tensorRef, in, out []int, prefix string) (tensorRef, error) {
	x := w.ensure(cur, []int{1, in[0], in[1]}, prefix+"/expand")
	begin := w.constI32(prefix+"/begin", 0, 0, int32(l.Begin), 0)
	// SLICE's size -1 means "to the end", which keeps the batch free.
	sz := w.constI32(prefix+"/size", -1, 1, int32(l.Length), int32(in[1]))
	phys := []int{1, out[0], out[1]}
	y := w.tensor(prefix, phys)
	w.op(opSlice, 1, []int32{x.id, begin, sz}, []int32{y}, sliceOptions{})
	return tensorRef{id: y, phys: phys}, nil
}

func (l *Reshape) emit(_ *writer, cur tensorRef, _, _ []int, _ string) (tensorRef, error) {
	// A reshape moves no data: it is written lazily, when a later layer or
	// the output needs a physical shape that differs (writer.ensure).
	return cur, nil
}

// options is one member of the BuiltinOptions union.
type options interface {
	unionType() uint8
	build(b *flatbuffers.Builder) flatbuffers.UOffsetT
}

type convOptions struct {
	padding          int8
	strideW, strideH int32
	act              int8
}

func (convOptions) unionType() uint8 { return optConv2D }

func (o convOptions) build(b *flatbuffers.Builder) flatbuffers.UOffsetT {
	// table Conv2DOptions { padding; stride_w; stride_h;
	//   fused_activation_function; dilation_w_factor = 1; dilation_h_factor = 1 }
	b.StartObject(6)
	b.PrependInt32Slot(1, o.strideW, 0)
	b.PrependInt32Slot(2, o.strideH, 0)
	b.PrependInt8Slot(0, o.padding, 0)
	b.PrependInt8Slot(3, o.act, 0)
	return b.EndObject()
}

type fcOptions struct{ act int8 }

func (fcOptions) unionType() uint8 { return optFullyConnected }

func (o fcOptions) build(b *flatbuffers.Builder) flatbuffers.UOffsetT {
	// table FullyConnectedOptions { fused_activation_function;
	//   weights_format = DEFAULT; keep_num_dims; ... }
	b.StartObject(3)
	b.PrependInt8Slot(0, o.act, 0)
	return b.EndObject()
}

type reshapeOptions struct{ shape []int32 }

func (reshapeOptions) unionType() uint8 { return optReshape }

func (o reshapeOptions) build(b *flatbuffers.Builder) flatbuffers.UOffsetT {
	// table ReshapeOptions { new_shape:[int] }. The shape tensor input takes
	// precedence; new_shape says the same for readers that look here.
	v := int32Vector(b, o.shape)
	b.StartObject(1)
	b.PrependUOffsetTSlot(0, v, 0)
	return b.EndObject()
}

type resizeOptions struct{}

func (resizeOptions) unionType() uint8 { return optResizeNearestNeighbor }

func (resizeOptions) build(b *flatbuffers.Builder) flatbuffers.UOffsetT {
	// table ResizeNearestNeighborOptions { align_corners; half_pixel_centers }
	b.StartObject(2)
	return b.EndObject()
}

type sliceOptions struct{}

func (sliceOptions) unionType() uint8 { return optSlice }

func (sliceOptions) build(b *flatbuffers.Builder) flatbuffers.UOffsetT {
	b.StartObject(0) // table SliceOptions {}
	return b.EndObject()
}

func int32Vector(b *flatbuffers.Builder, v []int32) flatbuffers.UOffsetT {
	b.StartVector(4, len(v), 4)
	for i := len(v) - 1; i >= 0; i-- {
		b.PrependInt32(v[i])
	}
	return b.EndVector(len(v))
}

// quantParams writes a QuantizationParameters table { min; max; scale:[float];
// zero_point:[long]; details_type; details; quantized_dimension:int }.
func quantParams(b *flatbuffers.Builder, q *tensorQuant) flatbuffers.UOffsetT {
	b.StartVector(4, len(q.scales), 4)
	for i := len(q.scales) - 1; i >= 0; i-- {
		b.PrependFloat32(q.scales[i])
	}
	scales := b.EndVector(len(q.scales))
	b.StartVector(8, len(q.zps), 8)
	for i := len(q.zps) - 1; i >= 0; i-- {
		b.PrependInt64(q.zps[i])
	}
	zps := b.EndVector(len(q.zps))
	b.StartObject(7)
	b.PrependUOffsetTSlot(2, scales, 0)
	b.PrependUOffsetTSlot(3, zps, 0)
	return b.EndObject()
}

func tableVector(b *flatbuffers.Builder, offs []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	b.StartVector(4, len(offs), 4)
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	return b.EndVector(len(offs))
}

// alignedBytes writes a [ubyte] vector whose data starts on a 16-byte
// boundary (Buffer.data is declared force_align: 16).
func alignedBytes(b *flatbuffers.Builder, data []byte) flatbuffers.UOffsetT {
	b.StartVector(1, len(data), 16)
	for i := len(data) - 1; i >= 0; i-- {
		b.PlaceByte(data[i])
	}
	return b.EndVector(len(data))
}

func (w *writer) finish(input, output int32, description string) []byte {
	size := 1024
	for _, d := range w.buffers {
		size += len(d) + 32
	}
	b := flatbuffers.NewBuilder(size)

	// Buffers. Buffer 0 is the empty sentinel that tensors without data use.
	bufs := make([]flatbuffers.UOffsetT, len(w.buffers))
	for i, d := range w.buffers {
		var data flatbuffers.UOffsetT
		if len(d) > 0 {
			data = alignedBytes(b, d)
		}
		b.StartObject(1) // table Buffer { data:[ubyte] (force_align: 16); ... }
		if len(d) > 0 {
			b.PrependUOffsetTSlot(0, data, 0)
		}
		bufs[i] = b.EndObject()
	}

	// Tensors.
	tens := make([]flatbuffers.UOffsetT, len(w.tensors))
	for i, t := range w.tensors {
		shape := make([]int32, len(t.shape))
		for j, d := range t.shape {
			shape[j] = int32(d)
		}
		shapeVec := int32Vector(b, shape)
		var sigVec flatbuffers.UOffsetT
		if t.dynBat {
			sig := slices.Clone(shape)
			sig[0] = -1
			sigVec = int32Vector(b, sig)
		}
		name := b.CreateString(t.name)
		var quant flatbuffers.UOffsetT
		if t.quant != nil {
			quant = quantParams(b, t.quant)
		}
		// table Tensor { shape; type; buffer; name; quantization;
		//   is_variable; sparsity; shape_signature; ... }
		b.StartObject(8)
		b.PrependUOffsetTSlot(0, shapeVec, 0)
		b.PrependUint32Slot(2, t.buffer, 0)
		b.PrependUOffsetTSlot(3, name, 0)
		if t.dynBat {
			b.PrependUOffsetTSlot(7, sigVec, 0)
		}
		if t.quant != nil {
			b.PrependUOffsetTSlot(4, quant, 0)
		}
		b.PrependInt8Slot(1, t.typ, 0)
		tens[i] = b.EndObject()
	}

	// Operators.
	ops := make([]flatbuffers.UOffsetT, len(w.ops))
	for i, o := range w.ops {
		ins := int32Vector(b, o.inputs)
		outs := int32Vector(b, o.outputs)
		var opts flatbuffers.UOffsetT
		if o.opts != nil {
			opts = o.opts.build(b)
		}
		// table Operator { opcode_index:uint; inputs; outputs;
		//   builtin_options (type slot 3, value slot 4); ... }
		b.StartObject(5)
		b.PrependUint32Slot(0, uint32(w.codes[o.code]), 0)
		b.PrependUOffsetTSlot(1, ins, 0)
		b.PrependUOffsetTSlot(2, outs, 0)
		if o.opts != nil {
			b.PrependUOffsetTSlot(4, opts, 0)
			b.PrependUint8Slot(3, o.opts.unionType(), 0)
		}
		ops[i] = b.EndObject()
	}

	tensorsVec := tableVector(b, tens)
	inputsVec := int32Vector(b, []int32{input})
	outputsVec := int32Vector(b, []int32{output})
	opsVec := tableVector(b, ops)
	sgName := b.CreateString("main")
	// table SubGraph { tensors; inputs; outputs; operators; name }
	subgraph := offsetTable(b, tensorsVec, inputsVec, outputsVec, opsVec, sgName)

	// Operator codes: deprecated_builtin_code (a byte, for readers before
	// the extended codes) and builtin_code (int32) both hold the code.
	codes := make([]flatbuffers.UOffsetT, len(w.codeList))
	for i, c := range w.codeList {
		// table OperatorCode { deprecated_builtin_code:byte; custom_code;
		//   version:int = 1; builtin_code:BuiltinOperator }
		b.StartObject(4)
		b.PrependInt32Slot(3, c.builtin, 0)
		b.PrependInt32Slot(2, c.version, 1)
		b.PrependInt8Slot(0, int8(min(c.builtin, 127)), 0)
		codes[i] = b.EndObject()
	}

	codesVec := tableVector(b, codes)
	subgraphsVec := tableVector(b, []flatbuffers.UOffsetT{subgraph})
	desc := b.CreateString(description)
	buffersVec := tableVector(b, bufs)
	// table Model { version:uint; operator_codes; subgraphs; description;
	//   buffers; ... }
	b.StartObject(5)
	b.PrependUint32Slot(0, schemaVersion, 0)
	for i, off := range []flatbuffers.UOffsetT{codesVec, subgraphsVec, desc, buffersVec} {
		b.PrependUOffsetTSlot(i+1, off, 0)
	}
	model := b.EndObject()
	b.FinishWithFileIdentifier(model, []byte("TFL3"))
	return slices.Clone(b.FinishedBytes())
}

// offsetTable writes a table whose fields are the offsets offs, in slot
// order, and returns it.
func offsetTable(b *flatbuffers.Builder, offs ...flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	b.StartObject(len(offs))
	for i, off := range offs {
		b.PrependUOffsetTSlot(i, off, 0)
	}
	return b.EndObject()
}
