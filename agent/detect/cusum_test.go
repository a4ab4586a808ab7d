package detect

import (
	"math"
	"strings"
	"testing"
	"time"
)

// cusumDetector has a threshold no test score reaches (unless a test says
// so), 2 of 3, the default 5 s CloseAfter and a CUSUM on z = ln score
// (Location 0, Scale 1) with allowance 1 and interval 5.
func cusumDetector(t *testing.T, edit func(*Options)) *Detector {
	t.Helper()
	o := DefaultOptions()
	o.Threshold = math.Exp(100)
	o.CUSUM = CUSUM{K: 1, H: 5, Scale: 1}
	if edit != nil {
		edit(&o)
	}
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// feed observes one window per second with scores e^z and returns the
// results.
func feed(d *Detector, t0 time.Time, zs ...float64) []Result {
	out := make([]Result, len(zs))
	for i, z := range zs {
		out[i] = d.Observe(t0.Add(time.Duration(i)*time.Second), math.Exp(z))
	}
	return out
}

func changes(rs []Result, c Change) []int {
	var at []int
	for i, r := range rs {
		if r.Change == c {
			at = append(at, i)
		}
	}
	return at
}

func TestCUSUMOpensWhenTheSumReachesH(t *testing.T) {
	tests := []struct {
		name string
		zs   []float64
		open int // the window that opens, -1: none
	}{
		// z − K = 2 a window: S = 2, 4, 6→5 at the third
		{"steady rise", []float64{0, 0, 0, 3, 3, 3, 3}, 5},
		// z − K = 0.6: S = 0.6, 1.2, … 4.8, 5.4→5 at the ninth rising window
		{"slow rise", []float64{0, 1.6, 1.6, 1.6, 1.6, 1.6, 1.6, 1.6, 1.6, 1.6, 1.6, 1.6}, 9},
		// at the allowance nothing accumulates
		{"at K", []float64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, -1},
		// a dip empties the sum: 2, 4, then 0, then 2, 4, 5
		{"interrupted", []float64{3, 3, -10, 3, 3, 3}, 5},
		// one huge window is enough: the sum is capped at H, not below it
		{"one big window", []float64{0, 0, 50}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := feed(cusumDetector(t, nil), time.Unix(1e9, 0), tt.zs...)
			opens := changes(rs, Open)
			if tt.open < 0 {
				if len(opens) > 0 {
					t.Fatalf("opened at %v, want never", opens)
				}
				return
			}
			if len(opens) != 1 || opens[0] != tt.open {
				t.Fatalf("opened at %v, want at window %d", opens, tt.open)
			}
			r := rs[tt.open]
			if r.Exceeds || !r.Anomalous || r.Severity != "warning" || r.Ratio >= 1 {
				t.Errorf("the opening window: %+v, want a warning below the threshold", r)
			}
			for i := range tt.open {
				if rs[i].Anomalous {
					t.Errorf("window %d anomalous before the sum reached H", i)
				}
			}
		})
	}
}

func TestCUSUMFallsBackAndClosesAfterCloseAfter(t *testing.T) {
	d := cusumDetector(t, nil)
	t0 := time.Unix(1e9, 0)
	// 100 anomalous windows: the sum stays capped at 5, so the first
	// window under the allowance (z 0: S = 4) ends the anomaly at once.
	zs := make([]float64, 0, 130)
	for range 100 {
		zs = append(zs, 4)
	}
	for range 30 {
		zs = append(zs, 0)
	}
	rs := feed(d, t0, zs...)
	if o := changes(rs, Open); len(o) != 1 || o[0] != 1 {
		t.Fatalf("opened at %v, want once, at window 1 (S = 3, 5)", o)
	}
	if !rs[99].Anomalous || rs[100].Anomalous {
		t.Fatalf("windows 99, 100: anomalous %v, %v; want the anomaly to end at the first normal window", rs[99].Anomalous, rs[100].Anomalous)
	}
	// CloseAfter 5 s: normal from window 100 (t0+100 s), closed at the
	// first window ending 5 s later.
	if c := changes(rs, Close); len(c) != 1 || c[0] != 105 {
		t.Fatalf("closed at %v, want once, at window 105", c)
	}
	if !rs[104].InEpisode || rs[105].InEpisode {
		t.Errorf("in episode at 104, 105: %v, %v", rs[104].InEpisode, rs[105].InEpisode)
	}
	// The sum has drained (5 − 30 < 0): a new rise needs the whole H
	// again and opens a new episode (no cooldown).
	rs = feed(d, t0.Add(200*time.Second), 3, 3, 3)
	if rs[1].Anomalous || rs[2].Change != Open || rs[2].EpisodeStart != t0.Add(202*time.Second) {
		t.Errorf("after the reset: %+v, %+v, want the third window to open a new episode", rs[1], rs[2])
	}
}

func TestCUSUMHoveringGivesOneEpisode(t *testing.T) {
	d := cusumDetector(t, nil)
	// after the opening the sum swings around H: 5, 4.5, 5, 4.5, ...;
	// the stream flips every window, CloseAfter rides over it
	zs := []float64{6}
	for range 20 {
		zs = append(zs, 0.5, 6)
	}
	zs = append(zs, -10, -10, -10, -10, -10, -10, -10)
	rs := feed(d, time.Unix(1e9, 0), zs...)
	if o, c := changes(rs, Open), changes(rs, Close); len(o) != 1 || len(c) != 1 {
		t.Fatalf("opens at %v, closes at %v: want one episode", o, c)
	}
	resumed := 0
	for _, r := range rs {
		if r.Resumed {
			resumed++
		}
	}
	if resumed != 20 {
		t.Errorf("%d resumed windows, want 20 (each return above H)", resumed)
	}
}

