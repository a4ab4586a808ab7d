//go:build cgo

package inference

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/vigil-edge/vigil/models/nn"
)

func denseAE(window, channels int) *nn.Network {
	return &nn.Network{Input: []int{window, channels}, Layers: []nn.Layer{
		&nn.Dense{Units: 32, Act: nn.ReLU},
		&nn.Dense{Units: 8, Act: nn.Tanh},
		&nn.Dense{Units: 32, Act: nn.ReLU},
		&nn.Dense{Units: window * channels, Act: nn.Linear},
		&nn.Reshape{Shape: []int{window, channels}},
	}}
}

func convAE(window, channels int) *nn.Network {
	return &nn.Network{Input: []int{window, channels}, Layers: []nn.Layer{
		&nn.Conv1D{Filters: 32, Kernel: 7, Stride: 2, Padding: nn.Same, Act: nn.ReLU},
		&nn.Conv1D{Filters: 16, Kernel: 7, Stride: 2, Padding: nn.Same, Act: nn.ReLU},
		&nn.Upsample1D{Factor: 2},
		&nn.Conv1D{Filters: 32, Kernel: 7, Stride: 1, Padding: nn.Same, Act: nn.ReLU},
		&nn.Upsample1D{Factor: 2},
		&nn.Conv1D{Filters: channels, Kernel: 7, Stride: 1, Padding: nn.Same, Act: nn.Linear},
	}}
}

// build returns a randomly weighted network and its .tflite bytes.
func build(t testing.TB, net *nn.Network, seed uint64) (*nn.Network, []byte) {
	t.Helper()
	if err := net.Randomize(rand.New(rand.NewPCG(seed, seed+1))); err != nil {
		t.Fatal(err)
	}
	b, err := net.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return net, b
}

// mustLoad loads model into a scorer that is closed when the test ends.
func mustLoad(t testing.TB, model []byte, opts Options) *TFLite {
	t.Helper()
	s, err := Load(model, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func randomInput(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	in := make([]float32, n)
	for i := range in {
		in[i] = float32(r.NormFloat64())
	}
	return in
}

func assertClose(t *testing.T, got []float32, want []float64) {
	t.Helper()
	for i := range got {
		if d := math.Abs(float64(got[i])-want[i]) / math.Max(1, math.Abs(want[i])); d > 1e-5 || math.IsNaN(d) {
			t.Fatalf("output %d: TFLite %v, reference %v", i, got[i], want[i])
		}
	}
}

func TestScoreMatchesReferenceAtEveryBatchSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		net  *nn.Network
	}{{"dense", denseAE(12, 3)}, {"conv", convAE(16, 4)}} {
		net, model := build(t, tc.net, 1)
		s, err := Load(model, Options{Workers: 2, MaxBatch: 8})
		if err != nil {
			t.Fatal(err)
		}
		spec := s.Spec()
		if !spec.Equal(Spec{Input: net.Input, Output: net.Input}) {
			t.Fatalf("%s: spec %v, want input and output %v", tc.name, spec, net.Input)
		}
		// 1, then several, then more than MaxBatch (chunked), then 1 again.
		for _, n := range []int{1, 3, 8, 21, 1} {
			in := randomInput(n*spec.InputSize(), uint64(n))
			got := make([]float32, n*spec.OutputSize())
			if err := s.Score(context.Background(), in, got); err != nil {
				t.Fatalf("%s batch %d: %v", tc.name, n, err)
			}
			want := make([]float64, len(got))
			if err := net.Forward(in, want); err != nil {
				t.Fatal(err)
			}
			assertClose(t, got, want)
		}
		s.Close()
	}
}

func TestXNNPACKGivesTheSameResults(t *testing.T) {
	net, model := build(t, convAE(16, 4), 3)
	s := mustLoad(t, model, Options{Workers: 1, XNNPACK: true, Threads: 2})
	in := randomInput(4*s.Spec().InputSize(), 9)
	got := make([]float32, 4*s.Spec().OutputSize())
	if err := s.Score(context.Background(), in, got); err != nil {
		t.Fatal(err)
	}
	want := make([]float64, len(got))
	net.Forward(in, want)
	assertClose(t, got, want)
}

func TestLoadRejectsBadModels(t *testing.T) {
	_, good := build(t, denseAE(12, 3), 1)
	corrupt := append([]byte(nil), good...)
	for i := 8; i < len(corrupt); i += 7 {
		corrupt[i] ^= 0x5a
	}
	tests := []struct {
		name  string
		model []byte
		opts  Options
		want  string
	}{
		{"empty", nil, Options{}, "empty"},
		{"short", good[:10], Options{}, "too short"},
		{"not tflite", []byte("this is not a model at all, just text"), Options{}, "no TFL3 file identifier"},
		{"truncated", good[:len(good)/2], Options{}, "not a valid TFLite flatbuffer"},
		{"corrupted", corrupt, Options{}, "invalid model"},
		{"unsupported op", customOpModel(t), Options{}, "VigilNoSuchOp"},
		{"wrong input shape", good, Options{Expect: &Spec{Input: []int{60, 8}, Output: []int{12, 3}}}, "input shape is [12 3], manifest declares [60 8]"},
		{"wrong output shape", good, Options{Expect: &Spec{Input: []int{12, 3}, Output: []int{1}}}, "output shape is [12 3], manifest declares [1]"},
		{"bad options", good, Options{Workers: -1}, "Options.Workers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Load(tt.model, tt.opts)
			if err == nil {
				s.Close()
				t.Fatalf("Load succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to contain %q", err, tt.want)
			}
			if tt.name != "bad options" && !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("error %v does not wrap ErrInvalidModel", err)
			}
		})
	}
}

