package pipeline

import (
	"context"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"slices"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
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
			buf1, buf2 := &memBuffer{}, &memBuffer{}
			p1, err := New(Options{Device: "dev-01", Buffer: buf1, Streams: []StreamSpec{sensorSpec(&meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1})}})
			if err != nil {
				t.Fatal(err)
			}
			feed(t, p1, nil, in[:20])
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
