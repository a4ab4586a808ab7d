package eval

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/models/train"
)

func TestParseEnsemble(t *testing.T) {
	tests := []struct {
		spec    string
		combine string
		members []string
		err     string
	}{
		{spec: "t2", members: []string{"t2"}},
		{spec: "q", members: []string{"q"}},
		{spec: "mean:ae,t2", combine: "mean", members: []string{"ae", "t2"}},
		{spec: "max:ae, q, t2", combine: "max", members: []string{"ae", "q", "t2"}},
		{spec: "ae,t2", err: "need mean: or max:"},
		{spec: "sum:ae,t2", err: `combine "sum"`},
		{spec: "max:ae,pca", err: `member "pca"`},
		{spec: "max:ae,ae", err: "twice"},
	}
	for _, tt := range tests {
		e, err := parseEnsemble(tt.spec)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err = %v, want it to say %q", tt.spec, err, tt.err)
			}
			continue
		}
		if err != nil || e.combine != tt.combine || strings.Join(e.members, ",") != strings.Join(tt.members, ",") {
			t.Errorf("%q = %+v, %v; want combine %q members %v", tt.spec, e, err, tt.combine, tt.members)
		}
	}
}

// TestEnsembleSKAB checks the wiring on one real file: "ae" alone, in
// units of its factor-1 threshold against the factor, flags exactly what
// the autoencoder does; "max:ae,t2" scores each window by the larger of
// that and the window's T² over its own threshold, from a PCA fitted
// independently here.
func TestEnsembleSKAB(t *testing.T) {
	testkit.SkipUnderRace(t, "learns models on real data")
	name := filepath.Join(skabDir, "valve1", "1.csv")
	f, err := os.Open(name)
	if err != nil {
		t.Skipf("SKAB data not available: %v", err)
	}
	tab, err := source.ReadCSV(f, source.CSVOptions{})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.KeepWindows = true
	run := func(spec string) FileResult {
		o := opts
		o.Ensemble = spec
		r, err := Evaluate(context.Background(), "valve1/1.csv", tab, o)
		if err != nil {
			t.Fatalf("%q: %v", spec, err)
		}
		return r
	}
	plain, ae, mx := run(""), run("ae"), run("max:ae,t2")
	factor := opts.Train.Calibration.Factor
	if ae.Counts != plain.Counts || ae.Alerts.Episodes != plain.Alerts.Episodes {
		t.Errorf(`"ae": %+v, %d episodes; the autoencoder alone: %+v, %d`, ae.Counts, ae.Alerts.Episodes, plain.Counts, plain.Alerts.Episodes)
	}
	if ae.Threshold != factor || mx.Threshold != factor {
		t.Errorf("detector thresholds %v and %v, want the factor %v", ae.Threshold, mx.Threshold, factor)
	}
	if len(ae.NormalConfidence) != 0 || len(plain.NormalConfidence) == 0 {
		t.Errorf("%d confidences with an ensemble, %d without; want none and some", len(ae.NormalConfidence), len(plain.NormalConfidence))
	}
	to := opts.Train
	to.Channels = tab.Channels
	to.Calibration.Factor = 1
	p, err := train.FitPCA(tab.Values[:opts.TrainRows], to, DefaultPCAVariance)
	if err != nil {
		t.Fatal(err)
	}
	ae1 := plain.Threshold / factor
	above := 0 // windows where T² is the larger member
	for i, w := range mx.Windows {
		_, t2 := p.Score(tab.Values[w.End+1-p.Window : w.End+1])
		a, b := plain.Windows[i].Score/ae1, t2/p.T2.Value
		if want := max(a, b); math.Abs(w.Score-want) > 1e-9*want {
			t.Fatalf("window ending at %d: score %v, want max(%v, %v)", w.End, w.Score, a, b)
		}
		if b > a {
			above++
		}
	}
	if above == 0 || above == len(mx.Windows) {
		t.Errorf("T² is the larger member in %d of %d windows: the test does not tell the members apart", above, len(mx.Windows))
	}
}
