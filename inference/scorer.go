// Package inference runs anomaly-detection models. It defines the Scorer
// interface, which has no cgo in it, and a TensorFlow Lite implementation
// over github.com/mattn/go-tflite (see tflite.go) with a pool of interpreters,
// tensor validation against a declared Spec, and zero-allocation scoring.
//
// inference depends on nothing else in Vigil, so it can be used on its own.
package inference

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
)

// Scorer scores windows with a model. Implementations are safe for
// concurrent use.
type Scorer interface {
	// Score runs the model on a batch of windows. in holds n windows laid
	// out back to back, each Spec().InputSize() float32s in row-major order;
	// out receives n outputs of Spec().OutputSize() float32s each. n is
	// len(in)/InputSize() and must match len(out)/OutputSize().
	Score(ctx context.Context, in, out []float32) error
	// Spec describes the model's input and output per window.
	Spec() Spec
	// Close releases the model. It is idempotent; Score after Close fails
	// with ErrClosed.
	Close() error
}

var clampedTotal atomic.Uint64

// ClampedTotal is the number of input values every quantized scorer in the
// process has clamped to its input type's range: values outside what the
// model was calibrated on (vigil_inference_clamped_total). Models with a
// float input that quantize inside the graph clamp there, uncounted.
func ClampedTotal() uint64 { return clampedTotal.Load() }

// ErrClosed is returned by Score on a closed Scorer.
var ErrClosed = errors.New("inference: scorer closed")

// ErrInvalidModel wraps every error about a model that cannot be used: bytes
// that are not a TFLite flatbuffer, unsupported operators, or tensors that
// disagree with the declared Spec.
var ErrInvalidModel = errors.New("invalid model")

// Spec is the shape of one window's input and output, without the batch
// dimension: a window of 60 samples of 8 channels is Input []int{60, 8}.
// Element types are float32.
type Spec struct {
	Input  []int
	Output []int
}

// InputSize is the number of float32 values in one input window.
func (s Spec) InputSize() int { return product(s.Input) }

// OutputSize is the number of float32 values in one output.
func (s Spec) OutputSize() int { return product(s.Output) }

// Equal reports whether two specs have the same shapes.
func (s Spec) Equal(o Spec) bool {
	return slices.Equal(s.Input, o.Input) && slices.Equal(s.Output, o.Output)
}

func (s Spec) String() string { return fmt.Sprintf("input %v output %v", s.Input, s.Output) }

func product(dims []int) int {
	if len(dims) == 0 {
		return 0
	}
	n := 1
	for _, d := range dims {
		n *= d
	}
	return n
}

// batchSize checks the lengths of a Score call's buffers against spec and
// returns the number of windows.
func batchSize(spec Spec, in, out []float32) (int, error) {
	is, os := spec.InputSize(), spec.OutputSize()
	if is == 0 || os == 0 {
		return 0, fmt.Errorf("inference: empty spec %v", spec)
	}
	if len(in) == 0 || len(in)%is != 0 {
		return 0, fmt.Errorf("inference: input has %d values, want a positive multiple of %d (%v)", len(in), is, spec.Input)
	}
	n := len(in) / is
	if len(out) != n*os {
		return 0, fmt.Errorf("inference: output buffer has %d values, want %d for %d windows of %v", len(out), n*os, n, spec.Output)
	}
	return n, nil
}
