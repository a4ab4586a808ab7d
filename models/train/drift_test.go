package train

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestWidenAddsTheTrendContinuedOverTheHorizon(t *testing.T) {
	// Channel 0 is a slow ramp with a small ripple (von Neumann ratio near
	// 0); channel 1 is noise around a level that wanders a little (ratio
	// above 1), so a least-squares fit finds a trend in it too.
	rows := make([][]float64, 200)
	for i := range rows {
		noise := float64(1 - 2*(i%2))
		rows[i] = []float64{0.01*float64(i) + 0.001*noise, noise + 0.002*float64(i)}
	}
	vn := smoothness(rows, 2)
	if !(vn[0] < 0.1 && vn[1] > 1) {
		t.Fatalf("von Neumann ratios %v: the test wants the ramp near 0 and the noise above 1", vn)
	}
	sc, _ := fitScaler(rows, []string{"ramp", "noise"}, false)
	before := append([]float64(nil), sc.std...)
	sc.widen(rows, 500)
	n := float64(len(rows))
	tMean := (n - 1) / 2
	var cov, tVar float64
	for i, r := range rows {
		cov += (float64(i) - tMean) * r[0]
		tVar += (float64(i) - tMean) * (float64(i) - tMean)
	}
	slope := cov / tVar
	want := []float64{math.Sqrt(before[0]*before[0] + math.Pow(slope*500, 2)), before[1]}
	for j := range want {
		if math.Abs(sc.std[j]-want[j]) > 1e-9 {
			t.Errorf("channel %d: std %v widened to %v, want %v", j, before[j], sc.std[j], want[j])
		}
	}
	if sc.std[0] < 5 {
		t.Errorf("ramp's std %v: want it widened to about 5 (0.01 per row × 500)", sc.std[0])
	}
}

func TestWidenLeavesWhiteNoiseWithAChanceTrendAlone(t *testing.T) {
	// A level shift in a noisy channel is the clearest anomaly it can show;
	// the trend a fit finds in its noise must not hide it.
	rows := make([][]float64, 400)
	x := uint64(1)
	for i := range rows {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		rows[i] = []float64{float64(x%1000)/1000 - 0.5}
	}
	sc, _ := fitScaler(rows, []string{"noise"}, false)
	before := sc.std[0]
	if vn := smoothness(rows, 1)[0]; vn < 1 {
		t.Fatalf("this noise's von Neumann ratio is %v; the test wants one at or above 1", vn)
	}
	sc.widen(rows, 1000)
	if sc.std[0] != before {
		t.Errorf("std %v widened to %v; noise keeps its std", before, sc.std[0])
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
	plain := mustTrain(t, rows, o)
	o.DriftHorizon = 100
	wide := mustTrain(t, rows, o)
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
		res := mustTrain(t, rows, o)
		if got := res.Manifest.Normalization.Center; !slices.Equal(got, tt.want) {
			t.Errorf("Center %v: normalization.center %v, want %v", tt.center, got, tt.want)
		}
	}
	o.Center = -1
	if _, err := Train(context.Background(), rows, o); err == nil || !strings.Contains(err.Error(), "Options.Center") {
		t.Errorf("Center -1: err = %v, want one naming Options.Center", err)
	}
}
