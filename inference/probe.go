//go:build cgo

package inference

/*
#include <stdlib.h>
#include <tensorflow/lite/c/c_api.h>

static void vigil_quiet(void* user_data, const char* format, va_list args) {}

// vigil_has_op reports whether the runtime's op resolver has every operator
// code of a model: the interpreter builder resolves each code first, even
// one that no node uses, and fails when one is missing.
static int vigil_has_op(const void* data, size_t size) {
	TfLiteModel* m = TfLiteModelCreate(data, size);
	if (m == NULL) return -1;
	TfLiteInterpreterOptions* o = TfLiteInterpreterOptionsCreate();
	TfLiteInterpreterOptionsSetErrorReporter(o, vigil_quiet, NULL);
	TfLiteInterpreter* it = TfLiteInterpreterCreate(m, o);
	int ok = it != NULL;
	if (it) TfLiteInterpreterDelete(it);
	TfLiteInterpreterOptionsDelete(o);
	TfLiteModelDelete(m);
	return ok;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"

	flatbuffers "github.com/google/flatbuffers/go"
)

// Inspect is Describe with OpInfo.Supported filled in from the linked
// runtime.
func Inspect(model []byte) (*ModelInfo, error) {
	info, err := Describe(model)
	if err != nil {
		return nil, err
	}
	for i := range info.Operators {
		info.Operators[i].Supported = Supported(info.Operators[i])
	}
	return info, nil
}

var probed sync.Map // [2]int{builtin, version} → bool

// Supported reports whether the linked TFLite runtime has the builtin
// operator op.Builtin at op.Version. It asks the runtime itself: it builds an
// interpreter for a model of that one operator code and no nodes. A custom
// operator is never supported (the runtime has none registered).
func Supported(op OpInfo) bool {
	if op.Builtin == opCustom || op.Builtin < 0 || op.Version < 1 {
		return false
	}
	key := [2]int{op.Builtin, op.Version}
	if v, ok := probed.Load(key); ok {
		return v.(bool)
	}
	b := probeModel(int32(op.Builtin), int32(op.Version))
	p := C.CBytes(b)
	ok := C.vigil_has_op(p, C.size_t(len(b))) == 1
	C.free(p)
	probed.Store(key, ok)
	return ok
}

// ErrUnsupportedOp wraps the error of a model that uses an operator (or an
// operator version) the linked runtime lacks.
var ErrUnsupportedOp = errors.New("operator not in this TFLite runtime")

// checkOps refuses a model whose operator codes the runtime lacks, naming
// each such operator and version.
func checkOps(model []byte) error {
	info, err := Describe(model)
	if err != nil {
		return err
	}
	var missing []string
	for _, op := range info.Operators {
		if !Supported(op) {
			missing = append(missing, op.String())
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w: the model uses %s, which TFLite %s lacks (convert with an older converter, or for a newer version of an operator try the converter's settings that emit a lower one)",
		ErrInvalidModel, ErrUnsupportedOp, joinAnd(missing), Version())
}

func joinAnd(s []string) string {
	switch len(s) {
	case 1:
		return s[0]
	case 2:
		return s[0] + " and " + s[1]
	}
	out := ""
	for i, x := range s {
		if i == len(s)-1 {
			out += "and " + x
		} else {
			out += x + ", "
		}
	}
	return out
}

// probeModel is a model with one operator code and an empty subgraph.
func probeModel(code, version int32) []byte {
	b := flatbuffers.NewBuilder(256)
	b.StartObject(1)
	buf := b.EndObject()
	b.StartVector(4, 1, 4)
	b.PrependUOffsetT(buf)
	bufs := b.EndVector(1)

	empty := func() flatbuffers.UOffsetT { b.StartVector(4, 0, 4); return b.EndVector(0) }
	tensors, ins, outs, ops := empty(), empty(), empty(), empty()
	b.StartObject(5)
	b.PrependUOffsetTSlot(0, tensors, 0)
	b.PrependUOffsetTSlot(1, ins, 0)
	b.PrependUOffsetTSlot(2, outs, 0)
	b.PrependUOffsetTSlot(3, ops, 0)
	sg := b.EndObject()
	b.StartVector(4, 1, 4)
	b.PrependUOffsetT(sg)
	sgs := b.EndVector(1)

	b.StartObject(4)
	b.PrependInt32Slot(3, code, 0)
	b.PrependInt32Slot(2, version, 1)
	b.PrependInt8Slot(0, int8(min(code, 127)), 0)
	oc := b.EndObject()
	b.StartVector(4, 1, 4)
	b.PrependUOffsetT(oc)
	codes := b.EndVector(1)

	b.StartObject(5)
	b.PrependUint32Slot(0, 3, 0)
	b.PrependUOffsetTSlot(1, codes, 0)
	b.PrependUOffsetTSlot(2, sgs, 0)
	b.PrependUOffsetTSlot(4, bufs, 0)
	root := b.EndObject()
	b.FinishWithFileIdentifier(root, []byte("TFL3"))
	return b.FinishedBytes()
}
