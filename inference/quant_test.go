//go:build cgo

package inference

import (
	"context"
	"fmt"
	"math"
	"testing"
	"unsafe"

	"github.com/mattn/go-tflite"
	"github.com/vigil-edge/vigil/models/nn"
)

// int8Model is the float model of net quantized to full integer (int8
// input and output), calibrated on random normal windows.
func int8Model(t testing.TB, net *nn.Network) []byte {
	t.Helper()
	return quantizeInt8(t, net, randomInput(200*product(net.Input), 11))
}

// TestQuantizedTensors loads an int8 model: its tensors' types and
// quantization are reported, windows are quantized with clamping counted
// (a value far outside the calibration clamps; NaN is counted too) and
// outputs come back in real units.
func TestQuantizedTensors(t *testing.T) {
	net, _ := build(t, denseAE(6, 2), 3)
	s := mustLoad(t, int8Model(t, net), Options{Workers: 1})
	in, out := s.Input(), s.Output()
	if in.Type != "int8" || in.Scale <= 0 || out.Type != "int8" || out.Scale <= 0 {
		t.Fatalf("input %s, output %s", in, out)
	}
	x := randomInput(12, 5)
	got := make([]float32, 12)
	if err := s.Score(context.Background(), x, got); err != nil {
		t.Fatal(err)
	}
	for _, v := range got {
		// Every output is a whole number of output steps from the zero point.
		q := float64(v)/out.Scale + float64(out.ZeroPoint)
		if math.Abs(q-math.Round(q)) > 1e-3 || q < -128.001 || q > 127.001 {
			t.Fatalf("output %v is not on the int8 grid of scale %v zero point %d", v, out.Scale, out.ZeroPoint)
		}
	}
	if s.Clamped() != 0 {
		t.Fatalf("%d values clamped within the calibration range", s.Clamped())
	}
	total := ClampedTotal()
	x[0], x[5] = 1e6, float32(math.NaN())
	if err := s.Score(context.Background(), x, got); err != nil {
		t.Fatal(err)
	}
	if s.Clamped() != 2 || ClampedTotal()-total != 2 {
		t.Fatalf("clamped %d (total +%d), want 2", s.Clamped(), ClampedTotal()-total)
	}
}

// TestQuantizeRounding checks the window quantizer: round half away from
// zero, clamp to the type's range.
func TestQuantizeRounding(t *testing.T) {
	q := &quant{scale: 0.5, zp: -3, lo: -128, hi: 127}
	src := []float32{0, 0.25, -0.25, 0.74, 1000, -1000, 63.5}
	dst := make([]int8, len(src))
	if c := quantize(dst, src, q); c != 2 {
		t.Errorf("clamped %d, want 2", c)
	}
	want := []int8{-3, -2, -4, -2, 127, -128, 124}
	for i := range want {
		if dst[i] != want[i] {
			t.Errorf("quantize(%v) = %d, want %d", src[i], dst[i], want[i])
		}
	}
	back := make([]float32, len(dst))
	dequantize(back, dst, q)
	if back[1] != 0.5 || back[4] != 65 {
		t.Errorf("dequantize: %v", back)
	}
}

// TestQuantizerMatchesReference runs the C quantizer and dequantizer
// (quant.put, quant.get) and their Go references on the same values, for
// each integer type: the results and the clamped counts are equal.
func TestQuantizerMatchesReference(t *testing.T) {
	src := randomInput(5000, 4)
	for i := range src {
		src[i] *= 3
	}
	src = append(src, 0, 1e30, -1e30, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 0.015, -0.015, 0.045, 3.825, -3.855)
	check := func(name string, put func(*quant) (int, []float32), ref func(*quant) (int, []float32), q *quant) {
		c1, back1 := put(q)
		c2, back2 := ref(q)
		if c1 != c2 {
			t.Errorf("%s: C clamped %d, Go %d", name, c1, c2)
		}
		for i := range back1 {
			if back1[i] != back2[i] {
				t.Fatalf("%s: value %d (%v): C gives %v, Go %v", name, i, src[i], back1[i], back2[i])
			}
		}
	}
	for _, q := range []*quant{
		{typ: tflite.Int8, scale: 0.03, zp: -5, lo: -128, hi: 127},
		{typ: tflite.UInt8, scale: 0.03, zp: 128, lo: 0, hi: 255},
		{typ: tflite.Int16, scale: 1.0 / 4096, zp: 0, lo: -32768, hi: 32767},
	} {
		name := TypeName(int(q.typ))
		check(name, func(q *quant) (int, []float32) {
			buf := make([]byte, 2*len(src))
			c := q.put(unsafe.Pointer(&buf[0]), src)
			out := make([]float32, len(src))
			q.get(out, unsafe.Pointer(&buf[0]))
			return c, out
		}, func(q *quant) (int, []float32) {
			out := make([]float32, len(src))
			var c int
			switch q.typ {
			case tflite.Int8:
				d := make([]int8, len(src))
				c = quantize(d, src, q)
				dequantize(out, d, q)
			case tflite.UInt8:
				d := make([]uint8, len(src))
				c = quantize(d, src, q)
				dequantize(out, d, q)
			default:
				d := make([]int16, len(src))
				c = quantize(d, src, q)
				dequantize(out, d, q)
			}
			return c, out
		}, q)
	}
}

// BenchmarkScoreInt8 measures Score per window for the dense 60×8
// autoencoder of BenchmarkScore, float32 against its full-integer int8
// version, at batch 1 and 64.
func BenchmarkScoreInt8(b *testing.B) {
	net, float := build(b, denseAE(60, 8), 1)
	for _, m := range []struct {
		name  string
		model []byte
	}{{"float32", float}, {"int8", int8Model(b, net)}} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/batch=%d/score", m.name, batch), func(b *testing.B) {
				s := mustLoad(b, m.model, Options{Workers: 1})
				in := randomInput(batch*s.Spec().InputSize(), 1)
				out := make([]float32, batch*s.Spec().OutputSize())
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					if err := s.Score(ctx, in, out); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(batch), "ns/window")
				b.ReportMetric(float64(len(m.model)), "model-bytes")
			})
			b.Run(fmt.Sprintf("%s/batch=%d/bare-invoke", m.name, batch), func(b *testing.B) {
				s := mustLoad(b, m.model, Options{Workers: 1})
				in := randomInput(batch*s.Spec().InputSize(), 1)
				out := make([]float32, batch*s.Spec().OutputSize())
				s.Score(context.Background(), in, out) // leaves the interpreter at this batch
				it := s.all[0]
				for b.Loop() {
					if !bareInvoke(it) {
						b.Fatal("invoke failed")
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(batch), "ns/window")
			})
		}
	}
}

// BenchmarkQuantize measures the window quantizer (C) per value.
func BenchmarkQuantize(b *testing.B) {
	q := &quant{typ: tflite.Int8, scale: 0.03, zp: -5, lo: -128, hi: 127}
	src := randomInput(4096, 2)
	dst := make([]int8, len(src))
	for b.Loop() {
		q.put(unsafe.Pointer(&dst[0]), src)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(src)), "ns/value")
}
