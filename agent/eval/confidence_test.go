package eval

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/models/train"
)

// writeAnomalyFreePieces cuts SKAB's anomaly-free recording into pieces of
// rows rows in SKAB's layout (every row labelled normal) as
// dir/valve1/0.csv, 1.csv, ...; the rows left over are dropped. It is
// what README.md's awk command does.
func writeAnomalyFreePieces(t *testing.T, src, dir string, pieces, rows int) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		t.Fatalf("%s: no header", src)
	}
	header := strings.TrimSuffix(sc.Text(), "\r") + ";anomaly;changepoint\n"
	if err := os.MkdirAll(filepath.Join(dir, "valve1"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p := range pieces {
		var b strings.Builder
		b.WriteString(header)
		for range rows {
			if !sc.Scan() {
				t.Fatalf("%s: fewer than %d rows", src, pieces*rows)
			}
			b.WriteString(strings.TrimSuffix(sc.Text(), "\r") + ";0;0\n")
		}
		if err := os.WriteFile(filepath.Join(dir, "valve1", fmt.Sprintf("%d.csv", p)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// heldOut is the normal windows of some files, as v = ln(score) − the mean
// ln score of the file's validation windows, sorted; and their confidence
// without the unseen-score fit.
type heldOut struct {
	v        []float64
	fallback []float64
}

func collect(t *testing.T, files []FileResult, shift float64) heldOut {
	t.Helper()
	var h heldOut
	for _, f := range files {
		u := f.Training.Threshold.Unseen
		if u == nil {
			t.Fatalf("%s: no unseen-score fit in the threshold", f.Name)
		}
		base := u.Location - shift
		for _, s := range f.NormalScores {
			h.v = append(h.v, math.Log(s)-base)
		}
		h.fallback = append(h.fallback, f.NormalConfidenceFallback...)
	}
	slices.Sort(h.v)
	return h
}

// shares are, for each level c ≥ 0.5, the share of the windows whose
// log-Laplace confidence is at least c: v ≥ shift + scale·ln(0.5/(1−c)).
func (h heldOut) shares(levels []float64, shift, scale float64) []float64 {
	out := make([]float64, len(levels))
	for i, c := range levels {
		cut := shift + scale*math.Log(0.5/(1-c))
		k, _ := slices.BinarySearch(h.v, cut)
		out[i] = float64(len(h.v)-k) / float64(len(h.v))
	}
	return out
}

func (h heldOut) fallbackShares(levels []float64) []float64 {
	out := make([]float64, len(levels))
	for i, c := range levels {
		for _, v := range h.fallback {
			if v >= c {
				out[i]++
			}
		}
		out[i] /= float64(len(h.fallback))
	}
	return out
}

// chooseUnseen picks the shift and scale (grid steps of 0.01) whose shares
// are nearest 1 − c: the least Σ (share − p)² / (p(1 − p)), p = 1 − c.
func chooseUnseen(h heldOut, levels []float64) (shift, scale float64) {
	best := math.Inf(1)
	for i := -50; i <= 150; i++ {
		for j := 2; j <= 150; j++ {
			a, b := float64(i)/100, float64(j)/100
			l := 0.0
			for k, s := range h.shares(levels, a, b) {
				p := 1 - levels[k]
				l += (s - p) * (s - p) / (p * (1 - p))
			}
			if l < best {
				best, shift, scale = l, a, b
			}
		}
	}
	return shift, scale
}

// heldOutLevels are the levels the knobs are chosen on and checked at.
var heldOutLevels = []float64{0.5, 0.9, 0.95, 0.99}

// heldOutTolerance bounds the share of held-out normal windows at each
// level: what the chosen knobs reached on the other half (README.md,
// "Confidence"), with a margin; 1 − c lies inside each.
var heldOutTolerance = [][2]float64{{0.35, 0.65}, {0.04, 0.2}, {0.02, 0.1}, {0, 0.05}}

// TestConfidenceHeldOutSKAB chooses the unseen-score fit's shift and scale
// on half of the normal data (anomaly-free pieces 0–5 and valve1 files
// 0–7, windows before their anomaly) and checks the confidence on the
// other half, and the other way round.
func TestConfidenceHeldOutSKAB(t *testing.T) {
	if testing.Short() {
		t.Skip("learns 28 models on real data; skipped with -short")
	}
	testkit.SkipUnderRace(t, "learns 28 models on real data")
	af := filepath.Join(skabDir, "anomaly-free", "anomaly-free.csv")
	for _, p := range []string{af, filepath.Join(skabDir, "valve1")} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("SKAB data not available: %v", err)
		}
	}
	dir := t.TempDir()
	writeAnomalyFreePieces(t, af, dir, 12, 783)
	opts := DefaultOptions()
	opts.Data = dir
	afRep, err := SKAB(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Data, opts.Files = skabDir, "valve1/*.csv"
	v1Rep, err := SKAB(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(afRep.Files) != 12 || len(v1Rep.Files) != 16 {
		t.Fatalf("%d anomaly-free pieces and %d valve1 files, want 12 and 16", len(afRep.Files), len(v1Rep.Files))
	}
	halves := [2][]FileResult{
		slices.Concat(afRep.Files[:6], v1Rep.Files[:8]),
		slices.Concat(afRep.Files[6:], v1Rep.Files[8:]),
	}
	shift := train.DefaultCalibration().UnseenShift
	data := [2]heldOut{collect(t, halves[0], shift), collect(t, halves[1], shift)}
	for d, name := range []string{"choose on A (af 0–5, valve1 0–7), check on B", "choose on B (af 6–11, valve1 8–15), check on A"} {
		choose, check := data[d], data[1-d]
		a, b := chooseUnseen(choose, heldOutLevels)
		got := check.shares(heldOutLevels, a, b)
		t.Logf("%s: shift %.2f scale %.2f; c %v: chosen half %.3f, held out %.3f (%d windows), before %.3f",
			name, a, b, heldOutLevels, choose.shares(heldOutLevels, a, b), got, len(check.v), check.fallbackShares(heldOutLevels))
		for i, c := range heldOutLevels {
			if tol := heldOutTolerance[i]; got[i] < tol[0] || got[i] > tol[1] {
				t.Errorf("%s: share at c = %v is %.3f, want it in [%v, %v]", name, c, got[i], tol[0], tol[1])
			}
		}
	}
	all := heldOut{v: slices.Concat(data[0].v, data[1].v), fallback: slices.Concat(data[0].fallback, data[1].fallback)}
	slices.Sort(all.v)
	a, b := chooseUnseen(all, heldOutLevels)
	c := train.DefaultCalibration()
	t.Logf("chosen on all: shift %.2f scale %.2f; defaults %.2f %.2f: %.3f on all %d windows",
		a, b, c.UnseenShift, c.UnseenScale, all.shares(heldOutLevels, c.UnseenShift, c.UnseenScale), len(all.v))
}
