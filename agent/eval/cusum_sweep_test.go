package eval

import (
	"context"
	"encoding/gob"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/source"
)

// The CUSUM experiment of issue 16 (README.md, "Alert-level delay: a
// CUSUM beside the threshold"): the window scores of valve1 and of the 12
// anomaly-free pieces are learnt once per file, then the detector is
// replayed with and without a CUSUM over a grid of (factor, k, h), the
// knobs chosen on one block half of valve1 and reported on the other.
//
//	VIGIL_SKAB_SWEEP=1 [VIGIL_SKAB_SWEEP_CACHE=/tmp/cusum.gob] go test -count=1 -run TestCUSUMSweepSKAB -v -timeout 30m ./agent/eval
//
// The cache, when named, holds the learnt window scores (written when
// missing, read otherwise).

// swFile is one file's kept window scores and what replaying needs.
type swFile struct {
	Name string
	Ends []int
	// Scores are the window scores in units of the file's factor-1
	// threshold (score / (threshold / factor)).
	Scores []float64
	// Location and Scale normalise ln(Scores) by the model's unseen-score
	// fit; MedLoc and MADScale by the median and 1.4826·MAD of the
	// ln validation scores (from their 101 percentiles).
	Location, Scale  float64
	MedLoc, MADScale float64
	Ref              Counts // eval.SKAB's counts at the default
	RefDetected      int
	RefFalse         int

	times  []time.Time
	truth  []bool
	cps    []bool
	train  int
	window int
}

// swKnobs is one detector configuration of the sweep.
type swKnobs struct {
	Factor float64 // the threshold in units of the factor-1 threshold
	K, H   float64 // CUSUM allowance and interval; H 0: off
	Only   bool    // the CUSUM alone
	MAD    bool    // z from the validation scores' median / MAD
	// Tau, when > 0, replaces the fixed location by the stream's own
	// level: an exponential mean of ln score with time constant Tau
	// windows, updated while the sum is 0 (a prototype, in this test
	// only: an alarm is fed to the detector as an exceeding score, so
	// with 2/3 it opens a window later than an OR inside the detector).
	Tau float64
	// M, when > 1, updates the sum once every M windows with their mean
	// z (the fixed location), against the windows' overlap; the alarm
	// holds until the next update (a prototype, as Tau).
	M int
}

func (k swKnobs) String() string {
	if k.H == 0 {
		return fmt.Sprintf("factor %.1f", k.Factor)
	}
	s := fmt.Sprintf("k %g h %g", k.K, k.H)
	if k.Tau > 0 {
		s += fmt.Sprintf(" tau %.0f", k.Tau)
	}
	if k.M > 1 {
		s += fmt.Sprintf(" every %d", k.M)
	}
	if !k.Only {
		s = fmt.Sprintf("factor %.1f ", k.Factor) + s
	}
	return s
}

func (f *swFile) replay(t testing.TB, kn swKnobs) (Counts, Alerts) {
	o := detect.DefaultOptions()
	o.Threshold = kn.Factor
	if kn.H > 0 && kn.Tau == 0 && kn.M <= 1 {
		loc, scale := f.Location, f.Scale
		if kn.MAD {
			loc, scale = f.MedLoc, f.MADScale
		}
		o.CUSUM = detect.CUSUM{K: kn.K, H: kn.H, Location: loc, Scale: scale, Only: kn.Only}
	}
	det, err := detect.New(o)
	if err != nil {
		t.Fatal(err)
	}
	an := make([]bool, len(f.Ends))
	var opens, closes []time.Time
	level, sum := f.Location, 0.0
	block, n := 0.0, 0
	for i, e := range f.Ends {
		tm := f.times[e]
		score := f.Scores[i]
		if kn.M > 1 {
			block += min((math.Log(score)-f.Location)/f.Scale, 1e6)
			if n++; n == kn.M {
				sum = min(kn.H, max(0, sum+block/float64(n)-kn.K))
				block, n = 0, 0
			}
			if sum >= kn.H {
				score = math.MaxFloat32
			}
		}
		if kn.Tau > 0 {
			ls := math.Log(score)
			sum = min(kn.H, max(0, sum+(ls-level)/f.Scale-kn.K))
			if sum == 0 {
				level += (ls - level) / kn.Tau
			}
			if sum >= kn.H {
				score = math.MaxFloat32
			}
		}
		r := det.Observe(tm, score)
		an[i] = r.Anomalous
		switch r.Change {
		case detect.Open:
			opens = append(opens, tm)
		case detect.Close:
			closes = append(closes, tm)
		}
	}
	pred := Predict(Causal, f.window, f.Ends, an, f.train, len(f.times))
	return Count(pred, f.truth), AlertLevel(f.times[f.train:], f.truth, f.cps, opens, closes)
}

