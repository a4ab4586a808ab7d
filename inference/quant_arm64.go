//go:build cgo && arm64

package inference

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lm
#include <math.h>
#include <stdint.h>

// The window quantizer and dequantizer on arm64, in C so that the
// compiler vectorizes them with NEON (roundf is FRINTA, fmaxf FMAXNM): in Go
// they cost more instructions per window than the int8 model itself. On
// amd64 without SSE4.1 roundf is a library call, and the Go loops of
// quant_other.go are faster. round(x / scale) rounds halves away
// from zero (roundf), as TFLite's QUANTIZE does; the result plus the zero
// point is clamped to [lo, hi] and every value that had to be clamped
// (a NaN included: it becomes lo) is counted.
#define VIGIL_QUANT(NAME, T) \
static int NAME(const float* src, T* dst, int n, float scale, float zp, float lo, float hi) { \
	int clamped = 0; \
	for (int i = 0; i < n; i++) { \
		float q = roundf(src[i] / scale) + zp; \
		float c = fminf(fmaxf(q, lo), hi); \
		clamped += !(q == c); \
		dst[i] = (T)c; \
	} \
	return clamped; \
}
VIGIL_QUANT(vigil_quantize_i8, int8_t)
VIGIL_QUANT(vigil_quantize_u8, uint8_t)
VIGIL_QUANT(vigil_quantize_i16, int16_t)

#define VIGIL_DEQUANT(NAME, T) \
static void NAME(const T* src, float* dst, int n, float scale, int32_t zp) { \
	for (int i = 0; i < n; i++) dst[i] = scale * (float)((int32_t)src[i] - zp); \
}
VIGIL_DEQUANT(vigil_dequantize_i8, int8_t)
VIGIL_DEQUANT(vigil_dequantize_u8, uint8_t)
VIGIL_DEQUANT(vigil_dequantize_i16, int16_t)
*/
import "C"

import (
	"unsafe"

	"github.com/mattn/go-tflite"
)

// put writes src into a tensor's data, quantized, and returns how many
// values were clamped to the type's range.
func (q *quant) put(data unsafe.Pointer, src []float32) int {
	if len(src) == 0 {
		return 0
	}
	s, n := (*C.float)(unsafe.Pointer(&src[0])), C.int(len(src))
	scale, zp, lo, hi := C.float(q.scale), C.float(q.zp), C.float(q.lo), C.float(q.hi)
	switch q.typ {
	case tflite.Int8:
		return int(C.vigil_quantize_i8(s, (*C.int8_t)(data), n, scale, zp, lo, hi))
	case tflite.UInt8:
		return int(C.vigil_quantize_u8(s, (*C.uint8_t)(data), n, scale, zp, lo, hi))
	case tflite.Int16:
		return int(C.vigil_quantize_i16(s, (*C.int16_t)(data), n, scale, zp, lo, hi))
	}
	copy(unsafe.Slice((*float32)(data), len(src)), src)
	return 0
}

// get reads a tensor's data into dst, dequantized.
func (q *quant) get(dst []float32, data unsafe.Pointer) {
	if len(dst) == 0 {
		return
	}
	d, n := (*C.float)(unsafe.Pointer(&dst[0])), C.int(len(dst))
	scale, zp := C.float(q.scale), C.int32_t(q.zp)
	switch q.typ {
	case tflite.Int8:
		C.vigil_dequantize_i8((*C.int8_t)(data), d, n, scale, zp)
	case tflite.UInt8:
		C.vigil_dequantize_u8((*C.uint8_t)(data), d, n, scale, zp)
	case tflite.Int16:
		C.vigil_dequantize_i16((*C.int16_t)(data), d, n, scale, zp)
	default:
		copy(dst, unsafe.Slice((*float32)(data), len(dst)))
	}
}
