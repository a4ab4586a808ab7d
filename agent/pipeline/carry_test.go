package pipeline

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
)

// feed runs p over inputs, after adopting from prev if it is not nil, and
// drains it.
func feed(t *testing.T, p *Pipeline, prev *Pipeline, inputs []source.Input) []string {
	t.Helper()
	var kept []string
	if prev != nil {
		kept = p.Adopt(prev)
	}
	ctx := context.Background()
	wait := start(ctx, p)
	for _, in := range inputs {
		if err := p.Put(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	p.CloseInput()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	return kept
}

// beforeAdopt runs a pipeline with one sensor stream on mean@1 over in,
// into a buffer of its own: the build a reload or switch adopts from.
func beforeAdopt(t *testing.T, in []source.Input) (*Pipeline, *memBuffer) {
	t.Helper()
	buf := &memBuffer{}
	p, err := New(Options{Device: "dev-01", Buffer: buf, Streams: []StreamSpec{sensorSpec(&meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1})}})
	if err != nil {
		t.Fatal(err)
	}
	feed(t, p, nil, in)
	return p, buf
}

// TestAdoptKeepsAnOpenEpisode (issue 14, item 8): a reload in the middle of
// an anomaly goes on with the same episode, with no second "open" alert,
// and the counters carry on; a stream whose threshold changed starts afresh.
func TestAdoptKeepsAnOpenEpisode(t *testing.T) {
	high := func(i int) []float64 {
		if i >= 10 && i < 30 {
			return []float64{3, 1}
		}
		return []float64{0, 0}
	}
	in := samples(40, high)
	for _, tt := range []struct {
		name      string
		threshold float64 // of the stream after the reload
		kept      bool
	}{
		{"same settings", 0, true},
		{"threshold changed", 1.5, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p1, buf1 := beforeAdopt(t, in[:20])
			buf2 := &memBuffer{}
			a1 := buf1.alerts(t)
			if len(a1) == 0 || a1[0].State != "open" || a1[len(a1)-1].State == "closed" {
				t.Fatalf("before the reload: alerts %+v, want an open episode", a1)
			}
			spec := sensorSpec(&meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1})
			spec.Threshold = tt.threshold
			p2, err := New(Options{Device: "dev-01", Buffer: buf2, Streams: []StreamSpec{spec}})
			if err != nil {
				t.Fatal(err)
			}
			kept := feed(t, p2, p1, in[20:])
			if got := slices.Equal(kept, []string{"pump"}); got != tt.kept {
				t.Fatalf("kept %v, want the stream kept: %v", kept, tt.kept)
			}
			a2 := buf2.alerts(t)
			opens := 0
			for _, a := range a2 {
				if a.State == "open" {
					opens++
				}
			}
			if !tt.kept {
				if opens != 1 {
					t.Fatalf("alerts after the reload %+v: a new build opens its own episode", a2)
				}
				// The old build's episode is closed, once, before the new one opens.
				if c := a2[0]; c.State != "closed" || c.Episode != a1[0].Episode || !strings.Contains(c.Reason, "settings changed") {
					t.Fatalf("first alert after the reload %+v, want episode %s closed", c, a1[0].Episode)
				}
				return
			}
			if opens != 0 {
				t.Fatalf("alerts after the reload %+v: the ongoing anomaly opened a second episode", a2)
			}
			last := a2[len(a2)-1]
			if last.State != "closed" || last.Episode != a1[0].Episode {
				t.Fatalf("after the reload, the last alert %+v, want episode %s closed", last, a1[0].Episode)
			}
			// Windows go on across the reload: windows end at samples 3, 5,
			// ..., 39 as if nothing happened, and the counters carry on.
			st := p2.Stats()
			if st.Inputs != 40 || st.Scores != 19 || st.Streams["pump"].Windows != 19 || st.Alerts != uint64(len(a1)+len(a2)) {
				t.Fatalf("stats after the reload %+v, want 40 inputs, 19 scores and windows, %d alerts", st, len(a1)+len(a2))
			}
		})
	}
}

