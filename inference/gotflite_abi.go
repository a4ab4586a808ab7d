//go:build cgo

package inference

import (
	"unsafe"

	"github.com/mattn/go-tflite"
)

// go-tflite v1.0.1 (the only version the module proxy serves) wraps each C
// object in a struct whose single field is the C pointer, and gives no way to
// build a wrapper from a pointer or read the pointer back. Two of its
// constructors cannot be used as they are:
//
//   - NewModel copies the model bytes with C.CBytes and never frees the copy,
//     so every load leaks the model's size;
//   - SetErrorReporter registers its callback in go-pointer's global table and
//     never releases it, and formats TFLite's va_list with asprintf, which
//     prints garbage.
//
// Vigil therefore creates the model itself (owning and freeing the bytes) and
// installs its own C error reporter, and crosses into go-tflite's types with
// the mirrors below. They depend on go-tflite v1.0.1's layout, which the
// module pin fixes; TestGoTFLiteLayout checks it.

type modelMirror struct{ m unsafe.Pointer }
type optionsMirror struct{ o unsafe.Pointer }
type interpreterMirror struct{ i unsafe.Pointer }

func wrapModel(p unsafe.Pointer) *tflite.Model {
	return (*tflite.Model)(unsafe.Pointer(&modelMirror{m: p}))
}

func optionsPtr(o *tflite.InterpreterOptions) unsafe.Pointer {
	return (*optionsMirror)(unsafe.Pointer(o)).o
}

func interpreterPtr(i *tflite.Interpreter) unsafe.Pointer {
	return (*interpreterMirror)(unsafe.Pointer(i)).i
}

func init() {
	// The mirrors must have the wrappers' size; a different go-tflite would
	// fail here, at start-up, rather than corrupt memory.
	if unsafe.Sizeof(tflite.Model{}) != unsafe.Sizeof(modelMirror{}) ||
		unsafe.Sizeof(tflite.InterpreterOptions{}) != unsafe.Sizeof(optionsMirror{}) ||
		unsafe.Sizeof(tflite.Interpreter{}) != unsafe.Sizeof(interpreterMirror{}) {
		panic("inference: go-tflite's wrapper layout is not v1.0.1's")
	}
}
