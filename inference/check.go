package inference

import (
	"encoding/binary"
	"fmt"
)

// checkModel walks a TFLite flatbuffer and checks what TFLite 2.9's
// interpreter builder trusts without checking: that every index (operator
// code, tensor, buffer) points inside its vector, that tensor types are known
// and shapes sane, and that constant data matches its tensor's size. TFLite's
// own verifier checks only the flatbuffer's structure, and fuzzing found
// models that pass it and then crash the builder.
//
// checkModel reads the bytes defensively itself (every offset is bounds
// checked), so it is safe on any input.
func checkModel(b []byte) (err error) {
	r := fbReader{b: b}
	defer asInvalidModel(&err)
	root := r.root()
	codes := r.vector(root, 1)
	subgraphs := r.vector(root, 2)
	buffers := r.vector(root, 4)
	if subgraphs.n == 0 {
		return fmt.Errorf("%w: no subgraph", ErrInvalidModel)
	}
	if buffers.n == 0 {
		return fmt.Errorf("%w: no buffers (buffer 0 must exist)", ErrInvalidModel)
	}
	for i := 0; i < codes.n; i++ {
		c := r.tableAt(codes, i)
		code := int(r.int32Field(c, 3, 0))
		if dep := int(int8(r.uint8Field(c, 0, 0))); dep > code {
			code = dep
		}
		if code < 0 || code > 200 {
			return fmt.Errorf("%w: operator code %d has builtin code %d", ErrInvalidModel, i, code)
		}
	}
	for s := 0; s < subgraphs.n; s++ {
		sg := r.tableAt(subgraphs, s)
		tensors := r.vector(sg, 0)
		for i := 0; i < tensors.n; i++ {
			t := r.tableAt(tensors, i)
			typ := int(r.uint8Field(t, 1, 0))
			size, ok := elemSize[typ]
			if !ok {
				return fmt.Errorf("%w: subgraph %d tensor %d has unknown type %d", ErrInvalidModel, s, i, typ)
			}
			shape := r.vector(t, 0)
			if shape.n > 8 {
				return fmt.Errorf("%w: subgraph %d tensor %d has %d dimensions", ErrInvalidModel, s, i, shape.n)
			}
			elems := int64(1)
			for d := 0; d < shape.n; d++ {
				dim := int64(int32(r.u32(shape.at(d, 4))))
				if dim < -1 || dim > 1<<24 {
					return fmt.Errorf("%w: subgraph %d tensor %d has dimension %d", ErrInvalidModel, s, i, dim)
				}
				if dim > 0 {
					elems *= dim
				}
				if elems > 1<<28 {
					return fmt.Errorf("%w: subgraph %d tensor %d is too large", ErrInvalidModel, s, i)
				}
			}
			buf := int(r.u32Field(t, 2, 0))
			if buf >= buffers.n {
				return fmt.Errorf("%w: subgraph %d tensor %d uses buffer %d of %d", ErrInvalidModel, s, i, buf, buffers.n)
			}
			if data := r.vector(r.tableAt(buffers, buf), 0); data.n > 0 && size > 0 && int64(data.n) != elems*int64(size) {
				return fmt.Errorf("%w: subgraph %d tensor %d holds %d bytes of data, its shape needs %d",
					ErrInvalidModel, s, i, data.n, elems*int64(size))
			}
		}
		checkIdx := func(what string, v fbVector, optional bool) error {
			for k := 0; k < v.n; k++ {
				x := int(int32(r.u32(v.at(k, 4))))
				if (x == -1 && optional) || (x >= 0 && x < tensors.n) {
					continue
				}
				return fmt.Errorf("%w: subgraph %d %s refers to tensor %d of %d", ErrInvalidModel, s, what, x, tensors.n)
			}
			return nil
		}
		if err := checkIdx("input", r.vector(sg, 1), false); err != nil {
			return err
		}
		if err := checkIdx("output", r.vector(sg, 2), false); err != nil {
			return err
		}
		ops := r.vector(sg, 3)
		for o := 0; o < ops.n; o++ {
			op := r.tableAt(ops, o)
			if idx := int(r.u32Field(op, 0, 0)); idx >= codes.n {
				return fmt.Errorf("%w: subgraph %d operator %d uses operator code %d of %d", ErrInvalidModel, s, o, idx, codes.n)
			}
			for f, what := range map[int]string{1: "input", 2: "output", 8: "intermediate"} {
				if err := checkIdx(fmt.Sprintf("operator %d %s", o, what), r.vector(op, f), f != 2); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// elemSize is the byte size of each TFLite tensor type (0: variable size).
var elemSize = map[int]int{
	0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 0, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 13: 0, 14: 0, 15: 4, 16: 2, 17: 1,
}

// fbError is what fbReader panics with when the bytes are malformed.
type fbError string

// asInvalidModel, deferred by a function that reads a model with fbReader,
// turns an fbReader panic into an error wrapping ErrInvalidModel in *err;
// any other panic goes on.
func asInvalidModel(err *error) {
	if p := recover(); p != nil {
		if e, ok := p.(fbError); ok {
			*err = fmt.Errorf("%w: %s", ErrInvalidModel, string(e))
			return
		}
		panic(p)
	}
}

type fbReader struct{ b []byte }

type fbVector struct {
	start, n int // byte offset of element 0, and the count
}

func (v fbVector) at(i, size int) int { return v.start + i*size }

func (r fbReader) fail(f string, a ...any) { panic(fbError(fmt.Sprintf(f, a...))) }

func (r fbReader) u32(off int) uint32 {
	if off < 0 || off+4 > len(r.b) {
		r.fail("offset %d outside the %d-byte model", off, len(r.b))
	}
	return binary.LittleEndian.Uint32(r.b[off:])
}

func (r fbReader) u16(off int) uint16 {
	if off < 0 || off+2 > len(r.b) {
		r.fail("offset %d outside the %d-byte model", off, len(r.b))
	}
	return binary.LittleEndian.Uint16(r.b[off:])
}

func (r fbReader) root() int { return int(r.u32(0)) }

// field returns the absolute offset of a table's field, or -1 when absent.
func (r fbReader) field(table, id int) int {
	vt := table - int(int32(r.u32(table)))
	vtLen := int(r.u16(vt))
	slot := 4 + 2*id
	if slot+2 > vtLen {
		return -1
	}
	o := int(r.u16(vt + slot))
	if o == 0 {
		return -1
	}
	return table + o
}

func (r fbReader) uint8Field(table, id int, def uint8) uint8 {
	f := r.field(table, id)
	if f < 0 {
		return def
	}
	if f >= len(r.b) {
		r.fail("field outside the model")
	}
	return r.b[f]
}

func (r fbReader) u32Field(table, id int, def uint32) uint32 {
	f := r.field(table, id)
	if f < 0 {
		return def
	}
	return r.u32(f)
}

func (r fbReader) int32Field(table, id int, def int32) int32 {
	return int32(r.u32Field(table, id, uint32(def)))
}

// vector returns a table's vector field (empty when absent).
func (r fbReader) vector(table, id int) fbVector {
	f := r.field(table, id)
	if f < 0 {
		return fbVector{}
	}
	v := f + int(r.u32(f))
	n := int(r.u32(v))
	if n < 0 || v+4+n > len(r.b) {
		r.fail("vector of %d elements outside the model", n)
	}
	return fbVector{start: v + 4, n: n}
}

// tableAt returns element i of a vector of tables.
func (r fbReader) tableAt(v fbVector, i int) int {
	off := v.at(i, 4)
	return off + int(r.u32(off))
}