// customOpModel writes, with the flatbuffers builder, a one-operator model
// whose operator is a custom op no runtime has.
func customOpModel(t *testing.T) []byte {
	t.Helper()
	b := flatbuffers.NewBuilder(256)
	vecI32 := func(vs ...int32) flatbuffers.UOffsetT {
		b.StartVector(4, len(vs), 4)
		for i := len(vs) - 1; i >= 0; i-- {
			b.PrependInt32(vs[i])
		}
		return b.EndVector(len(vs))
	}
	vecOff := func(vs ...flatbuffers.UOffsetT) flatbuffers.UOffsetT {
		b.StartVector(4, len(vs), 4)
		for i := len(vs) - 1; i >= 0; i-- {
			b.PrependUOffsetT(vs[i])
		}
		return b.EndVector(len(vs))
	}
	tensor := func(name string) flatbuffers.UOffsetT {
		n := b.CreateString(name)
		shape := vecI32(1, 4)
		b.StartObject(8) // Tensor: shape 0, type 1, buffer 2, name 3
		b.PrependUOffsetTSlot(0, shape, 0)
		b.PrependInt8Slot(1, 0, -1) // FLOAT32
		b.PrependUint32Slot(2, 0, 1)
		b.PrependUOffsetTSlot(3, n, 0)
		return b.EndObject()
	}
	t0, t1 := tensor("in"), tensor("out")
	tensors := vecOff(t0, t1)
	opIn, opOut := vecI32(0), vecI32(1)
	b.StartObject(9) // Operator: opcode_index 0, inputs 1, outputs 2
	b.PrependUint32Slot(0, 0, 1)
	b.PrependUOffsetTSlot(1, opIn, 0)
	b.PrependUOffsetTSlot(2, opOut, 0)
	op := b.EndObject()
	ops := vecOff(op)
	sgIn, sgOut := vecI32(0), vecI32(1)
	b.StartObject(5) // SubGraph: tensors 0, inputs 1, outputs 2, operators 3
	b.PrependUOffsetTSlot(0, tensors, 0)
	b.PrependUOffsetTSlot(1, sgIn, 0)
	b.PrependUOffsetTSlot(2, sgOut, 0)
	b.PrependUOffsetTSlot(3, ops, 0)
	sg := b.EndObject()
	custom := b.CreateString("VigilNoSuchOp")
	b.StartObject(4)            // OperatorCode: deprecated_builtin_code 0, custom_code 1, version 2, builtin_code 3
	b.PrependInt8Slot(0, 32, 0) // CUSTOM
	b.PrependUOffsetTSlot(1, custom, 0)
	b.PrependInt32Slot(2, 1, 1)
	b.PrependInt32Slot(3, 32, 0)
	code := b.EndObject()
	b.StartObject(0) // the empty buffer 0
	buf0 := b.EndObject()
	codes, subgraphs, buffers := vecOff(code), vecOff(sg), vecOff(buf0)
	b.StartObject(8) // Model: version 0, operator_codes 1, subgraphs 2, description 3, buffers 4
	b.PrependUint32Slot(0, 3, 0)
	b.PrependUOffsetTSlot(1, codes, 0)
	b.PrependUOffsetTSlot(2, subgraphs, 0)
	b.PrependUOffsetTSlot(4, buffers, 0)
	b.FinishWithFileIdentifier(b.EndObject(), []byte("TFL3"))
	return b.FinishedBytes()
}

func TestScoreChecksBufferSizes(t *testing.T) {
	_, model := build(t, denseAE(4, 2), 1)
	s := mustLoad(t, model, Options{Workers: 1})
	for _, c := range []struct{ in, out int }{{0, 0}, {7, 8}, {8, 7}, {16, 8}} {
		if err := s.Score(context.Background(), make([]float32, c.in), make([]float32, c.out)); err == nil {
			t.Errorf("Score(in %d, out %d): no error", c.in, c.out)
		}
	}
}

