package models

import (
	"context"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/vigil-edge/vigil/inference"
)

// fakeScorer is a hand-written Scorer: out = f(in), per window.
type fakeScorer struct {
	spec   inference.Spec
	f      func(in, out []float32)
	closed bool
}

func (s *fakeScorer) Score(_ context.Context, in, out []float32) error {
	is, os := s.spec.InputSize(), s.spec.OutputSize()
	for w := range len(in) / is {
		s.f(in[w*is:(w+1)*is], out[w*os:(w+1)*os])
	}
	return nil
}
func (s *fakeScorer) Spec() inference.Spec { return s.spec }
func (s *fakeScorer) Close() error         { s.closed = true; return nil }

// zeros reconstructs every window as all zeros, so the error is the
// normalised input itself.
func zeros(_, out []float32) { clear(out) }

// tinyManifest is a valid sensor manifest for windows of 3 samples of
// channels a and b, normalised with mean (10, -1) and std (2, 0.5).
func tinyManifest() *Manifest {
	return &Manifest{
		Format: Format, Name: "tiny", Version: "1", Kind: KindSensor,
		SHA256:        strings.Repeat("0", 64),
		Input:         Input{Window: 3, Hop: 1, Channels: []string{"a", "b"}},
		Normalization: Normalization{Mean: []float64{10, -1}, Std: []float64{2, 0.5}},
		Output:        Output{Kind: OutputReconstruction, Reduction: ReduceMSE},
		Threshold:     Threshold{Value: 1, Method: MethodManual},
	}
}

func TestModelScoreReconstruction(t *testing.T) {
	// Two windows; normalised: a' = (a-10)/2, b' = (b+1)/0.5.
	raw := []float64{
		10, -1, 12, -1, 14, 0, // a' = 0 1 2, b' = 0 0 2
		8, -2, 10, -1, 10, -1, // a' = -1 0 0, b' = -2 0 0
	}
	tests := []struct {
		reduction   string
		scores      []float64
		contrib     []float64 // per window, per channel
		description string
	}{
		{ReduceMSE, []float64{(5.0/3 + 4.0/3) / 2, (1.0/3 + 4.0/3) / 2},
			[]float64{5.0 / 3, 4.0 / 3, 1.0 / 3, 4.0 / 3}, "mean over channels of per-channel MSE"},
		{ReduceMAE, []float64{(3.0/3 + 2.0/3) / 2, (1.0/3 + 2.0/3) / 2},
			[]float64{1, 2.0 / 3, 1.0 / 3, 2.0 / 3}, "mean absolute error"},
		{ReduceMaxChannelMSE, []float64{5.0 / 3, 4.0 / 3},
			[]float64{5.0 / 3, 4.0 / 3, 1.0 / 3, 4.0 / 3}, "largest channel MSE"},
	}
	for _, tt := range tests {
		t.Run(tt.reduction, func(t *testing.T) {
			m := tinyManifest()
			m.Output.Reduction = tt.reduction
			md := newZeroModel(t, m)
			scores, contrib := make([]float64, 2), make([]float64, 4)
			if err := md.Score(context.Background(), raw, scores, contrib); err != nil {
				t.Fatal(err)
			}
			for i := range scores {
				if math.Abs(scores[i]-tt.scores[i]) > 1e-6 {
					t.Errorf("%s: scores = %v, want %v", tt.description, scores, tt.scores)
					break
				}
			}
			for i := range contrib {
				if math.Abs(contrib[i]-tt.contrib[i]) > 1e-6 {
					t.Errorf("contrib = %v, want %v", contrib, tt.contrib)
					break
				}
			}
			// Without contributions, the same scores.
			again := make([]float64, 2)
			if err := md.Score(context.Background(), raw, again, nil); err != nil {
				t.Fatal(err)
			}
			if again[0] != scores[0] || again[1] != scores[1] {
				t.Errorf("scores without contrib %v, with %v", again, scores)
			}
		})
	}
}

