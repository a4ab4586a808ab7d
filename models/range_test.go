package models

import (
	"context"
	"math"
	"testing"

	"github.com/vigil-edge/vigil/inference"
)

// TestModelScoreOutOfFloat32Range: a finite value out of float32 range
// once normalised (1e50; 1e308, which overflows float64 when normalised)
// makes its window score +Inf with that channel's contribution 1, the
// model never sees it, and the other windows of the batch score as usual.
func TestModelScoreOutOfFloat32Range(t *testing.T) {
	raw := []float64{
		10, -1, 12, -1, 14, 0, // normal: the values of TestModelScoreReconstruction
		10, -1, 10, 1e50, 10, -1, // b out of range
		1e308, -1, 10, -1, 10, -1, // a overflows float64 once normalised
		1e308, -1e40, 10, -1, 10, -1, // both
		10, -1, 12, -1, 14, 0,
	}
	wantContrib := [][]float64{nil, {0, 1}, {1, 0}, {0.5, 0.5}, nil}
	for _, tc := range []struct {
		name   string
		edit   func(*Manifest)
		normal float64 // score of windows 0 and 4
	}{
		{"mse", func(*Manifest) {}, (5.0/3 + 4.0/3) / 2},
		{"centred", func(m *Manifest) { m.Normalization.Center = []bool{true, true} }, -1},
		{"score model", func(m *Manifest) { m.Output = Output{Kind: OutputScore, Reduction: ReduceMax, Size: 1} }, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tinyManifest()
			tc.edit(m)
			sawBad := false
			f := func(in, out []float32) {
				for _, v := range in {
					if math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) {
						sawBad = true
					}
				}
				if m.Output.Kind == OutputScore {
					out[0] = 0.5
					return
				}
				clear(out)
			}
			md, err := New(m, &fakeScorer{spec: m.Spec(), f: f})
			if err != nil {
				t.Fatal(err)
			}
			scores, contrib := make([]float64, 5), make([]float64, 10)
			if err := md.Score(context.Background(), raw, scores, contrib); err != nil {
				t.Fatalf("Score: %v, want the batch scored", err)
			}
			if sawBad {
				t.Error("the model was given a non-finite value")
			}
			for w, want := range wantContrib {
				got := contrib[w*2 : w*2+2]
				if want == nil {
					if math.IsInf(scores[w], 0) || math.IsNaN(scores[w]) || (tc.normal >= 0 && math.Abs(scores[w]-tc.normal) > 1e-6) {
						t.Errorf("window %d: score %v, want %v", w, scores[w], tc.normal)
					}
					continue
				}
				if !math.IsInf(scores[w], 1) || got[0] != want[0] || got[1] != want[1] {
					t.Errorf("window %d: score %v contrib %v, want +Inf and %v", w, scores[w], got, want)
				}
			}
			// Without contributions, the same scores.
			again := make([]float64, 5)
			if err := md.Score(context.Background(), raw, again, nil); err != nil {
				t.Fatal(err)
			}
			for w := range again {
				if again[w] != scores[w] {
					t.Errorf("window %d: score %v without contributions, %v with", w, again[w], scores[w])
				}
			}
		})
	}
}

var _ inference.Scorer = (*fakeScorer)(nil)

// TestModelScoreOverflowInside: a value within float32 range that
// overflows inside the model (its square here) scores +Inf and names its
// channel with share 1, not the channels whose errors stayed finite.
func TestModelScoreOverflowInside(t *testing.T) {
	m := tinyManifest()
	square := func(in, out []float32) {
		for i, v := range in {
			out[i] = v * v
		}
	}
	md, err := New(m, &fakeScorer{spec: m.Spec(), f: square})
	if err != nil {
		t.Fatal(err)
	}
	raw := []float64{
		10, -1, 12, -1, 14, 0,
		10, -1, 10, 1e30, 10, -1, // b: 2e30 normalised, its square +Inf in float32
	}
	scores, contrib := make([]float64, 2), make([]float64, 4)
	if err := md.Score(context.Background(), raw, scores, contrib); err != nil {
		t.Fatal(err)
	}
	if math.IsInf(scores[0], 0) || math.IsNaN(scores[0]) {
		t.Errorf("window 0 scores %v", scores[0])
	}
	if !math.IsInf(scores[1], 1) || contrib[2] != 0 || contrib[3] != 1 {
		t.Errorf("window 1: score %v contrib %v, want +Inf and [0 1]", scores[1], contrib[2:])
	}
}

// TestLoadedModelOutOfFloat32Range runs extreme values through a real
// TFLite model: 1e308 and 1e50 in channel b make their windows +Inf with
// b's share 1, and the other windows of the batch score as they do alone.
func TestLoadedModelOutOfFloat32Range(t *testing.T) {
	md, err := Load(saved(t, denseAE(t, 8, 3), manifestFor(8, "a", "b", "c")), inference.Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	const per = 8 * 3
	windows := make([]float64, 4*per)
	for i := range windows {
		windows[i] = float64(i%7) / 10
	}
	windows[per+5*3+1] = 1e308  // window 1, sample 5, channel b
	windows[3*per+0*3+1] = 1e50 // window 3, sample 0, channel b
	scores, contrib := make([]float64, 4), make([]float64, 4*3)
	if err := md.Score(context.Background(), windows, scores, contrib); err != nil {
		t.Fatalf("Score: %v", err)
	}
	for _, w := range []int{1, 3} {
		if !math.IsInf(scores[w], 1) || contrib[w*3] != 0 || contrib[w*3+1] != 1 || contrib[w*3+2] != 0 {
			t.Errorf("window %d: score %v contrib %v, want +Inf and b at 1", w, scores[w], contrib[w*3:w*3+3])
		}
	}
	for _, w := range []int{0, 2} {
		alone, c := make([]float64, 1), make([]float64, 3)
		if err := md.Score(context.Background(), windows[w*per:(w+1)*per], alone, c); err != nil {
			t.Fatal(err)
		}
		if math.Abs(alone[0]-scores[w]) > 1e-5*math.Abs(alone[0]) { // batched kernels round a little differently
			t.Errorf("window %d: %v in the batch, %v alone", w, scores[w], alone[0])
		}
	}
}