func TestConcurrentScoring(t *testing.T) {
	net, model := build(t, denseAE(8, 2), 2)
	s := mustLoad(t, model, Options{Workers: 3})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 1 + g%5
			in := randomInput(n*16, uint64(g))
			got := make([]float32, n*16)
			want := make([]float64, n*16)
			net.Forward(in, want)
			for range 50 {
				if err := s.Score(context.Background(), in, got); err != nil {
					errs <- err
					return
				}
				for i := range got {
					if math.Abs(float64(got[i])-want[i]) > 1e-4*math.Max(1, math.Abs(want[i])) {
						errs <- fmt.Errorf("goroutine %d: output %d = %v, want %v", g, i, got[i], want[i])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestCloseIsIdempotentAndWaitsForScores(t *testing.T) {
	_, model := build(t, denseAE(4, 2), 1)
	s, err := Load(model, Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	in, out := make([]float32, 8), make([]float32, 8)
	// Hold the only interpreter, as a running Score would.
	it := <-s.pool
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while an interpreter was in use")
	default:
	}
	s.pool <- it
	<-closed
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Score(context.Background(), in, out); !errors.Is(err, ErrClosed) {
		t.Fatalf("Score after Close: %v, want ErrClosed", err)
	}
}

func TestScoreRespectsContext(t *testing.T) {
	_, model := build(t, denseAE(4, 2), 1)
	s := mustLoad(t, model, Options{Workers: 1})
	it := <-s.pool
	defer func() { s.pool <- it }()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Score(ctx, make([]float32, 8), make([]float32, 8)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Score with a cancelled context and a busy pool: %v", err)
	}
}

func TestScoreAllocatesNothing(t *testing.T) {
	_, model := build(t, convAE(16, 4), 1)
	s := mustLoad(t, model, Options{Workers: 1})
	in := randomInput(16*s.Spec().InputSize(), 1)
	out := make([]float32, 16*s.Spec().OutputSize())
	ctx := context.Background()
	s.Score(ctx, in, out)
	if a := testing.AllocsPerRun(100, func() { s.Score(ctx, in, out) }); a != 0 {
		t.Fatalf("Score allocates %v times per call, want 0", a)
	}
}

// TestLoadCloseDoesNotLeak loads and closes a model 10,000 times and checks
// that the resident set stays flat.
func TestLoadCloseDoesNotLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 loads: not in -short")
	}
	_, model := build(t, convAE(60, 8), 1)
	cycle := func(n int) {
		for range n {
			s, err := Load(model, Options{Workers: 1})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
		}
	}
	// glibc's arenas grow for the first few thousand cycles, then stay
	// flat (measured: +4 MB, +0.5, +0.1, +0.02 over four rounds of 10,000).
	cycle(10000)
	before := rssKB(t)
	cycle(10000)
	after := rssKB(t)
	t.Logf("RSS before %d kB, after 10,000 load/close cycles %d kB (model %d bytes)", before, after, len(model))
	// A leak of the model's bytes alone would add 10,000 × 17 kB = 170 MB.
	if after-before > 8*1024 {
		t.Fatalf("RSS grew by %d kB over 10,000 load/close cycles", after-before)
	}
}

func rssKB(t *testing.T) int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	t.Skip("no VmRSS")
	return 0
}

func FuzzLoad(f *testing.F) {
	_, model := build(f, denseAE(4, 2), 1)
	f.Add(model)
	f.Add(model[:len(model)/2])
	f.Add([]byte("\x10\x00\x00\x00TFL3"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Load(b, Options{Workers: 1})
		if err != nil {
			if !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("error %v does not wrap ErrInvalidModel", err)
			}
			return
		}
		defer s.Close()
		spec := s.Spec()
		if spec.InputSize() > 1<<20 || spec.OutputSize() > 1<<20 {
			return
		}
		// A model that loads must score without crashing.
		_ = s.Score(context.Background(), make([]float32, spec.InputSize()), make([]float32, spec.OutputSize()))
	})
}

// BenchmarkScore measures Score per window for a dense and a conv
// autoencoder at batch 1, 16 and 64, beside a bare TfLiteInterpreterInvoke of
// the same interpreter at the same batch, so Go's overhead is a ratio.
func BenchmarkScore(b *testing.B) {
	for _, m := range []struct {
		name string
		net  func() *nn.Network
	}{{"dense", func() *nn.Network { return denseAE(60, 8) }}, {"conv", func() *nn.Network { return convAE(60, 8) }}} {
		_, model := build(b, m.net(), 1)
		for _, batch := range []int{1, 16, 64} {
			s, err := Load(model, Options{Workers: 1})
			if err != nil {
				b.Fatal(err)
			}
			in := randomInput(batch*s.Spec().InputSize(), 1)
			out := make([]float32, batch*s.Spec().OutputSize())
			ctx := context.Background()
			var scoreNs float64
			b.Run(fmt.Sprintf("%s/batch=%d/score", m.name, batch), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := s.Score(ctx, in, out); err != nil {
						b.Fatal(err)
					}
				}
				scoreNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				b.ReportMetric(scoreNs/float64(batch), "ns/window")
			})
			b.Run(fmt.Sprintf("%s/batch=%d/bare-invoke", m.name, batch), func(b *testing.B) {
				s.Score(ctx, in, out) // leaves the interpreter at this batch size
				it := s.all[0]
				b.ReportAllocs()
				for b.Loop() {
					if !bareInvoke(it) {
						b.Fatal("invoke failed")
					}
				}
				bare := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				b.ReportMetric(bare/float64(batch), "ns/window")
				if scoreNs > 0 {
					b.ReportMetric(scoreNs/bare, "score/bare")
				}
			})
			s.Close()
		}
	}
}
