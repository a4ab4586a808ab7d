package eval

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
)

// A CUSUM without Location and Scale takes each model's unseen-score fit:
// the windows' verdicts are those of a detector given that fit by hand.
func TestSKABCUSUMTakesTheModelsFit(t *testing.T) {
	opts := fastOptions(syntheticSKAB(t))
	opts.Files, opts.KeepWindows = "valve1/*.csv", true
	opts.Detect.CUSUM = detect.CUSUM{K: 0, H: 0.5} // sensitive: it fires on normal windows too
	rep, err := SKAB(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	added := 0
	for _, r := range rep.Files {
		u := r.Training.Threshold.Unseen
		if u == nil {
			t.Fatalf("%s: no unseen fit", r.Name)
		}
		withFit, without := opts.Detect, opts.Detect
		withFit.Threshold, without.Threshold = r.Threshold, r.Threshold
		withFit.CUSUM.Location, withFit.CUSUM.Scale = u.Location, u.Scale
		without.CUSUM = detect.CUSUM{}
		a, err := detect.New(withFit)
		if err != nil {
			t.Fatal(err)
		}
		b, err := detect.New(without)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range r.Windows {
			// any increasing times: they change episodes, not Anomalous
			end := time.Unix(int64(i), 0)
			ra, rb := a.Observe(end, w.Score), b.Observe(end, w.Score)
			if ra.Anomalous != w.Anomalous {
				t.Fatalf("%s window %d (row %d): eval says anomalous %v, a detector with the model's fit %v", r.Name, i, w.End, w.Anomalous, ra.Anomalous)
			}
			if ra.Anomalous && !rb.Anomalous {
				added++
			}
		}
	}
	if added == 0 {
		t.Errorf("the CUSUM made no window anomalous that the threshold did not: the test checks nothing")
	}

	for _, tt := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no unseen fit", func(o *Options) { o.Train.Calibration.On = "train" }, "unseen-score fit"},
		{"ensemble", func(o *Options) { o.Ensemble = "t2" }, "ensemble"},
		{"Only without H", func(o *Options) { o.Detect.CUSUM = detect.CUSUM{Only: true} }, "CUSUM.Only"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := fastOptions(syntheticSKAB(t))
			o.Files = "valve1/0.csv"
			o.Detect.CUSUM = detect.CUSUM{K: 0.5, H: 3}
			tt.edit(&o)
			if _, err := SKAB(context.Background(), o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}
