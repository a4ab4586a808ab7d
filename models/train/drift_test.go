package train

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestWidenAddsTheTrendContinuedOverTheHorizon(t *testing.T) {
	// Channel 0 rises by 0.01 per row over alternating ±1 noise; channel 1
	// is that noise alone, so its least-squares slope is tiny.
	rows := make([][]float64, 200)
	for i := range rows {
		noise := float64(1 - 2*(i%2))
		rows[i] = []float64{0.01*float64(i) + noise, noise}
	}
	sc, _ := fitScaler(rows, []string{"trend", "noise"})
	before := append([]float64(nil), sc.std...)
	sc.widen(rows, 500)
	// The noise's own slope, Σ(t-t̄)·noise / Σ(t-t̄)², adds to both.
	n := float64(len(rows))
	tMean := (n - 1) / 2
	var cov, tVar float64
	for i, r := range rows {
		cov += (float64(i) - tMean) * r[1]
		tVar += (float64(i) - tMean) * (float64(i) - tMean)
	}
	noiseSlope := cov / tVar
	want := []float64{
		math.Sqrt(before[0]*before[0] + math.Pow((0.01+noiseSlope)*500, 2)),
		math.Sqrt(before[1]*before[1] + math.Pow(noiseSlope*500, 2)),
	}
	for j := range want {
		if math.Abs(sc.std[j]-want[j]) > 1e-9 {
			t.Errorf("channel %d: std %v widened to %v, want %v", j, before[j], sc.std[j], want[j])
		}
	}
	if sc.std[0] < 5 || sc.std[1] > before[1]*1.01 {
		t.Errorf("stds %v: the trend should be widened to about 5, the noise barely", sc.std)
	}
}

func TestDriftHorizonIsOffByDefaultAndValidated(t *testing.T) {
	if DefaultOptions().DriftHorizon != 0 {
		t.Fatal("DriftHorizon defaults to non-zero")
	}
	rows := make([][]float64, 64)
	for i := range rows {
		rows[i] = []float64{float64(i), math.Sin(float64(i))}
	}
	o := DefaultOptions()
	o.Window, o.Epochs = 8, 2
	plain, err := Train(context.Background(), rows, o)
	if err != nil {
		t.Fatal(err)
	}
	o.DriftHorizon = 100
	wide, err := Train(context.Background(), rows, o)
	if err != nil {
		t.Fatal(err)
	}
	p, w := plain.Manifest.Normalization.Std, wide.Manifest.Normalization.Std
	if !(w[0] > 2*p[0]) || math.Abs(w[1]-p[1]) > 0.1*p[1] {
		t.Errorf("std %v with DriftHorizon 100, %v without: want the ramp widened, the sine about the same", w, p)
	}
	o.DriftHorizon = -1
	if _, err := Train(context.Background(), rows, o); err == nil || !strings.Contains(err.Error(), "Options.DriftHorizon") {
		t.Errorf("DriftHorizon -1: err = %v, want one naming Options.DriftHorizon", err)
	}
}

func TestCenterPicksTheSmoothChannels(t *testing.T) {
	if DefaultOptions().Center != 0 {
		t.Fatal("Center defaults to non-zero")
	}
	// Channel 0 is a slow ramp (von Neumann ratio near 0), channel 1
	// alternating noise (near 4).
	rows := make([][]float64, 64)
	for i := range rows {
		rows[i] = []float64{float64(i), float64(1 - 2*(i%2))}
	}
	o := DefaultOptions()
	o.Window, o.Epochs = 8, 2
	for _, tt := range []struct {
		center float64
		want   []bool
	}{{0, nil}, {0.3, []bool{true, false}}, {5, []bool{true, true}}} {
		o.Center = tt.center
		res, err := Train(context.Background(), rows, o)
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Manifest.Normalization.Center; !slices.Equal(got, tt.want) {
			t.Errorf("Center %v: normalization.center %v, want %v", tt.center, got, tt.want)
		}
	}
	o.Center = -1
	if _, err := Train(context.Background(), rows, o); err == nil || !strings.Contains(err.Error(), "Options.Center") {
		t.Errorf("Center -1: err = %v, want one naming Options.Center", err)
	}
}
