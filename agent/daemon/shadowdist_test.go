package daemon

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func distOf(threshold float64, scores ...float64) *scoreDist {
	d := newScoreDist()
	for _, s := range scores {
		d.add(s, threshold)
	}
	return &d
}

// TestScoreDistByHand checks the sketch's quantiles, mean and the
// Kolmogorov–Smirnov statistic against values worked out by hand.
func TestScoreDistByHand(t *testing.T) {
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	// Threshold 2: ratios 0.5 ×4 (bin 25, [0.50,0.52)), 1.5 ×1 (bin 75).
	a := distOf(2, 1, 1, 1, 1, 3)
	if a.N != 5 || a.Bins[25] != 4 || a.Bins[75] != 1 {
		t.Fatalf("bins: n %d, bin25 %d, bin75 %d", a.N, a.Bins[25], a.Bins[75])
	}
	// mean (4×0.5 + 1.5)/5 = 0.7.
	if !near(a.mean(), 0.7) {
		t.Errorf("mean %v, want 0.7", a.mean())
	}
	// p50: rank 2.5 of 4 in bin 25: 0.50 + 2.5/4 × 0.02 = 0.5125.
	// p90: rank 4.5, bin 75 holds rank 4..5: 1.50 + 0.5/1 × 0.02 = 1.51;
	// p99: rank 4.95: 1.50 + 0.95 × 0.02 = 1.519.
	for _, c := range []struct{ q, want float64 }{{0.5, 0.5125}, {0.9, 1.51}, {0.99, 1.519}} {
		if got := a.quantile(c.q); !near(got, c.want) {
			t.Errorf("p%v = %v, want %v", 100*c.q, got, c.want)
		}
	}
	// Above 4 × the threshold: the last bin, up to the largest value.
	// Threshold 1: ratios 5 and 9; p50 rank 1 of 2: 4 + 1/2 × (9−4) = 6.5.
	o := distOf(1, 5, 9)
	if o.Bins[distBins] != 2 || !near(o.quantile(0.5), 6.5) || !near(o.quantile(1), 9) {
		t.Errorf("overflow: bin %d, p50 %v, p100 %v", o.Bins[distBins], o.quantile(0.5), o.quantile(1))
	}
	// A negative or NaN score: the first bin and the last.
	e := distOf(1, -3, math.NaN())
	if e.Bins[0] != 1 || e.Bins[distBins] != 1 {
		t.Errorf("edge cases: first bin %d, last bin %d", e.Bins[0], e.Bins[distBins])
	}

	// KS: b has ratios 0.5 ×1 and 1.5 ×3 (threshold 1: scores 0.5, 1.5).
	// Cumulative at bin 25: a 4/5, b 1/4: |0.8 − 0.25| = 0.55; at bin 75
	// both reach 1.
	b := distOf(1, 0.5, 1.5, 1.5, 1.5)
	if got := ksDistance(a, b); !near(got, 0.55) {
		t.Errorf("KS %v, want 0.55", got)
	}
	if got := ksDistance(a, a); got != 0 {
		t.Errorf("KS of a with itself %v", got)
	}
	// Disjoint: every a below every c: KS 1.
	if got := ksDistance(distOf(1, 0.1, 0.2), distOf(1, 3, 3.5)); !near(got, 1) {
		t.Errorf("KS of disjoint samples %v, want 1", got)
	}
	if got := ksDistance(a, distOf(1)); got != 0 {
		t.Errorf("KS against nothing %v", got)
	}
	c := compareDists(a, b)
	if c.Serving.Windows != 5 || c.Shadow.Windows != 4 || c.KS != 0.55 || c.Serving.P50 != 0.5125 || c.Shadow.Mean != 1.25 {
		t.Errorf("comparison %+v", c)
	}
}

// TestShadowStateRoundTrip: a run's saved state decodes to itself; one
// whose counts disagree is refused.
func TestShadowStateRoundTrip(t *testing.T) {
	r := &shadowRun{Model: "pump8@2", Serving: "pump8@1", Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		servingDist: *distOf(1, 0.2, 0.4, 2), shadowDist: *distOf(1, 0.3, 1.2, 5), Windows: 3, ServingOver: 1, ShadowOver: 2}
	b := r.stateLocked()
	st, err := decodeShadowState(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.Windows != 3 || st.ShadowOver != 2 || !st.Started.Equal(r.Started) || st.ShadowDist.Bins[60] != 1 || st.ServingDist.Max != 2 {
		t.Fatalf("decoded %+v", st)
	}
	for name, mut := range map[string]func(*shadowState){
		"windows":  func(s *shadowState) { s.Windows = 4 },
		"over":     func(s *shadowState) { s.ShadowOver = 9 },
		"bins":     func(s *shadowState) { s.ServingDist.Bins = s.ServingDist.Bins[:10] },
		"model":    func(s *shadowState) { s.Model = "pump8" },
		"version":  func(s *shadowState) { s.Version = 7 },
		"negative": func(s *shadowState) { s.ShadowDist.Sum = -1 },
	} {
		bad := st
		bad.ServingDist.Bins = append([]uint64(nil), st.ServingDist.Bins...)
		mut(&bad)
		b, _ := json.Marshal(bad)
		if _, err := decodeShadowState(b); err == nil {
			t.Errorf("%s: accepted %s", name, b)
		}
	}
}

// FuzzDecodeShadowState: a shadow run's saved state, whatever the file
// holds, decodes or is refused without a panic; what decodes encodes and
// decodes to the same counts.
func FuzzDecodeShadowState(f *testing.F) {
	r := &shadowRun{Model: "m@1", Serving: "m@0", servingDist: *distOf(1, 0.5), shadowDist: *distOf(1, 7), Windows: 1, ShadowOver: 1}
	f.Add(r.stateLocked())
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"model":"a@b","serving_dist":{"bins":[1]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeShadowState(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := decodeShadowState(again)
		if err != nil || st2.Windows != st.Windows || st2.ShadowOver != st.ShadowOver || st2.ServingDist.N != st.ServingDist.N {
			t.Fatalf("re-decoding %s: %+v, %v", again, st2, err)
		}
	})
}
