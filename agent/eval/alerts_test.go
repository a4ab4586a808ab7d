package eval

import (
	"math"
	"testing"
	"time"
)

var at0 = time.Date(2020, 3, 9, 10, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return at0.Add(time.Duration(s * float64(time.Second))) }

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// The expected values below are worked by hand from SKAB's scaled sigmoid:
// a detection at relative position x of its window gets
// -h·tanh(u)/tanh(π/2) + h + A_FP, h = (A_TP−A_FP)/2, u = −π/2 + π·k/999,
// k = ⌊1000·x⌋ capped at 999; the normalised score is
// 100·(raw − null)/(perfect − null), null = A_FN per changepoint, perfect
// A_TP per changepoint.
func TestNABByHand(t *testing.T) {
	// x = 0.5: k = 500, u = π/1998; tanh(u)/tanh(π/2) = 0.0017144…;
	// standard: −0.555·0.0017144 + 0.555 − 0.11 = 0.4440485.
	mid := 0.44404850713138366
	tests := []struct {
		name           string
		cps, preds     []float64 // seconds
		tp, fn, fp     int
		std, lfp, lfn  float64 // normalised scores
		rawStandardSum float64
	}{
		{name: "a detection at the changepoint is perfect", cps: []float64{100}, preds: []float64{100},
			tp: 1, std: 100, lfp: 100, lfn: 100, rawStandardSum: 1},
		{name: "no detection is the null detector", cps: []float64{100}, preds: nil,
			fn: 1, std: 0, lfp: 0, lfn: 0, rawStandardSum: -1},
		{name: "a detection mid-window", cps: []float64{100}, preds: []float64{130},
			tp: 1, std: 100 * (mid + 1) / 2, lfn: 100 * (mid + 2) / 3, rawStandardSum: mid,
			// low FP: h = 0.61, the same tanh ratio: −0.61·0.0017144 + 0.61 − 0.22
			lfp: 100 * (-0.61*0.0017144016 + 0.61 - 0.22 + 1) / 2},
		{name: "a detection at the window's right end earns A_FP", cps: []float64{100}, preds: []float64{160},
			tp: 1, std: 100 * (-0.11 + 1) / 2, lfp: 100 * (-0.22 + 1) / 2, lfn: 100 * (-0.11 + 2) / 3, rawStandardSum: -0.11},
		{name: "a false positive before the window", cps: []float64{100}, preds: []float64{10, 100},
			tp: 1, fp: 1, std: 94.5, lfp: 89, lfn: 100 * 2.89 / 3, rawStandardSum: 0.89},
		{name: "a false positive after the window", cps: []float64{100}, preds: []float64{100, 161},
			tp: 1, fp: 1, std: 94.5, lfp: 89, lfn: 100 * 2.89 / 3, rawStandardSum: 0.89},
		{name: "a second detection in the same window is neither TP nor FP", cps: []float64{100}, preds: []float64{100, 110, 150},
			tp: 1, std: 100, lfp: 100, lfn: 100, rawStandardSum: 1},
		{
			name: "overlapping windows: the later one starts at the earlier one's end",
			// windows [0, 60] and [60, 90]: 10 s is the first's (x = 1/6,
			// k = 166), 60 s is inside both (the first already has its TP;
			// in the second, x = 0 — perfect), 95 s is an FP
			cps: []float64{0, 30}, preds: []float64{10, 60, 95},
			tp: 2, fp: 1,
			rawStandardSum: func() float64 {
				u := -math.Pi/2 + math.Pi*166/999
				return -0.555*math.Tanh(u)/math.Tanh(math.Pi/2) + 0.555 - 0.11 + 1 - 0.11
			}(),
			std: math.NaN(), lfp: math.NaN(), lfn: math.NaN(), // checked through the raw sum
		},
		{name: "no changepoint: only false positives, score undefined", cps: nil, preds: []float64{5},
			fp: 1, std: math.NaN(), lfp: math.NaN(), lfn: math.NaN(), rawStandardSum: -0.11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cps, preds []time.Time
			for _, s := range tt.cps {
				cps = append(cps, at(s))
			}
			for _, s := range tt.preds {
				preds = append(preds, at(s))
			}
			n := NAB(cps, preds, NABWindow)
			if n.TP != tt.tp || n.FN != tt.fn || n.FP != tt.fp || n.Windows != len(cps) {
				t.Fatalf("TP %d FN %d FP %d windows %d, want %d %d %d %d", n.TP, n.FN, n.FP, n.Windows, tt.tp, tt.fn, tt.fp, len(cps))
			}
			if !near(n.Raw[0], tt.rawStandardSum) {
				t.Fatalf("raw standard %v, want %v", n.Raw[0], tt.rawStandardSum)
			}
			want := [3]float64{tt.std, tt.lfp, tt.lfn}
			got := n.Scores()
			for i := range want {
				if math.IsNaN(want[i]) {
					if len(cps) == 0 && !math.IsNaN(got[i]) {
						t.Fatalf("%s: %v, want NaN without changepoints", NABProfiles[i].Name, got[i])
					}
					continue
				}
				if math.Abs(got[i]-want[i]) > 1e-6 {
					t.Fatalf("%s: %v, want %v", NABProfiles[i].Name, got[i], want[i])
				}
			}
		})
	}
}

// TestNABSumsBeforeNormalising: files are summed raw, as SKAB does, not
// averaged after normalising.
func TestNABSumsBeforeNormalising(t *testing.T) {
	a := NAB([]time.Time{at(100)}, []time.Time{at(100)}, NABWindow) // 100
	b := NAB([]time.Time{at(100), at(500)}, nil, NABWindow)         // 0
	sum := a.Add(b)
	// raw 1 − 2 = −1, null −3, perfect 3: 100·2/6
	if got := sum.Score(0); math.Abs(got-100.0/3) > 1e-9 {
		t.Fatalf("summed standard %v, want 33.333 (not the mean of 100 and 0)", got)
	}
	if sum.Windows != 3 || sum.TP != 1 || sum.FN != 2 {
		t.Fatalf("summed counts %+v", sum)
	}
}