func TestModelScoreCenter(t *testing.T) {
	// Channel a centred: a' = 0 1 2 becomes -1 0 1 and -1 0 0 becomes
	// -2/3 1/3 1/3; b keeps its level.
	raw := []float64{
		10, -1, 12, -1, 14, 0,
		8, -2, 10, -1, 10, -1,
	}
	m := tinyManifest()
	m.Normalization.Center = []bool{true, false}
	var seen []float32
	md, err := New(m, &fakeScorer{spec: m.Spec(), f: func(in, out []float32) {
		seen = append(seen, in...)
		clear(out)
	}})
	if err != nil {
		t.Fatal(err)
	}
	scores, contrib := make([]float64, 2), make([]float64, 4)
	if err := md.Score(context.Background(), raw, scores, contrib); err != nil {
		t.Fatal(err)
	}
	want := []float32{-1, 0, 0, 0, 1, 2, -2.0 / 3, -2, 1.0 / 3, 0, 1.0 / 3, 0}
	for i := range want {
		if math.Abs(float64(seen[i]-want[i])) > 1e-6 {
			t.Fatalf("model input %v, want %v", seen, want)
		}
	}
	if wantC := []float64{2.0 / 3, 4.0 / 3, 2.0 / 9, 4.0 / 3}; math.Abs(contrib[0]-wantC[0]) > 1e-6 || math.Abs(contrib[2]-wantC[2]) > 1e-6 {
		t.Errorf("contrib %v, want %v", contrib, wantC)
	}
	// All false is the same as absent.
	m = tinyManifest()
	m.Normalization.Center = []bool{false, false}
	if md, err := New(m, &fakeScorer{spec: m.Spec(), f: zeros}); err != nil || md.center != nil {
		t.Errorf("all-false center: %v, %v", md.center, err)
	}
}

func TestModelScoreOutput(t *testing.T) {
	for _, tt := range []struct {
		reduction string
		want      float64
	}{{ReduceFirst, 0.25}, {ReduceMax, 0.75}, {ReduceMean, 0.5}} {
		m := tinyManifest()
		m.Output = Output{Kind: OutputScore, Reduction: tt.reduction, Size: 3}
		md, err := New(m, &fakeScorer{spec: m.Spec(), f: func(_, out []float32) { copy(out, []float32{0.25, 0.75, 0.5}) }})
		if err != nil {
			t.Fatal(err)
		}
		scores, contrib := make([]float64, 1), []float64{9, 9}
		if err := md.Score(context.Background(), make([]float64, 6), scores, contrib); err != nil {
			t.Fatal(err)
		}
		if scores[0] != tt.want || contrib[0] != 0 || contrib[1] != 0 {
			t.Errorf("%s: score %v contrib %v, want %v and zeros", tt.reduction, scores[0], contrib, tt.want)
		}
	}
}

func TestModelScoreErrors(t *testing.T) {
	m := tinyManifest()
	md := newZeroModel(t, m)
	ctx := context.Background()
	tests := []struct {
		name                     string
		windows, scores, contrib []float64
		want                     string
	}{
		{"partial window", make([]float64, 7), make([]float64, 1), nil, "7 values is not a whole number of windows of 3×2"},
		{"empty", nil, nil, nil, "0 values"},
		{"scores length", make([]float64, 12), make([]float64, 1), nil, "scores has room for 1 windows, want 2"},
		{"contrib length", make([]float64, 6), make([]float64, 1), make([]float64, 3), "contrib has 3 values, want 2"},
		{"NaN", []float64{10, -1, 10, math.NaN(), 10, -1}, make([]float64, 1), nil, `window 0 sample 1 channel "b" is NaN`},
		{"Inf", []float64{10, -1, 10, -1, 10, -1, 10, -1, math.Inf(-1), -1, 10, -1}, make([]float64, 2), nil, `window 1 sample 1 channel "a" is -Inf`},
	}
	for _, tt := range tests {
		err := md.Score(ctx, tt.windows, tt.scores, tt.contrib)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Score() = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestNewChecksSpec(t *testing.T) {
	m := tinyManifest()
	tests := []struct {
		spec inference.Spec
		want string
	}{
		{inference.Spec{Input: []int{4, 2}, Output: []int{3, 2}},
			"input.window=3 and 2 input.channels declare input [3 2] per window, the model's input tensor is [4 2]"},
		{inference.Spec{Input: []int{3, 2}, Output: []int{1}},
			"output.kind=reconstruction declares output [3 2] per window (the input's shape), the model's output tensor is [1]"},
	}
	for _, tt := range tests {
		_, err := New(m, &fakeScorer{spec: tt.spec, f: zeros})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New() = %v, want an error containing %q", err, tt.want)
		}
	}
	m.Output = Output{Kind: OutputScore, Reduction: ReduceFirst, Size: 2}
	_, err := New(m, &fakeScorer{spec: inference.Spec{Input: []int{3, 2}, Output: []int{1}}, f: zeros})
	if want := "output.kind=score with output.size=2 declares output [2] per window, the model's output tensor is [1]"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("New() = %v, want an error containing %q", err, want)
	}
	bad := tinyManifest()
	bad.Input.Hop = 0
	if _, err := New(bad, &fakeScorer{spec: bad.Spec(), f: zeros}); err == nil || !strings.Contains(err.Error(), "input.hop") {
		t.Errorf("New() with an invalid manifest = %v", err)
	}
}

