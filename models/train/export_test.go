//go:build cgo

package train

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models"
)

// flatWindows lays out the windows of rows [from, to) back to back, as
// models.Model.Score takes them.
func flatWindows(rows [][]float64, from, to, window int) []float64 {
	var out []float64
	for s := from; s+window <= to; s++ {
		for _, r := range rows[s : s+window] {
			out = append(out, r...)
		}
	}
	return out
}

// loadedScores saves res, loads the model it wrote through TFLite (closed
// when the test ends) and scores with it the windows of res.Scores: those
// of rows[:cut], then those of rows[cut:].
func loadedScores(t *testing.T, res *Result, rows [][]float64, cut, window, workers int) (*models.Model, []float64) {
	t.Helper()
	dir := t.TempDir()
	if err := res.Save(dir); err != nil {
		t.Fatal(err)
	}
	md, err := models.Load(filepath.Join(dir, "pump"), inference.Options{Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := md.Close(); err != nil {
			t.Error(err)
		}
	})
	raw := append(flatWindows(rows, 0, cut, window), flatWindows(rows, cut, len(rows), window)...)
	got := make([]float64, len(res.Scores))
	if err := md.Score(context.Background(), raw, got, nil); err != nil {
		t.Fatal(err)
	}
	return md, got
}

// TestExportedScoresMatchTrainer is the equivalence the trainer promises:
// the saved model, loaded through TFLite and scored by models.Model, gives
// the scores the trainer computed (and calibrated on) for the same
// windows, for both architectures and every reduction.
func TestExportedScoresMatchTrainer(t *testing.T) {
	for _, tt := range []struct {
		arch      Arch
		window    int
		reduction string
		center    float64 // Options.Center
	}{
		{Dense, 12, models.ReduceMSE, 0},
		{Conv, 15, models.ReduceMSE, 0},
		{Conv, 16, models.ReduceMAE, 0},
		{Dense, 7, models.ReduceMaxChannelMSE, 0},
		{Dense, 12, models.ReduceMSE, 0.5}, // some channels centred
		{Conv, 15, models.ReduceMSE, 5},    // every channel centred
	} {
		name := string(tt.arch) + "-" + tt.reduction
		if tt.center > 0 {
			name += "-center"
		}
		t.Run(name, func(t *testing.T) {
			o := quickOptions(tt.arch)
			o.Window, o.Reduction, o.Epochs, o.Center = tt.window, tt.reduction, 15, tt.center
			if testing.Short() {
				o.Epochs = 3 // equivalence does not need a good model
			}
			rows := pumpRows(300, 5)
			res := mustTrain(t, rows, o)
			if c := res.Manifest.Normalization.Center; tt.center > 0 && !slices.Contains(c, true) || tt.center == 0 && c != nil {
				t.Fatalf("Center %v: normalization.center %v", tt.center, c)
			}
			md, got := loadedScores(t, res, rows, 300-60, tt.window, 2) // the validation tail: 20% of 300 rows
			worst := 0.0
			for i, want := range res.Scores {
				rel := math.Abs(got[i]-want) / want
				worst = max(worst, rel)
				if rel > 1e-5 {
					t.Errorf("window %d: TFLite score %v, trainer %v", i, got[i], want)
				}
			}
			t.Logf("%d windows, worst relative difference %.2g", len(got), worst)
			// The threshold the manifest carries separates the same way.
			th := md.Threshold()
			for i, want := range res.Scores {
				if (got[i] > th) != (want > th) && math.Abs(want-th) > 1e-4*th {
					t.Errorf("window %d: TFLite and trainer disagree about the threshold", i)
				}
			}
		})
	}
}

func TestLearn(t *testing.T) {
	o := quickOptions(Conv)
	if testing.Short() {
		o.Arch = Dense // a third of the time
	}
	o.Window = 16
	o.Name = "warmup"
	o.Source = "warm-up"
	md, rep, err := Learn(context.Background(), pumpRows(400, 11), o)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	m := md.Manifest()
	if m.Name != "warmup" || m.Training.Data.Rows != 400 || m.Training.Data.Source != "warm-up" || md.Threshold() != rep.Threshold.Value {
		t.Errorf("manifest %+v", m)
	}
	fresh := pumpRows(200, 12)
	fresh[150][2] += 80 // current spike, about 10 std
	raw := flatWindows(fresh, 0, 200, 16)
	n := len(raw) / (16 * 8)
	scores, contrib := make([]float64, n), make([]float64, n*8)
	if err := md.Score(context.Background(), raw, scores, contrib); err != nil {
		t.Fatal(err)
	}
	// Windows that hold the spike away from their edges are over the
	// threshold, and "current" contributes most to them.
	for w := 150 - 12; w <= 150-3; w++ {
		if scores[w] <= md.Threshold() {
			t.Errorf("window %d holds the spike but scores %v ≤ %v", w, scores[w], md.Threshold())
		}
		top := 0
		for c := range 8 {
			if contrib[w*8+c] > contrib[w*8+top] {
				top = c
			}
		}
		if top != 2 {
			t.Errorf("window %d: top channel %q, want current", w, m.Input.Channels[top])
		}
	}
	quiet := 0
	for w := range 100 {
		if scores[w] <= md.Threshold() {
			quiet++
		}
	}
	if quiet < 95 {
		t.Errorf("%d of the first 100 normal windows under the threshold", quiet)
	}
}

func TestLearnBudget(t *testing.T) {
	now := time.Unix(0, 0)
	o := quickOptions(Dense)
	o.Epochs, o.Patience = 10000, 0
	o.Now = func() time.Time { now = now.Add(100 * time.Millisecond); return now }
	o.Budget = 5 * time.Second
	md, rep, err := Learn(context.Background(), pumpRows(400, 1), o)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	if rep.StoppedBy != "budget" || rep.Epochs > 5 {
		t.Errorf("report %+v", rep)
	}
}

func TestLearnBadInput(t *testing.T) {
	rows := pumpRows(10, 1)
	_, _, err := Learn(context.Background(), rows, quickOptions(Dense))
	if err == nil || !strings.Contains(err.Error(), "10 rows is fewer than one window of 12") {
		t.Errorf("Learn() = %v", err)
	}
}

// BenchmarkLearn400x8 measures the on-device warm-up: 400 samples of 8
// channels, windows of 32, the default options (early stopping, POT),
// through to a loaded TFLite model.
func BenchmarkLearn400x8(b *testing.B) {
	rows := pumpRows(400, 1)
	for _, arch := range []Arch{Dense, Conv} {
		b.Run("arch="+string(arch), func(b *testing.B) {
			o := DefaultOptions()
			o.Arch = arch
			o.Channels = pumpChannels
			var epochs int
			b.ReportAllocs()
			for b.Loop() {
				md, rep, err := Learn(context.Background(), rows, o)
				if err != nil {
					b.Fatal(err)
				}
				md.Close()
				epochs = rep.Epochs
			}
			b.ReportMetric(float64(epochs), "epochs")
		})
	}
}
