package inference

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// ModelInfo describes a .tflite file as its flatbuffer declares it, read
// without the TFLite runtime (see Describe).
type ModelInfo struct {
	Size        int          `json:"size_bytes"`
	Version     int          `json:"schema_version"`
	Description string       `json:"description,omitempty"`
	Inputs      []TensorInfo `json:"inputs"`
	Outputs     []TensorInfo `json:"outputs"`
	// Operators lists the model's operator codes: each builtin (or custom
	// operator) and version, with how many nodes of the first subgraph use it.
	Operators []OpInfo `json:"operators"`
	// Params is the number of values held by constant tensors; ParamBytes
	// their size in bytes.
	Params     int `json:"params"`
	ParamBytes int `json:"param_bytes"`
	Subgraphs  int `json:"subgraphs"`
	Tensors    int `json:"tensors"`
	Nodes      int `json:"nodes"`
}

// TensorInfo is one tensor: its name, shape (with the batch dimension),
// element type and per-tensor quantization. Scale 0 means not quantized;
// a per-channel quantized tensor has Channels > 1 and its first scale here.
type TensorInfo struct {
	Name      string  `json:"name"`
	Shape     []int   `json:"shape"`
	Type      string  `json:"type"`
	Scale     float64 `json:"scale,omitempty"`
	ZeroPoint int64   `json:"zero_point,omitempty"`
	Channels  int     `json:"quantized_channels,omitempty"`
}

// Quantized reports whether the tensor has a quantization scale.
func (t TensorInfo) Quantized() bool { return t.Scale != 0 }

func (t TensorInfo) String() string {
	s := fmt.Sprintf("%s %v %s", t.Name, t.Shape, t.Type)
	if t.Quantized() {
		s += fmt.Sprintf(" scale=%g zero_point=%d", t.Scale, t.ZeroPoint)
		if t.Channels > 1 {
			s += fmt.Sprintf(" (per-channel, %d scales)", t.Channels)
		}
	}
	return s
}

// OpInfo is one operator code of a model.
type OpInfo struct {
	Builtin int    `json:"builtin_code"`
	Name    string `json:"name"`
	// Custom is the custom operator's name (Builtin is CUSTOM, 32).
	Custom  string `json:"custom,omitempty"`
	Version int    `json:"version"`
	Nodes   int    `json:"nodes"`
	// Supported says whether the linked runtime has this operator at this
	// version; Describe leaves it false, Inspect fills it in.
	Supported bool `json:"supported"`
}

func (o OpInfo) String() string {
	if o.Custom != "" {
		return fmt.Sprintf("custom operator %q version %d", o.Custom, o.Version)
	}
	return fmt.Sprintf("%s version %d", o.Name, o.Version)
}

// opCustom is BuiltinOperator CUSTOM.
const opCustom = 32

// TypeName is the name of a TFLite TensorType value.
func TypeName(t int) string {
	if t >= 0 && t < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type%d", t)
}

var typeNames = strings.Fields("float32 float16 int32 uint8 int64 string bool int16 complex64 int8 float64 complex128 uint64 resource variant uint32 uint16 int4")

// OpName is the name of a TFLite builtin operator code (schema.fbs enum
// BuiltinOperator), or BUILTIN_n for a code this table does not know.
func OpName(code int) string {
	if code >= 0 && code < len(opNames) {
		return opNames[code]
	}
	return fmt.Sprintf("BUILTIN_%d", code)
}

// opNames are the BuiltinOperator names by code, 0 to 158.
var opNames = strings.Fields(`ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE
DEQUANTIZE EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6
RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM
EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND
TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN
EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM
LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE
EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK
LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL
FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE
CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE
MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND
SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE
BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT
HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS
RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1
UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN`)

// sniff rejects bytes that cannot be a TFLite model before TFLite sees them:
// the flatbuffer needs a root offset and the "TFL3" file identifier.
func sniff(b []byte) error {
	switch {
	case len(b) == 0:
		return fmt.Errorf("%w: empty", ErrInvalidModel)
	case len(b) < 16:
		return fmt.Errorf("%w: %d bytes is too short for a TFLite flatbuffer", ErrInvalidModel, len(b))
	case string(b[4:8]) != "TFL3":
		return fmt.Errorf("%w: no TFL3 file identifier (got %q)", ErrInvalidModel, b[4:8])
	}
	return nil
}