func TestCUSUMBesideOrInsteadOfTheThreshold(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	// scores at 10× the threshold: the K-of-N rule opens at the second
	// window; z = ln 10 − 100 keeps the CUSUM at 0
	or := cusumDetector(t, func(o *Options) { o.Threshold = 1; o.CUSUM.Location = 100 })
	rs := feed(or, t0, math.Log(10), math.Log(10), math.Log(10))
	if o := changes(rs, Open); len(o) != 1 || o[0] != 1 || rs[1].Severity != "critical" {
		t.Errorf("with a CUSUM beside it, the K-of-N rule opened at %v (%+v), want at window 1, critical", o, rs[1])
	}
	only := cusumDetector(t, func(o *Options) { o.Threshold = 1; o.CUSUM.Location = 100; o.CUSUM.Only = true })
	rs = feed(only, t0, math.Log(10), math.Log(10), math.Log(10))
	for i, r := range rs {
		if !r.Exceeds || r.Anomalous || r.Change != None {
			t.Errorf("Only, window %d: %+v, want exceeding but not anomalous", i, r)
		}
	}
	// Only: the CUSUM alone opens, as beside the threshold
	only = cusumDetector(t, func(o *Options) { o.CUSUM.Only = true })
	if o := changes(feed(only, t0, 0, 3, 3, 3), Open); len(o) != 1 || o[0] != 3 {
		t.Errorf("Only opened at %v, want at window 3", o)
	}
	// beside the threshold, a CUSUM never makes a window normal that the
	// K-of-N rule calls anomalous
	zs := []float64{0, 2, -1, 5, 5, 0, 5, 0, 0, 2, 2, 2, 6, -3, 6, 1, 1, 1, 1, 1, 1}
	plain := cusumDetector(t, func(o *Options) { o.Threshold = math.Exp(4); o.CUSUM = CUSUM{} })
	with := cusumDetector(t, func(o *Options) { o.Threshold = math.Exp(4); o.CUSUM.K = 1.5 })
	a, b := feed(plain, t0, zs...), feed(with, t0, zs...)
	extra := 0
	for i := range zs {
		if a[i].Anomalous && !b[i].Anomalous {
			t.Errorf("window %d: anomalous without the CUSUM, normal with it", i)
		}
		if b[i].Anomalous && !a[i].Anomalous {
			extra++
		}
	}
	if extra == 0 {
		t.Errorf("the CUSUM added no anomalous window to %v", zs)
	}
}

func TestCUSUMOddScores(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	d := cusumDetector(t, func(o *Options) { o.CUSUM.Only = true })
	if r := d.Observe(t0, math.NaN()); !r.Anomalous || r.Change != Open {
		t.Errorf("NaN score: %+v, want it to fill the sum and open", r)
	}
	d = cusumDetector(t, nil)
	feed(d, t0, 3, 3) // S = 4
	if r := d.Observe(t0.Add(2*time.Second), 0); r.Anomalous {
		t.Errorf("score 0: %+v, want normal", r)
	}
	// the zero score emptied the sum: 4 more is not 5
	if r := d.Observe(t0.Add(3*time.Second), math.Exp(5)); r.Anomalous {
		t.Errorf("after a zero score: %+v, want the sum restarted from 0", r)
	}
}

func TestCloseEpisodeEmptiesTheCUSUM(t *testing.T) {
	d := cusumDetector(t, nil)
	t0 := time.Unix(1e9, 0)
	rs := feed(d, t0, 4, 4)
	if rs[1].Change != Open {
		t.Fatalf("%+v, want an open", rs[1])
	}
	if r := d.CloseEpisode(t0.Add(2 * time.Second)); r.Change != Close {
		t.Fatalf("CloseEpisode: %+v", r)
	}
	// S would be min(5, 5 + 4 − 1) = 5 had it kept its sum; from 0 it is 3
	if r := d.Observe(t0.Add(3*time.Second), math.Exp(4)); r.Anomalous {
		t.Errorf("after CloseEpisode: %+v, want the sum restarted from 0", r)
	}
}

func TestCUSUMValidate(t *testing.T) {
	tests := []struct {
		name string
		c    CUSUM
		want string // "" valid
	}{
		{"off", CUSUM{}, ""},
		{"off, other fields ignored", CUSUM{K: -1, Scale: -1}, ""},
		{"on", CUSUM{K: 0.5, H: 4, Location: -3, Scale: 0.5}, ""},
		{"allowance 0", CUSUM{H: 4, Scale: 1}, ""},
		{"negative H", CUSUM{H: -1, Scale: 1}, "CUSUM.H"},
		{"NaN H", CUSUM{H: math.NaN(), Scale: 1}, "CUSUM.H"},
		{"infinite H", CUSUM{H: math.Inf(1), Scale: 1}, "CUSUM.H"},
		{"Only without H", CUSUM{Only: true}, "CUSUM.Only"},
		{"negative K", CUSUM{K: -0.5, H: 4, Scale: 1}, "CUSUM.K"},
		{"NaN K", CUSUM{K: math.NaN(), H: 4, Scale: 1}, "CUSUM.K"},
		{"infinite location", CUSUM{H: 4, Location: math.Inf(-1), Scale: 1}, "CUSUM.Location"},
		{"no scale", CUSUM{H: 4}, "CUSUM.Scale"},
		{"NaN scale", CUSUM{H: 4, Scale: math.NaN()}, "CUSUM.Scale"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			o.Threshold, o.CUSUM = 1, tt.c
			err := o.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate: %v, want it to name %s", err, tt.want)
			}
			if _, err2 := New(o); (err2 == nil) != (err == nil) {
				t.Errorf("New and Validate disagree: %v, %v", err2, err)
			}
		})
	}
}
