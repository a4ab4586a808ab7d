package models

import (
	"math"
	"os"
	"strings"
	"testing"
)

// TestUnseenSurvivalByHand: ln(score) Laplace around ln 2 with scale 0.5.
func TestUnseenSurvivalByHand(t *testing.T) {
	u := UnseenFit{Method: UnseenLogLaplace, Location: math.Ln2, Scale: 0.5}
	e := math.Exp
	for _, tc := range []struct {
		name        string
		score, want float64
	}{
		{"the median", 2, 0.5},
		{"one scale above", 2 * e(0.5), 0.5 * e(-1)},           // 0.18394
		{"two scales above", 2 * e(1), 0.5 * e(-2)},            // 0.06767
		{"one scale below", 2 * e(-0.5), 1 - 0.5*e(-1)},        // 0.81606
		{"ten times the median", 20, 0.5 * e(-2*math.Log(10))}, // ½·10^-2 = 0.005
		{"zero", 0, 1},
		{"negative", -3, 1},
		{"infinite", math.Inf(1), 0},
		{"NaN", math.NaN(), 0},
	} {
		got := u.Survival(tc.score)
		if math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: Survival(%v) = %v, want %v", tc.name, tc.score, got, tc.want)
		}
	}
	prev := 1.0
	for s := 0.01; s < 100; s *= 1.1 {
		p := u.Survival(s)
		if !(p < prev) {
			t.Fatalf("Survival(%v) = %v, not below %v", s, p, prev)
		}
		prev = p
	}
}

// TestConfidenceReadsTheUnseenFit: with a fit, Confidence is 1 − its
// survival at the score itself (no factor); without, the calibration
// scores at score / Factor, as older manifests have it.
func TestConfidenceReadsTheUnseenFit(t *testing.T) {
	q := make([]float64, 11)
	for i := range q {
		q[i] = float64(i) // scores 0..10 at probabilities 0, 0.1, ..., 1
	}
	th := Threshold{Method: MethodQuantile, Factor: 2, Scores: &ScoreStats{Count: 99, Quantiles: q}}
	if c, ok := th.Confidence(19); !ok || math.Abs(c-0.95) > 1e-12 {
		t.Errorf("without a fit: Confidence(19) = %v, %v; want 0.95 (the 95th percentile 9.5 × factor 2)", c, ok)
	}
	th.Unseen = &UnseenFit{Method: UnseenLogLaplace, Location: math.Log(4), Scale: 0.25}
	for _, tc := range []struct{ score, want float64 }{
		{4, 0.5},
		{4 * math.Exp(0.25), 1 - 0.5*math.Exp(-1)},
		{19, 1 - 0.5*math.Exp(-4*math.Log(19.0/4))},
	} {
		if c, ok := th.Confidence(tc.score); !ok || math.Abs(c-tc.want) > 1e-12 {
			t.Errorf("with a fit: Confidence(%v) = %v, %v; want %v", tc.score, c, ok, tc.want)
		}
	}
	// a manual threshold with a fit still has a confidence
	man := Threshold{Method: MethodManual, Unseen: th.Unseen}
	if c, ok := man.Confidence(4); !ok || c != 0.5 {
		t.Errorf("manual threshold with a fit: %v, %v; want 0.5, true", c, ok)
	}
}

// TestUnseenInManifest: the fit goes through Encode and DecodeManifest
// and is validated; manifests without it (pump8.json) still load.
func TestUnseenInManifest(t *testing.T) {
	data, err := os.ReadFile("pump8.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("pump8.json, without a fit: %v", err)
	}
	if m.Threshold.Unseen != nil {
		t.Fatalf("pump8.json has an unseen fit: %+v", m.Threshold.Unseen)
	}
	fit := UnseenFit{Method: UnseenLogLaplace, Location: -0.4, Scale: 0.5}
	m.Threshold.Unseen = &fit
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"unseen": {`) {
		t.Errorf("encoded manifest has no threshold.unseen:\n%s", b)
	}
	back, err := DecodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := back.Threshold.Unseen; got == nil || *got != fit {
		t.Errorf("decoded fit %+v, want %+v", got, fit)
	}

	for _, tc := range []struct {
		fit  UnseenFit
		want string
	}{
		{UnseenFit{Method: "normal", Scale: 1}, `threshold.unseen.method: is "normal", want one of log-laplace`},
		{UnseenFit{Method: UnseenLogLaplace, Scale: 0}, "threshold.unseen.scale: is 0, want > 0"},
		{UnseenFit{Method: UnseenLogLaplace, Scale: -1}, "threshold.unseen.scale: is -1, want > 0"},
		{UnseenFit{Method: UnseenLogLaplace, Location: math.Inf(1), Scale: 1}, "threshold.unseen.location"},
	} {
		m.Threshold.Unseen = &tc.fit
		err := m.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fit %+v: err = %v, want it to say %q", tc.fit, err, tc.want)
		}
	}
}