// Describe reads a .tflite flatbuffer's operator codes, the first
// subgraph's input and output tensors and its constants, without the TFLite
// runtime. It checks every offset, so it is safe on any bytes: a malformed
// model is an error wrapping ErrInvalidModel. OpInfo.Supported is left
// false; see Inspect.
func Describe(b []byte) (_ *ModelInfo, err error) {
	if err := sniff(b); err != nil {
		return nil, err
	}
	r := fbReader{b: b}
	defer asInvalidModel(&err)
	root := r.root()
	info := &ModelInfo{Size: len(b), Version: int(r.u32Field(root, 0, 0))}
	info.Description = r.str(root, 3)
	codes := r.vector(root, 1)
	for i := 0; i < codes.n; i++ {
		info.Operators = append(info.Operators, r.opCode(r.tableAt(codes, i)))
	}
	subgraphs := r.vector(root, 2)
	buffers := r.vector(root, 4)
	info.Subgraphs = subgraphs.n
	if subgraphs.n == 0 {
		return nil, fmt.Errorf("%w: no subgraph", ErrInvalidModel)
	}
	sg := r.tableAt(subgraphs, 0)
	tensors := r.vector(sg, 0)
	info.Tensors = tensors.n
	tensorAt := func(idx int) TensorInfo {
		if idx < 0 || idx >= tensors.n {
			r.fail("tensor %d of %d", idx, tensors.n)
		}
		return r.tensor(r.tableAt(tensors, idx))
	}
	for i := 0; i < tensors.n; i++ {
		t := r.tableAt(tensors, i)
		buf := int(r.u32Field(t, 2, 0))
		if buf == 0 || buf >= buffers.n {
			continue
		}
		data := r.vector(r.tableAt(buffers, buf), 0)
		if data.n == 0 {
			continue
		}
		info.ParamBytes += data.n
		if size := elemSize[int(r.uint8Field(t, 1, 0))]; size > 0 {
			info.Params += data.n / size
		}
	}
	ins, outs := r.vector(sg, 1), r.vector(sg, 2)
	for k := 0; k < ins.n; k++ {
		info.Inputs = append(info.Inputs, tensorAt(int(int32(r.u32(ins.at(k, 4))))))
	}
	for k := 0; k < outs.n; k++ {
		info.Outputs = append(info.Outputs, tensorAt(int(int32(r.u32(outs.at(k, 4))))))
	}
	ops := r.vector(sg, 3)
	info.Nodes = ops.n
	for o := 0; o < ops.n; o++ {
		idx := int(r.u32Field(r.tableAt(ops, o), 0, 0))
		if idx >= len(info.Operators) {
			return nil, fmt.Errorf("%w: operator %d uses operator code %d of %d", ErrInvalidModel, o, idx, len(info.Operators))
		}
		info.Operators[idx].Nodes++
	}
	return info, nil
}

// opCode reads an OperatorCode table: deprecated_builtin_code (0),
// custom_code (1), version (2), builtin_code (3). Readers take the larger
// of the two codes, as the runtime does.
func (r fbReader) opCode(c int) OpInfo {
	code := int(r.int32Field(c, 3, 0))
	if dep := int(int8(r.uint8Field(c, 0, 0))); dep > code {
		code = dep
	}
	o := OpInfo{Builtin: code, Name: OpName(code), Version: int(r.int32Field(c, 2, 1))}
	if code == opCustom {
		o.Custom = r.str(c, 1)
	}
	return o
}

// tensor reads a Tensor table: shape (0), type (1), name (3),
// quantization (4: a QuantizationParameters table whose scale is field 2
// and zero_point field 3).
func (r fbReader) tensor(t int) TensorInfo {
	ti := TensorInfo{Name: r.str(t, 3), Type: TypeName(int(r.uint8Field(t, 1, 0)))}
	shape := r.vector(t, 0)
	if shape.n > 8 {
		r.fail("tensor %q has %d dimensions", ti.Name, shape.n)
	}
	ti.Shape = make([]int, shape.n)
	for d := range ti.Shape {
		ti.Shape[d] = int(int32(r.u32(shape.at(d, 4))))
	}
	if q := r.field(t, 4); q >= 0 {
		qt := q + int(r.u32(q))
		scales := r.vector4(qt, 2)
		zps := r.vector8(qt, 3)
		if scales.n > 0 {
			ti.Scale = float64(math.Float32frombits(r.u32(scales.at(0, 4))))
			ti.Channels = scales.n
		}
		if zps.n > 0 {
			ti.ZeroPoint = int64(binary.LittleEndian.Uint64(r.b[zps.start:]))
		}
	}
	return ti
}

// vector4 and vector8 return a vector of 4- or 8-byte scalars, checking that
// all of it lies inside the model.
func (r fbReader) vector4(table, id int) fbVector { return r.scalars(table, id, 4) }
func (r fbReader) vector8(table, id int) fbVector { return r.scalars(table, id, 8) }

func (r fbReader) scalars(table, id, size int) fbVector {
	v := r.vector(table, id)
	if v.n > 0 && (v.n > len(r.b)/size || v.start+v.n*size > len(r.b)) {
		r.fail("vector of %d %d-byte values outside the model", v.n, size)
	}
	return v
}

// str reads a string field (empty when absent).
func (r fbReader) str(table, id int) string {
	v := r.vector(table, id)
	if v.n > 256 {
		return string(r.b[v.start:v.start+256]) + "…"
	}
	return string(r.b[v.start : v.start+v.n])
}
