//go:build cgo && !arm64

package inference

import (
	"unsafe"

	"github.com/mattn/go-tflite"
)

// put writes src into a tensor's data, quantized, and returns how many
// values were clamped to the type's range (see quantize).
func (q *quant) put(data unsafe.Pointer, src []float32) int {
	switch q.typ {
	case tflite.Int8:
		return quantize(unsafe.Slice((*int8)(data), len(src)), src, q)
	case tflite.UInt8:
		return quantize(unsafe.Slice((*uint8)(data), len(src)), src, q)
	case tflite.Int16:
		return quantize(unsafe.Slice((*int16)(data), len(src)), src, q)
	}
	copy(unsafe.Slice((*float32)(data), len(src)), src)
	return 0
}

// get reads a tensor's data into dst, dequantized.
func (q *quant) get(dst []float32, data unsafe.Pointer) {
	switch q.typ {
	case tflite.Int8:
		dequantize(dst, unsafe.Slice((*int8)(data), len(dst)), q)
	case tflite.UInt8:
		dequantize(dst, unsafe.Slice((*uint8)(data), len(dst)), q)
	case tflite.Int16:
		dequantize(dst, unsafe.Slice((*int16)(data), len(dst)), q)
	default:
		copy(dst, unsafe.Slice((*float32)(data), len(dst)))
	}
}