func swSum(t testing.TB, fs []*swFile, kn swKnobs) (Counts, Alerts) {
	var c Counts
	var a Alerts
	for _, f := range fs {
		x, y := f.replay(t, kn)
		c, a = c.Add(x), a.Add(y)
	}
	return c, a
}

// swLearn learns every file of dir selected by files with the defaults
// and keeps its window scores.
func swLearn(t *testing.T, dir, files string) []*swFile {
	opts := DefaultOptions()
	opts.Data, opts.Files, opts.KeepWindows, opts.Parallel = dir, files, true, 2
	rep, err := SKAB(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	fac := opts.Train.Calibration.Factor
	var out []*swFile
	for _, r := range rep.Files {
		th := r.Training.Threshold
		if th.Unseen == nil || th.Scores == nil || len(th.Scores.Quantiles) < 2 {
			t.Fatalf("%s: the threshold has no unseen fit or no quantiles", r.Name)
		}
		thr1 := r.Threshold / fac
		f := &swFile{Name: filepath.Join(dir, r.Name), Ref: r.Counts, RefDetected: r.Alerts.Detected, RefFalse: r.Alerts.False}
		f.Location, f.Scale = th.Unseen.Location-math.Log(thr1), th.Unseen.Scale
		lq := make([]float64, len(th.Scores.Quantiles))
		for i, q := range th.Scores.Quantiles {
			lq[i] = math.Log(q)
		}
		med := swMedian(lq)
		dev := make([]float64, len(lq))
		for i, v := range lq {
			dev[i] = math.Abs(v - med)
		}
		f.MedLoc, f.MADScale = med-math.Log(thr1), max(1.4826*swMedian(dev), 1e-3)
		for _, w := range r.Windows {
			s := w.Score
			if math.IsNaN(s) || math.IsInf(s, 0) {
				s = math.MaxFloat32
			}
			f.Ends = append(f.Ends, w.End)
			f.Scores = append(f.Scores, s/thr1)
		}
		out = append(out, f)
	}
	return out
}

func swMedian(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// attach reads a file's rows for the replay: times, labels, changepoints.
func (f *swFile) attach(t *testing.T) {
	fh, err := os.Open(f.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	tab, err := source.ReadCSV(fh, source.CSVOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultOptions()
	f.train, f.window, f.times = d.TrainRows, d.Train.Window, tab.Times
	labels, cps := tab.Labels[LabelColumn], tab.Labels[ChangepointColumn]
	n := len(tab.Times) - f.train
	f.truth, f.cps = make([]bool, n), make([]bool, n)
	for i := range n {
		f.truth[i] = labels[f.train+i] != 0
		f.cps[i] = cps != nil && cps[f.train+i] != 0
	}
}

func swStr(c Counts) string { return fmt.Sprintf("%.3f / %.2f / %.2f", c.F1(), c.FAR(), c.MAR()) }

func swAlerts(a Alerts) string {
	return fmt.Sprintf("%d/%d, %.0f s, %d", a.Detected, a.Anomalies, a.MedianDelay(), a.False)
}

func TestCUSUMSweepSKAB(t *testing.T) {
	if os.Getenv("VIGIL_SKAB_SWEEP") == "" {
		t.Skip("the CUSUM sweep of README.md; set VIGIL_SKAB_SWEEP=1 to run it (learns 28 models)")
	}
	testkit.SkipUnderRace(t, "learns 28 models on real data")
	af := filepath.Join(skabDir, "anomaly-free", "anomaly-free.csv")
	if _, err := os.Stat(filepath.Join(skabDir, "valve1")); err != nil {
		t.Skipf("SKAB data not available: %v", err)
	}
	if _, err := os.Stat(af); err != nil {
		t.Skipf("SKAB anomaly-free recording not available: %v", err)
	}
	// a fixed folder: the cache names the pieces by path
	afDir := filepath.Join(os.TempDir(), "vigil-cusum-sweep-af")
	writeAnomalyFreePieces(t, af, afDir, 12, 783)

	var v1, afs []*swFile
	cache := os.Getenv("VIGIL_SKAB_SWEEP_CACHE")
	if b, err := os.ReadFile(cache); cache != "" && err == nil {
		var c struct{ V1, AF []*swFile }
		if err := gob.NewDecoder(strings.NewReader(string(b))).Decode(&c); err != nil {
			t.Fatalf("%s: %v", cache, err)
		}
		v1, afs = c.V1, c.AF
	} else {
		start := time.Now()
		v1 = swLearn(t, skabDir, "valve1/*.csv")
		afs = swLearn(t, afDir, "")
		t.Logf("learnt 28 models in %s", time.Since(start).Round(time.Second))
		if cache != "" {
			fh, err := os.Create(cache)
			if err != nil {
				t.Fatal(err)
			}
			if err := gob.NewEncoder(fh).Encode(struct{ V1, AF []*swFile }{v1, afs}); err != nil {
				t.Fatal(err)
			}
			if err := fh.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, f := range slices.Concat(v1, afs) {
		f.attach(t)
		// the replay without a CUSUM at the default factor is eval.SKAB
		c, a := f.replay(t, swKnobs{Factor: 2.4})
		if c != f.Ref || a.Detected != f.RefDetected || a.False != f.RefFalse {
			t.Fatalf("%s: replay %+v (%d detected, %d false), eval.SKAB %+v (%d, %d)", f.Name, c, a.Detected, a.False, f.Ref, f.RefDetected, f.RefFalse)
		}
	}
	if len(v1) != 16 || len(afs) != 12 {
		t.Fatalf("%d valve1 files and %d anomaly-free pieces, want 16 and 12", len(v1), len(afs))
	}

	var factors []float64
	for f := 1.8; f <= 3.60001; f += 0.1 {
		factors = append(factors, math.Round(f*10)/10)
	}
	ks := []float64{0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8}
	hs := []float64{0.5, 1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200}
	type family struct {
		name string
		grid []swKnobs
	}
	var fams []family
	def := family{name: "default (K-of-N 2/3)"}
	for _, f := range factors {
		def.grid = append(def.grid, swKnobs{Factor: f})
	}
	fams = append(fams, def)
	for _, mad := range []bool{false, true} {
		z := "unseen fit"
		if mad {
			z = "median/MAD"
		}
		or, only := family{name: "2/3 OR CUSUM, z " + z}, family{name: "CUSUM only, z " + z}
		for _, k := range ks {
			for _, h := range hs {
				if mad {
					// the validation windows' MAD is 0.02–0.13 in ln score,
					// a tenth or less of the unseen fit's scale (0.5)
					k, h = 10*k, 10*h
				}
				for _, f := range factors {
					or.grid = append(or.grid, swKnobs{Factor: f, K: k, H: h, MAD: mad})
				}
				only.grid = append(only.grid, swKnobs{Factor: 2.4, K: k, H: h, Only: true, MAD: mad})
			}
		}
		fams = append(fams, or, only)
	}
	self := family{name: "2/3 OR CUSUM on the stream's own level"}
	for _, tau := range []float64{30, 120, 600} {
		for _, k := range []float64{0.25, 0.5, 1, 1.5, 2} {
			for _, h := range []float64{1, 2, 5, 10, 20, 50} {
				for _, f := range factors {
					self.grid = append(self.grid, swKnobs{Factor: f, K: k, H: h, Tau: tau})
				}
			}
		}
	}
	fams = append(fams, self)
	every := family{name: "2/3 OR CUSUM updated every M windows"}
	for _, m := range []int{10, 30} {
		for _, k := range []float64{0.25, 0.5, 1, 1.5, 2, 3} {
			for _, h := range []float64{0.5, 1, 2, 3, 5, 10} {
				for _, f := range factors {
					every.grid = append(every.grid, swKnobs{Factor: f, K: k, H: h, M: m})
				}
			}
		}
	}
	fams = append(fams, every)

	pick := func(names ...int) []*swFile {
		var o []*swFile
		for _, n := range names {
			i := slices.IndexFunc(v1, func(f *swFile) bool { return strings.HasSuffix(f.Name, fmt.Sprintf("valve1/%d.csv", n)) })
			o = append(o, v1[i])
		}
		return o
	}
	splits := []struct {
		name         string
		choose, hold []*swFile
	}{
		{"A → B", pick(0, 1, 2, 3, 8, 9, 10, 11), pick(4, 5, 6, 7, 12, 13, 14, 15)},
		{"B → A", pick(4, 5, 6, 7, 12, 13, 14, 15), pick(0, 1, 2, 3, 8, 9, 10, 11)},
	}
	type scored struct {
		kn swKnobs
		c  Counts
		a  Alerts
	}
	var b strings.Builder
	fmt.Fprintln(&b, "| config | rule | split | knobs | choosing half | alerts, choosing | held out | alerts held out | anomaly-free FAR (false ep) |")
	// the default's choice on each half, the reference for the delay rule
	ref := make([]scored, len(splits))
	for si, sp := range splits {
		for _, fam := range fams {
			all := make([]scored, len(fam.grid))
			for i, kn := range fam.grid {
				c, a := swSum(t, sp.choose, kn)
				all[i] = scored{kn, c, a}
			}
			// F1: the highest F1 with FAR ≤ 10 % on the choosing half;
			// ties to the shorter median delay.
			f1 := -1
			for i, s := range all {
				if s.c.FAR() > 10 {
					continue
				}
				if f1 < 0 || s.c.F1() > all[f1].c.F1()+1e-12 ||
					(math.Abs(s.c.F1()-all[f1].c.F1()) <= 1e-12 && s.a.MedianDelay() < all[f1].a.MedianDelay()) {
					f1 = i
				}
			}
			if f1 < 0 {
				fmt.Fprintf(&b, "| %s | F1 | %s | nothing with FAR ≤ 10 %% | | | | | |\n", fam.name, sp.name)
				continue
			}
			if fam.name == def.name {
				ref[si] = all[f1]
			}
			rules := []struct {
				name string
				i    int
			}{{"F1", f1}}
			// delay: the shortest median delay on the choosing half among
			// knobs not worse there than the default's choice (FAR ≤ 10 %,
			// F1 within 0.01, as many detections, no more false
			// episodes); ties to the higher F1.
			if fam.name != def.name {
				r, d := ref[si], -1
				for i, s := range all {
					if s.c.FAR() > 10 || s.c.F1() < r.c.F1()-0.01 || s.a.Detected < r.a.Detected || s.a.False > r.a.False {
						continue
					}
					if d < 0 || s.a.MedianDelay() < all[d].a.MedianDelay() ||
						(s.a.MedianDelay() == all[d].a.MedianDelay() && s.c.F1() > all[d].c.F1()) {
						d = i
					}
				}
				if d >= 0 {
					rules = append(rules, struct {
						name string
						i    int
					}{"delay", d})
				}
			}
			for _, rule := range rules {
				s := all[rule.i]
				hc, ha := swSum(t, sp.hold, s.kn)
				ac, aa := swSum(t, afs, s.kn)
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %.2f (%d) |\n",
					fam.name, rule.name, sp.name, s.kn, swStr(s.c), swAlerts(s.a), swStr(hc), swAlerts(ha), ac.FAR(), aa.False)
				if testing.Verbose() {
					var per []string
					for _, f := range sp.hold {
						_, a := f.replay(t, s.kn)
						per = append(per, fmt.Sprintf("%s %v", filepath.Base(f.Name), a.Delays))
					}
					t.Logf("%s %s %s held-out delays: %s", fam.name, rule.name, sp.name, strings.Join(per, "; "))
				}
			}
		}
	}
	// all 16 at the default, for reference, and the trade-off of the
	// CUSUM (z from the unseen fit) beside 2/3 at factor 2.4
	c, a := swSum(t, v1, swKnobs{Factor: 2.4})
	ac, aa := swSum(t, afs, swKnobs{Factor: 2.4})
	fmt.Fprintf(&b, "\nall 16 at factor 2.4, no CUSUM: %s, %s; anomaly-free %.2f (%d)\n", swStr(c), swAlerts(a), ac.FAR(), aa.False)
	fmt.Fprintln(&b, "| k | h | all 16, 2/3 OR CUSUM at factor 2.4 | alerts | anomaly-free FAR (false ep) |")
	for _, k := range []float64{0.5, 1, 1.5, 2} {
		for _, h := range []float64{2, 5, 10, 20, 50} {
			kn := swKnobs{Factor: 2.4, K: k, H: h}
			c, a := swSum(t, v1, kn)
			ac, aa := swSum(t, afs, kn)
			fmt.Fprintf(&b, "| %.2g | %.3g | %s | %s | %.2f (%d) |\n", k, h, swStr(c), swAlerts(a), ac.FAR(), aa.False)
		}
	}
	// The oracle: for each file, the first window after the anomaly's
	// start that scores above every window of the file before it — a
	// threshold set per file after seeing it, the earliest opening of any
	// detector of these scores that raises nothing before the anomaly.
	var oracle []float64
	fmt.Fprint(&b, "\noracle delay (s) per file:")
	for _, f := range v1 {
		start := f.train + slices.Index(f.truth, true)
		pre, d := 0.0, math.NaN()
		for i, e := range f.Ends {
			if e < start {
				pre = max(pre, f.Scores[i])
			} else if f.Scores[i] > pre {
				d = f.times[e].Sub(f.times[start]).Seconds()
				break
			}
		}
		if !math.IsNaN(d) {
			oracle = append(oracle, d)
		}
		fmt.Fprintf(&b, " %s: %.0f", strings.TrimSuffix(filepath.Base(f.Name), ".csv"), d)
	}
	fmt.Fprintf(&b, "; median of the %d found %.0f s\n", len(oracle), swMedian(oracle))
	// z (unseen fit) of the window ending s seconds after each anomaly's
	// start, and of the anomaly-free pieces' windows
	offs := []int{-30, 0, 15, 30, 45, 50, 55, 60, 65, 75, 90}
	fmt.Fprintf(&b, "\nz at seconds after the labelled start %v, threshold 2.4 at z:\n", offs)
	for _, f := range v1 {
		start := f.train + slices.Index(f.truth, true)
		fmt.Fprintf(&b, "%s (threshold z %.2f):", filepath.Base(f.Name), (math.Log(2.4)-f.Location)/f.Scale)
		for _, o := range offs {
			if i := slices.Index(f.Ends, start+o); i >= 0 {
				fmt.Fprintf(&b, " %.1f", (math.Log(f.Scores[i])-f.Location)/f.Scale)
			}
		}
		fmt.Fprintln(&b)
	}
	var zs []float64
	for _, f := range afs {
		for _, s := range f.Scores {
			zs = append(zs, (math.Log(s)-f.Location)/f.Scale)
		}
	}
	slices.Sort(zs)
	fmt.Fprintf(&b, "anomaly-free z, %d windows: median %.2f, 0.9 %.2f, 0.95 %.2f, 0.99 %.2f, max %.2f\n", len(zs),
		zs[len(zs)/2], zs[len(zs)*9/10], zs[len(zs)*95/100], zs[len(zs)*99/100], zs[len(zs)-1])
	t.Log("\n" + b.String())
	if out := os.Getenv("VIGIL_SKAB_SWEEP_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