// TestAdoptKeepsLearningSamples (issue 14, item 8): a stream still
// collecting its first samples keeps them across a reload and learns from
// all of them.
func TestAdoptKeepsLearningSamples(t *testing.T) {
	var got [][]float64
	learner := func(_ context.Context, stream string, chans []string, s [][]float64) (Model, error) {
		got = s
		return &meanModel{id: "learnt@1", length: 2, hop: 1, chans: chans, thr: 10}, nil
	}
	spec := StreamSpec{Name: "pump", Source: "sim", Learn: 50, Detect: detect.DefaultOptions()}
	in := samples(50, func(i int) []float64 { return []float64{float64(i), 1} })
	p1, err := New(Options{Device: "dev-01", Buffer: &memBuffer{}, Learner: learner, Streams: []StreamSpec{spec}})
	if err != nil {
		t.Fatal(err)
	}
	feed(t, p1, nil, in[:30])
	p2, err := New(Options{Device: "dev-01", Buffer: &memBuffer{}, Learner: learner, Streams: []StreamSpec{spec}})
	if err != nil {
		t.Fatal(err)
	}
	kept := p2.Adopt(p1)
	if st := p2.Stats().Streams["pump"]; !slices.Equal(kept, []string{"pump"}) || st.Learned != 30 || st.State != StateLearning {
		t.Fatalf("after the reload: kept %v, %+v; want 30 samples learnt", kept, st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := start(ctx, p2)
	for _, x := range in[30:] {
		if err := p2.Put(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the adopted stream to score", func() bool { return p2.Stats().Streams["pump"].State == StateScoring })
	p2.CloseInput()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 50 || got[0][0] != 0 || got[49][0] != 49 {
		t.Fatalf("the learner got %d samples (first %v), want the 50 from both sides of the reload", len(got), got[0])
	}
}

// TestAdoptClosesTheOldModelsEpisode (issue 18): a model switch (or a
// stream removed) in the middle of an anomaly closes the old model's open
// episode with one "closed" alert that says why, under the old model's id;
// the new model opens and closes its own episode; every episode ends with
// exactly one close and ids are unique.
func TestAdoptClosesTheOldModelsEpisode(t *testing.T) {
	in := bursts(60, []float64{3, 1}, [2]int{10, 40})
	for _, tt := range []struct {
		name   string
		after  []StreamSpec // the streams after the switch
		reason string
	}{
		{"model switched", []StreamSpec{sensorSpec(&meanModel{id: "mean@2", length: 4, hop: 2, chans: chans2, thr: 1})}, "model switched: mean@1 to mean@2"},
		{"stream removed", []StreamSpec{{Name: "other", Source: "sim2", Kind: KindSensor, Model: &meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1}, Detect: detect.DefaultOptions()}}, "stream removed from the config"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p1, buf1 := beforeAdopt(t, in[:20])
			buf2 := &memBuffer{}
			p2, err := New(Options{Device: "dev-01", Buffer: buf2, Streams: tt.after})
			if err != nil {
				t.Fatal(err)
			}
			feed(t, p2, p1, in[20:])
			all := append(buf1.alerts(t), buf2.alerts(t)...)
			ids := map[string]bool{}
			opens, closes := map[string]int{}, map[string]int{}
			var switchClose []record.Alert
			for _, a := range all {
				if ids[a.ID] {
					t.Errorf("alert id %s twice", a.ID)
				}
				ids[a.ID] = true
				switch a.State {
				case "open":
					opens[a.Episode]++
				case "closed":
					closes[a.Episode]++
					if a.Reason != "" {
						switchClose = append(switchClose, a)
					}
				}
			}
			if len(switchClose) != 1 || switchClose[0].Reason != tt.reason || switchClose[0].Model != "mean@1" ||
				switchClose[0].Episode != all[0].Episode || !switchClose[0].TS.Equal(in[19].Time) {
				t.Fatalf("closes with a reason %+v, want one of episode %s at %v: %q", switchClose, all[0].Episode, in[19].Time, tt.reason)
			}
			for ep, n := range opens {
				if n != 1 || closes[ep] != 1 {
					t.Errorf("episode %s: %d opens, %d closes; alerts %+v", ep, n, closes[ep], all)
				}
			}
			wantEpisodes := map[string]int{"model switched": 2, "stream removed": 1}[tt.name]
			if len(opens) != wantEpisodes || len(closes) != wantEpisodes {
				t.Fatalf("%d episodes opened, %d closed, want %d", len(opens), len(closes), wantEpisodes)
			}
			if got := p2.Stats(); got.Alerts != uint64(len(all)) {
				t.Fatalf("%d alerts counted, %d written", got.Alerts, len(all))
			}
		})
	}
}
