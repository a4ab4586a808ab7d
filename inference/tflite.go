//go:build cgo

package inference

/*
#cgo linux LDFLAGS: -ltensorflowlite_c
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tensorflow/lite/c/c_api.h>

// vigil_report collects TFLite's error messages for one model or
// interpreter, so that a failure can say what TFLite said.
typedef struct {
	char msg[1024];
	size_t len;
} vigil_report;

static void vigil_reporter(void* user_data, const char* format, va_list args) {
	vigil_report* r = (vigil_report*)user_data;
	if (r->len + 3 >= sizeof(r->msg)) return;
	if (r->len > 0) {
		r->msg[r->len++] = ';';
		r->msg[r->len++] = ' ';
	}
	int n = vsnprintf(r->msg + r->len, sizeof(r->msg) - r->len, format, args);
	if (n < 0) return;
	r->len += (size_t)n;
	if (r->len >= sizeof(r->msg)) r->len = sizeof(r->msg) - 1;
	r->msg[r->len] = 0;
}

static void vigil_set_reporter(void* options, vigil_report* r) {
	TfLiteInterpreterOptionsSetErrorReporter((TfLiteInterpreterOptions*)options, vigil_reporter, r);
}

// The XNNPACK delegate is exported by the 2.9 runtime, whose package ships no
// header for it. Its options struct in 2.9 is {int32 num_threads; uint32 flags}.
typedef struct {
	int32_t num_threads;
	uint32_t flags;
} vigil_xnnpack_options;

TfLiteDelegate* TfLiteXNNPackDelegateCreate(const vigil_xnnpack_options* options);
void TfLiteXNNPackDelegateDelete(TfLiteDelegate* delegate);

static TfLiteDelegate* vigil_xnnpack_create(int threads) {
	vigil_xnnpack_options o;
	memset(&o, 0, sizeof(o));
	o.num_threads = threads;
	return TfLiteXNNPackDelegateCreate(&o);
}

static TfLiteStatus vigil_invoke(void* interpreter) {
	return TfLiteInterpreterInvoke((TfLiteInterpreter*)interpreter);
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/mattn/go-tflite"
)

// Version is the version string of the linked TensorFlow Lite runtime.
func Version() string { return C.GoString(C.TfLiteVersion()) }

// Options configure a TFLite scorer. The zero value of a field means its
// default (see DefaultOptions).
type Options struct {
	// Workers is the number of interpreters in the pool: at most this many
	// Score calls run at once. Default: the number of CPUs.
	Workers int
	// Threads is the number of threads each interpreter may use. Default 1:
	// Vigil gets parallelism from the pool, not from each interpreter.
	Threads int
	// XNNPACK applies TFLite's XNNPACK delegate to every interpreter.
	XNNPACK bool
	// MaxBatch is the most windows given to one Invoke; a larger Score call
	// is split into chunks. Default 256.
	MaxBatch int
	// Expect, when set, is the spec the caller (the model manifest) declares;
	// a model whose tensors differ is refused with an error saying how.
	Expect *Spec
}

// DefaultOptions returns the defaults: one interpreter per CPU, one thread
// each, no delegate, batches of at most 256 windows.
func DefaultOptions() Options {
	return Options{Workers: runtime.NumCPU(), Threads: 1, MaxBatch: 256}
}

func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	if o.Workers < 0 {
		return o, fmt.Errorf("inference: Options.Workers is %d, want ≥ 0", o.Workers)
	}
	if o.Threads < 0 {
		return o, fmt.Errorf("inference: Options.Threads is %d, want ≥ 0", o.Threads)
	}
	if o.MaxBatch < 0 {
		return o, fmt.Errorf("inference: Options.MaxBatch is %d, want ≥ 0", o.MaxBatch)
	}
	if o.Workers == 0 {
		o.Workers = d.Workers
	}
	if o.Threads == 0 {
		o.Threads = d.Threads
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = d.MaxBatch
	}
	return o, nil
}

// TFLite is a Scorer backed by TensorFlow Lite. It holds one model and a pool
// of interpreters; each interpreter is used by one goroutine at a time.
type TFLite struct {
	spec       Spec
	inQ, outQ  quant // the input and output tensors' types and quantization
	clamped    atomic.Uint64
	maxBatch   int
	fixedBatch bool // the model cannot be resized past batch 1

	data   unsafe.Pointer // C copy of the model bytes; TFLite reads it in place
	model  *tflite.Model
	report *C.vigil_report

	pool    chan *interp
	all     []*interp
	closed  atomic.Bool
	closeMu sync.Once
}

type interp struct {
	it       *tflite.Interpreter
	raw      unsafe.Pointer // the C TfLiteInterpreter, for the bare invoke
	delegate unsafe.Pointer // XNNPACK delegate, deleted after the interpreter
	report   *C.vigil_report
	in, out  *tflite.Tensor
	batch    int
	dims     []int32
}

// LoadFile reads a .tflite file and loads it with Load.
func LoadFile(path string, opts Options) (*TFLite, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	s, err := Load(b, opts)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return s, nil
}

// Load builds a scorer from the bytes of a .tflite model. The model must have
// one float32 input of shape [batch, ...] and one float32 output of shape
// [batch, ...]; with opts.Expect set, the per-window shapes must equal it.
func Load(model []byte, opts Options) (_ *TFLite, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := sniff(model); err != nil {
		return nil, err
	}
	s := &TFLite{maxBatch: opts.MaxBatch}
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	s.report = (*C.vigil_report)(C.calloc(1, C.size_t(unsafe.Sizeof(C.vigil_report{}))))
	s.data = C.CBytes(model)
	m := C.TfLiteModelCreate(s.data, C.size_t(len(model)))
	if m == nil {
		return nil, fmt.Errorf("%w: not a valid TFLite flatbuffer", ErrInvalidModel)
	}
	s.model = wrapModel(unsafe.Pointer(m))
	if err := checkModel(model); err != nil {
		return nil, err
	}
	if err := checkOps(model); err != nil {
		return nil, err
	}

	first, err := s.newInterp(opts)
	if err != nil {
		return nil, err
	}
	s.all = append(s.all, first)
	if s.spec, err = specOf(first); err != nil {
		return nil, err
	}
	if s.inQ, err = quantOf(first.in, "input"); err != nil {
		return nil, err
	}
	if s.outQ, err = quantOf(first.out, "output"); err != nil {
		return nil, err
	}
	if opts.Expect != nil && !opts.Expect.Equal(s.spec) {
		return nil, fmt.Errorf("%w: %s", ErrInvalidModel, describeMismatch(*opts.Expect, s.spec))
	}
	// A model that bakes batch 1 into a constant (a RESHAPE to [1, n], say)
	// cannot be resized; score it one window at a time.
	if err := first.resize(2, s.spec); err != nil {
		s.fixedBatch = true
		if err := first.resize(1, s.spec); err != nil {
			return nil, err
		}
	}
	for i := 1; i < opts.Workers; i++ {
		it, err := s.newInterp(opts)
		if err != nil {
			return nil, err
		}
		s.all = append(s.all, it)
	}
	s.pool = make(chan *interp, len(s.all))
	for _, it := range s.all {
		s.pool <- it
	}
	return s, nil
}

func (s *TFLite) newInterp(opts Options) (_ *interp, err error) {
	it := &interp{}
	it.report = (*C.vigil_report)(C.calloc(1, C.size_t(unsafe.Sizeof(C.vigil_report{}))))
	defer func() {
		if err != nil {
			it.release()
		}
	}()
	o := tflite.NewInterpreterOptions()
	if o == nil {
		return nil, errors.New("inference: TfLiteInterpreterOptionsCreate failed")
	}
	defer o.Delete() // the interpreter keeps what it needs from the options
	o.SetNumThread(opts.Threads)
	C.vigil_set_reporter(optionsPtr(o), it.report)
	if opts.XNNPACK {
		it.delegate = unsafe.Pointer(C.vigil_xnnpack_create(C.int(opts.Threads)))
		if it.delegate == nil {
			return nil, errors.New("inference: creating the XNNPACK delegate failed")
		}
		o.AddDelegate(rawDelegate{it.delegate})
	}
	it.it = tflite.NewInterpreter(s.model, o)
	if it.it == nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidModel, it.reported("TfLiteInterpreterCreate failed"))
	}
	it.raw = interpreterPtr(it.it)
	if n := it.it.GetInputTensorCount(); n != 1 {
		return nil, fmt.Errorf("%w: model has %d input tensors, want 1", ErrInvalidModel, n)
	}
	if st := it.it.AllocateTensors(); st != tflite.OK {
		return nil, fmt.Errorf("%w: allocating tensors: %s", ErrInvalidModel, it.reported("AllocateTensors failed"))
	}
	if n := it.it.GetOutputTensorCount(); n != 1 {
		return nil, fmt.Errorf("%w: model has %d output tensors, want 1", ErrInvalidModel, n)
	}
	it.in = it.it.GetInputTensor(0)
	it.out = it.it.GetOutputTensor(0)
	if it.in == nil || it.out == nil {
		return nil, fmt.Errorf("%w: missing input or output tensor", ErrInvalidModel)
	}
	it.batch = it.in.Dim(0)
	if s.spec.Input != nil {
		// Later interpreters start at the batch size the first one settled on.
		if err := it.resize(1, s.spec); err != nil {
			return nil, err
		}
	}
	return it, nil
}

func (it *interp) reported(fallback string) string {
	if it.report == nil || it.report.len == 0 {
		return fallback
	}
	msg := C.GoStringN(&it.report.msg[0], C.int(it.report.len))
	it.report.len = 0
	return msg
}

func specOf(it *interp) (Spec, error) {
	in, out := dims(it.in), dims(it.out)
	if len(in) < 2 {
		return Spec{}, fmt.Errorf("%w: input tensor has shape %v, want [batch, ...]", ErrInvalidModel, in)
	}
	if len(out) < 1 {
		return Spec{}, fmt.Errorf("%w: output tensor has shape %v, want [batch, ...]", ErrInvalidModel, out)
	}
	if in[0] != 1 {
		return Spec{}, fmt.Errorf("%w: input batch dimension is %d, want 1 in the stored model", ErrInvalidModel, in[0])
	}
	spec := Spec{Input: in[1:], Output: out[1:]}
	if len(spec.Output) == 0 {
		spec.Output = []int{1} // [batch] outputs one score per window
	}
	for _, d := range append(append([]int{}, spec.Input...), spec.Output...) {
		if d <= 0 {
			return Spec{}, fmt.Errorf("%w: tensor shape %s has a non-positive dimension", ErrInvalidModel, spec)
		}
	}
	return spec, nil
}

func dims(t *tflite.Tensor) []int {
	d := make([]int, t.NumDims())
	for i := range d {
		d[i] = t.Dim(i)
	}
	return d
}

func describeMismatch(want, got Spec) string {
	switch {
	case !equalInts(want.Input, got.Input) && !equalInts(want.Output, got.Output):
		return fmt.Sprintf("input shape is %v and output shape is %v, manifest declares %v and %v", got.Input, got.Output, want.Input, want.Output)
	case !equalInts(want.Input, got.Input):
		return fmt.Sprintf("input shape is %v, manifest declares %v", got.Input, want.Input)
	default:
		return fmt.Sprintf("output shape is %v, manifest declares %v", got.Output, want.Output)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// resize sets the interpreter's batch size to n windows.
func (it *interp) resize(n int, spec Spec) error {
	if n == it.batch {
		return nil
	}
	it.dims = it.dims[:0]
	it.dims = append(it.dims, int32(n))
	for _, d := range spec.Input {
		it.dims = append(it.dims, int32(d))
	}
	if st := it.it.ResizeInputTensor(0, it.dims); st != tflite.OK {
		it.batch = -1
		return fmt.Errorf("%w: resizing input to batch %d: %s", ErrInvalidModel, n, it.reported("ResizeInputTensor failed"))
	}
	if st := it.it.AllocateTensors(); st != tflite.OK {
		it.batch = -1
		return fmt.Errorf("%w: batch %d: %s", ErrInvalidModel, n, it.reported("AllocateTensors failed"))
	}
	// The output tensor must now hold n outputs of the spec's size.
	if got := int(it.out.ByteSize()) / max(1, elemBytes(it.out.Type())); got != n*spec.OutputSize() {
		it.batch = -1
		return fmt.Errorf("%w: at batch %d the output holds %d values, want %d", ErrInvalidModel, n, got, n*spec.OutputSize())
	}
	it.batch = n
	return nil
}

// Spec returns the model's per-window input and output shapes.
func (s *TFLite) Spec() Spec { return s.spec }

// Workers is the number of interpreters in the pool.
func (s *TFLite) Workers() int { return len(s.all) }

// Score implements Scorer. It waits for a free interpreter (or ctx), then
// runs the windows through it in chunks of at most MaxBatch. In steady state
// (the same batch size as the previous call) it allocates nothing.
func (s *TFLite) Score(ctx context.Context, in, out []float32) error {
	n, err := batchSize(s.spec, in, out)
	if err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	var it *interp
	select {
	case it = <-s.pool:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { s.pool <- it }()
	if s.closed.Load() {
		return ErrClosed
	}
	chunk := s.maxBatch
	if s.fixedBatch {
		chunk = 1
	}
	is, os := s.spec.InputSize(), s.spec.OutputSize()
	for start := 0; start < n; start += chunk {
		b := min(chunk, n-start)
		if err := it.resize(b, s.spec); err != nil {
			return err
		}
		if c := s.inQ.put(it.in.Data(), in[start*is:(start+b)*is]); c > 0 {
			s.clamped.Add(uint64(c))
			clampedTotal.Add(uint64(c))
		}
		if st := it.it.Invoke(); st != tflite.OK {
			return fmt.Errorf("inference: invoke: %s", it.reported("Invoke failed"))
		}
		s.outQ.get(out[start*os:(start+b)*os], it.out.Data())
	}
	return nil
}

// Input describes the model's input tensor (at batch 1) and Output its
// output tensor: type and quantization.
func (s *TFLite) Input() TensorInfo { return s.inQ.info }

// Output describes the model's output tensor; see Input.
func (s *TFLite) Output() TensorInfo { return s.outQ.info }

// Clamped is the number of input values this scorer has clamped to its
// quantized input type's range since it was loaded.
func (s *TFLite) Clamped() uint64 { return s.clamped.Load() }

// quant is a tensor's element type and affine quantization: real =
// scale × (q − zeroPoint).
type quant struct {
	typ    tflite.TensorType
	scale  float32
	zp     int32
	lo, hi int32
	info   TensorInfo
}

func elemBytes(t tflite.TensorType) int {
	switch t {
	case tflite.Float32:
		return 4
	case tflite.Int8, tflite.UInt8:
		return 1
	case tflite.Int16:
		return 2
	}
	return 0
}

// quantOf reads a tensor's type and quantization: float32 as it is; int8,
// uint8 and int16 need a per-tensor scale.
func quantOf(t *tflite.Tensor, what string) (quant, error) {
	q := quant{typ: t.Type()}
	p := t.QuantizationParams()
	q.info = TensorInfo{Name: t.Name(), Shape: dims(t), Type: TypeName(int(t.Type()))}
	switch q.typ {
	case tflite.Float32:
		return q, nil
	case tflite.Int8:
		q.lo, q.hi = math.MinInt8, math.MaxInt8
	case tflite.UInt8:
		q.lo, q.hi = 0, math.MaxUint8
	case tflite.Int16:
		q.lo, q.hi = math.MinInt16, math.MaxInt16
	default:
		return q, fmt.Errorf("%w: %s tensor %q is %s, want float32, int8, uint8 or int16", ErrInvalidModel, what, t.Name(), q.info.Type)
	}
	if !(p.Scale > 0) || math.IsInf(p.Scale, 0) {
		return q, fmt.Errorf("%w: %s tensor %q is %s without a per-tensor quantization scale (scale %v)", ErrInvalidModel, what, t.Name(), q.info.Type, p.Scale)
	}
	if zp := int32(p.ZeroPoint); zp < q.lo || zp > q.hi {
		return q, fmt.Errorf("%w: %s tensor %q has zero point %d outside %s", ErrInvalidModel, what, t.Name(), p.ZeroPoint, q.info.Type)
	}
	q.scale, q.zp = float32(p.Scale), int32(p.ZeroPoint)
	q.info.Scale, q.info.ZeroPoint = p.Scale, int64(p.ZeroPoint)
	return q, nil
}

// quantize is the window quantizer (quant.put) on amd64 and the Go
// reference of the C one on arm64 (quant_arm64.go): it
// rounds each x/scale to the nearest integer (halves away from zero, as
// TFLite's QUANTIZE does), adds the zero point and clamps to the type's
// range, counting every clamped value. A NaN becomes the type's lowest
// value and is counted.
func quantize[T int8 | uint8 | int16](dst []T, src []float32, q *quant) (clamped int) {
	// The range of round(x/scale), before the zero point is added.
	lo, hi := float64(q.lo-q.zp)-0.5, float64(q.hi-q.zp)+0.5
	scale, zp := q.scale, q.zp
	dst = dst[:len(src)]
	for i, x := range src {
		r := float64(x / scale)
		if r > lo && r < hi {
			// Rounds half away from zero: r ± 0.5 is exact in float64
			// and the conversion truncates toward zero.
			dst[i] = T(int32(r+math.Copysign(0.5, r)) + zp)
			continue
		}
		clamped++
		switch {
		case r <= lo:
			dst[i] = T(q.lo)
		case r >= hi:
			dst[i] = T(q.hi)
		default: // NaN
			dst[i] = T(q.lo)
		}
	}
	return clamped
}

// dequantize is the Go reference of quant.get.
func dequantize[T int8 | uint8 | int16](dst []float32, src []T, q *quant) {
	for i, v := range src {
		dst[i] = q.scale * float32(int32(v)-q.zp)
	}
}

// Close waits for running Score calls, then deletes every interpreter
// before the model it was built from. It is idempotent.
func (s *TFLite) Close() error {
	s.closeMu.Do(func() {
		s.closed.Store(true)
		for range s.all {
			<-s.pool
		}
		s.release()
	})
	return nil
}

func (s *TFLite) release() {
	for _, it := range s.all {
		it.release()
	}
	s.all = nil
	if s.model != nil {
		s.model.Delete()
		s.model = nil
	}
	if s.data != nil {
		C.free(s.data)
		s.data = nil
	}
	if s.report != nil {
		C.free(unsafe.Pointer(s.report))
		s.report = nil
	}
}

func (it *interp) release() {
	if it.it != nil {
		it.it.Delete()
		it.it = nil
	}
	if it.delegate != nil {
		C.TfLiteXNNPackDelegateDelete((*C.TfLiteDelegate)(it.delegate))
		it.delegate = nil
	}
	if it.report != nil {
		C.free(unsafe.Pointer(it.report))
		it.report = nil
	}
}

// rawDelegate lets a delegate created here be added through go-tflite.
type rawDelegate struct{ p unsafe.Pointer }

func (d rawDelegate) Delete()             {}
func (d rawDelegate) Ptr() unsafe.Pointer { return d.p }

// bareInvoke calls TfLiteInterpreterInvoke directly, bypassing go-tflite and
// this package. The benchmarks use it to measure Go's overhead.
func bareInvoke(it *interp) bool { return C.vigil_invoke(it.raw) == C.kTfLiteOk }