func TestModelScoreNoAllocs(t *testing.T) {
	m := tinyManifest()
	md := newZeroModel(t, m)
	checkScoreNoAllocs(t, md, make([]float64, 16*6), make([]float64, 16), make([]float64, 32), 100)
}

// newZeroModel is m over a scorer that outputs zeros.
func newZeroModel(t testing.TB, m *Manifest) *Model {
	t.Helper()
	md, err := New(m, &fakeScorer{spec: m.Spec(), f: zeros})
	if err != nil {
		t.Fatal(err)
	}
	return md
}

// checkScoreNoAllocs scores raw once, then checks that scoring it again
// (runs times) allocates nothing.
func checkScoreNoAllocs(t *testing.T, md *Model, raw, scores, contrib []float64, runs int) {
	t.Helper()
	ctx := context.Background()
	if err := md.Score(ctx, raw, scores, contrib); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(runs, func() {
		if err := md.Score(ctx, raw, scores, contrib); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Score allocates %v times per call in steady state, want 0", n)
	}
}

func TestModelConcurrentScore(t *testing.T) {
	m := tinyManifest()
	md := newZeroModel(t, m)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			n := g + 1
			raw := make([]float64, n*6)
			for i := range raw {
				raw[i] = float64(g)
			}
			scores := make([]float64, n)
			for range 50 {
				if err := md.Score(context.Background(), raw, scores, nil); err != nil {
					t.Error(err)
					return
				}
				// a' = (g-10)/2, b' = (g+1)/0.5 everywhere.
				a, b := (float64(g)-10)/2, (float64(g)+1)/0.5
				want := (a*a + b*b) / 2
				for _, s := range scores {
					if math.Abs(s-want) > 1e-4*want {
						t.Errorf("goroutine %d: score %v, want %v", g, s, want)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestModelClose(t *testing.T) {
	m := tinyManifest()
	s := &fakeScorer{spec: m.Spec(), f: zeros}
	md, err := New(m, s)
	if err != nil {
		t.Fatal(err)
	}
	if md.Window() != 3 || md.Channels() != 2 || md.Threshold() != 1 || md.Manifest() != m || md.Scorer() != s {
		t.Error("accessors disagree with the manifest")
	}
	if err := md.Close(); err != nil || !s.closed {
		t.Errorf("Close() = %v, scorer closed %v", err, s.closed)
	}
}

// TestReconstructionScore: the one score reduction, over float32 (the
// model's output) and float64 (the trainer's), gives the same scores and
// per-channel errors.
func TestReconstructionScore(t *testing.T) {
	// Two time steps of two channels: errors (1, 2) then (3, 0).
	x := []float64{0, 0, 0, 0}
	y := []float64{1, -2, 3, 0}
	for _, c := range []struct {
		reduction string
		score     float64
		ch        []float64
	}{
		{ReduceMSE, (5 + 2) / 2.0, []float64{5, 2}},
		{ReduceMAE, (2 + 1) / 2.0, []float64{2, 1}},
		{ReduceMaxChannelMSE, 5, []float64{5, 2}},
	} {
		ch64, ch32 := make([]float64, 2), []float64{9, 9}
		s64 := ReconstructionScore(c.reduction, x, y, ch64)
		x32, y32 := []float32{0, 0, 0, 0}, []float32{1, -2, 3, 0}
		s32 := ReconstructionScore(c.reduction, x32, y32, ch32)
		if s64 != c.score || s32 != c.score {
			t.Errorf("%s: scores %v (float64) and %v (float32), want %v", c.reduction, s64, s32, c.score)
		}
		for i := range c.ch {
			if ch64[i] != c.ch[i] || ch32[i] != c.ch[i] {
				t.Errorf("%s: channel errors %v and %v, want %v", c.reduction, ch64, ch32, c.ch)
			}
		}
	}
}