func TestAlertLevelByHand(t *testing.T) {
	// 200 rows at 1 Hz; rows 50..89 anomalous; changepoints at 50 and 89.
	n := 200
	times := make([]time.Time, n)
	anomalous := make([]bool, n)
	cps := make([]bool, n)
	for i := range n {
		times[i] = at(float64(i))
		anomalous[i] = i >= 50 && i < 90
	}
	cps[50], cps[89] = true, true
	opens := []time.Time{at(20), at(62), at(120), at(160)} // 20: false; 62: detects (12 s); 120: in the 60 s grace; 160: false
	closes := []time.Time{at(30), at(95), at(130), at(170)}
	a := AlertLevel(times, anomalous, cps, opens, closes)
	if a.Anomalies != 1 || a.Detected != 1 || a.Files != 1 || a.FilesDetected != 1 {
		t.Fatalf("anomalies %d detected %d files %d/%d, want 1 1 1/1", a.Anomalies, a.Detected, a.FilesDetected, a.Files)
	}
	if len(a.Delays) != 1 || a.Delays[0] != 12 {
		t.Fatalf("delays %v, want [12]", a.Delays)
	}
	if a.Episodes != 4 || a.False != 2 || len(a.Openings) != 4 || len(a.FalseOpenings) != 2 ||
		!a.FalseOpenings[0].Equal(at(20)) || !a.FalseOpenings[1].Equal(at(160)) {
		t.Fatalf("episodes %d false %d (%v), want 4 and 2 (at 20 s and 160 s)", a.Episodes, a.False, a.FalseOpenings)
	}
	// openings: windows [50,110] and [89,149] overlap → [110,149]; 62 is
	// the first's TP (x = 0.2), 120 the second's (x = 10/39), 20 and 160
	// are FPs.
	if a.NAB.TP != 2 || a.NAB.FN != 0 || a.NAB.FP != 2 {
		t.Fatalf("NAB counts %+v, want 2 TP, 0 FN, 2 FP", a.NAB)
	}
	// openings and closings: 95 and 130 are second detections inside
	// windows (nothing); 30 and 170 are FPs too.
	if a.NABEdges.TP != 2 || a.NABEdges.FP != 4 {
		t.Fatalf("NAB edges counts %+v, want 2 TP, 4 FP", a.NABEdges)
	}

	// The one-episode ceiling opens at row 50: the first window's TP at
	// its very start (reward A_TP = 1), the second window ([110,149])
	// missed, nothing false: standard and low FP raw 1 − 1 = 0 between
	// null −2 and perfect 2, low FN raw 1 − 2 = −1 between −4 and 2: 50
	// in every profile.
	if a.NABOneEpisode.TP != 1 || a.NABOneEpisode.FN != 1 || a.NABOneEpisode.FP != 0 {
		t.Fatalf("one-episode ceiling counts %+v, want 1 TP, 1 FN, 0 FP", a.NABOneEpisode)
	}
	if got := a.NABOneEpisode.Scores(); math.Abs(got[0]-50) > 1e-9 || math.Abs(got[1]-50) > 1e-9 || math.Abs(got[2]-50) > 1e-9 {
		t.Fatalf("one-episode ceiling scores %v, want 50 in each profile", got)
	}

	// An episode open since before the anomaly does not detect it.
	b := AlertLevel(times, anomalous, cps, []time.Time{at(45)}, nil)
	if b.Detected != 0 || b.FilesDetected != 0 || b.False != 1 || len(b.Delays) != 0 {
		t.Fatalf("opened before the anomaly: %+v", b)
	}
	tot := a.Add(b)
	if tot.Files != 2 || tot.FilesDetected != 1 || tot.Episodes != 5 || tot.False != 3 || tot.Anomalies != 2 || tot.Detected != 1 {
		t.Fatalf("total %+v", tot)
	}
}

func TestDelayStatistics(t *testing.T) {
	a := Alerts{Delays: []float64{30, 10, 20, 100}}
	if a.MedianDelay() != 25 || a.MeanDelay() != 40 {
		t.Fatalf("median %v mean %v, want 25 and 40", a.MedianDelay(), a.MeanDelay())
	}
	a.Delays = a.Delays[:3]
	if a.MedianDelay() != 20 {
		t.Fatalf("median of 3: %v, want 20", a.MedianDelay())
	}
	if !math.IsNaN((Alerts{}).MedianDelay()) || !math.IsNaN((Alerts{}).MeanDelay()) {
		t.Fatal("no delays should give NaN")
	}
}

func TestCalibrationCheckByHand(t *testing.T) {
	files := []FileResult{
		{NormalConfidence: []float64{0.1, 0.5, 0.95, 0.999}},
		{NormalConfidence: []float64{0.2, 0.9, 0.3, 0.4, 0.6, 0.7}},
	}
	got := CalibrationCheck(files, []float64{0.5, 0.9, 0.99}, false)
	// 10 windows; ≥ 0.5: 0.5 0.95 0.999 0.9 0.6 0.7 = 6; ≥ 0.9: 3; ≥ 0.99: 1
	want := []struct{ above int }{{6}, {3}, {1}}
	for i, p := range got {
		if p.Windows != 10 || p.Above != want[i].above || !near(p.Share, float64(want[i].above)/10) || !near(p.Expected, 1-p.Level) {
			t.Errorf("level %v: %+v, want %d of 10", p.Level, p, want[i].above)
		}
	}
}
