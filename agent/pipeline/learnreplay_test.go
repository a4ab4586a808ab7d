package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/source"
)

// learnRun feeds inputs to a pipeline with one stream that learns on its
// first learn samples. The learner, deterministic, waits for release;
// feed(put, release) drives the inputs. It returns the pipeline and the
// buffer after Run returned.
func learnRun(t *testing.T, learn int, opts Options, feed func(put func(source.Input), release func(), p *Pipeline)) (*Pipeline, *memBuffer) {
	t.Helper()
	rel := make(chan struct{})
	learner := func(ctx context.Context, stream string, chans []string, s [][]float64) (Model, error) {
		if err := released(ctx, rel); err != nil {
			return nil, err
		}
		var sum float64
		for _, row := range s {
			for _, v := range row {
				sum += v
			}
		}
		mean := sum / float64(len(s)*len(chans))
		return &meanModel{id: "learnt@1", length: 3, hop: 1, chans: chans, thr: 2 * mean}, nil
	}
	d := detect.DefaultOptions()
	spec := StreamSpec{Name: "pump", Source: "sim", Learn: learn, Detect: d}
	buf := &memBuffer{}
	opts.Device, opts.Buffer, opts.Learner, opts.Streams = "dev-01", buf, learner, []StreamSpec{spec}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := start(ctx, p)
	put := func(in source.Input) {
		if err := p.Put(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	var once bool
	release := func() {
		if !once {
			once = true
			close(rel)
		}
	}
	feed(put, release, p)
	p.CloseInput()
	release()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	return p, buf
}

// TestLearningReplayAtAnySpeedGivesTheSameAlerts: samples that arrive
// while the model trains are held and scored once it is installed, and a
// source that ends while it trains does not strand it; so a replay gives
// the same scores and alerts however fast it runs.
func TestLearningReplayAtAnySpeedGivesTheSameAlerts(t *testing.T) {
	const learn = 50
	in := samples(400, func(i int) []float64 {
		v := 1 + float64(i%7)/10
		if (i >= 120 && i < 130) || (i >= 300 && i < 305) {
			v = 5
		}
		return []float64{v, v / 2}
	})
	waitScoring := func(p *Pipeline) {
		waitFor(t, func() bool { return p.Stats().Streams["pump"].State == StateScoring })
	}
	runs := map[string]func(put func(source.Input), release func(), p *Pipeline){
		// Slow: nothing arrives while the model trains.
		"slow": func(put func(source.Input), release func(), p *Pipeline) {
			for i, x := range in {
				put(x)
				if i == learn-1 {
					release()
					waitScoring(p)
				}
			}
		},
		// As fast as possible: everything arrives, and the source ends,
		// while the model trains.
		"fastest": func(put func(source.Input), release func(), p *Pipeline) {
			for _, x := range in {
				put(x)
			}
		},
		// In between: some arrive while it trains.
		"mid": func(put func(source.Input), release func(), p *Pipeline) {
			for i, x := range in {
				put(x)
				if i == 200 {
					release()
				}
			}
		},
	}
	var want []byte
	var wantScores int
	for _, name := range []string{"slow", "fastest", "mid"} {
		p, buf := learnRun(t, learn, Options{}, runs[name])
		st := p.Stats()
		if s := st.Streams["pump"]; s.State != StateScoring || s.Skipped != 0 || s.Held != 0 || st.DropTotal() != 0 {
			t.Fatalf("%s: stream %+v, drops %+v: want scoring, nothing skipped or dropped", name, s, st.Drops)
		}
		scores := buf.scores(t)
		// Every sample after the baseline ends a window (the first ones
		// reach back into the baseline, as eval scores them).
		if len(scores) != len(in)-learn {
			t.Fatalf("%s: %d scores, want %d", name, len(scores), len(in)-learn)
		}
		got, err := json.Marshal(buf.alerts(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(buf.alerts(t)) < 4 {
			t.Fatalf("%s: alerts %s: want two episodes", name, got)
		}
		if want == nil {
			want, wantScores = got, len(scores)
			continue
		}
		if !slices.Equal(got, want) || len(scores) != wantScores {
			t.Errorf("%s: alerts differ from the slow replay's\n got %s\nwant %s", name, got, want)
		}
	}
}

// TestLearningBacklogIsBoundedAndCounted: beyond LearnBacklog held
// samples, the ones that arrive while the model trains are dropped and
// counted as training_backlog_full.
func TestLearningBacklogIsBoundedAndCounted(t *testing.T) {
	in := samples(80, func(i int) []float64 { return []float64{1, 1} })
	p, buf := learnRun(t, 50, Options{LearnBacklog: 10}, func(put func(source.Input), _ func(), _ *Pipeline) {
		for _, x := range in {
			put(x)
		}
	})
	st := p.Stats()
	var dropped uint64
	for _, d := range st.Drops {
		if d.Reason == string(DropTrainingBacklog) && d.Source == "sim" {
			dropped = d.Count
		}
	}
	if dropped != 20 || st.Streams["pump"].Skipped != 20 {
		t.Fatalf("drops %+v, skipped %d: want 20 training_backlog_full", st.Drops, st.Streams["pump"].Skipped)
	}
	if n := len(buf.scores(t)); n != 10 {
		t.Fatalf("%d scores, want 10 (10 held samples, each ending a window)", n)
	}
}

// TestStopLearningDoesNotWait: StopLearning cancels a training that the
// pipeline would otherwise wait for after CloseInput.
func TestStopLearningDoesNotWait(t *testing.T) {
	learner := func(ctx context.Context, stream string, chans []string, s [][]float64) (Model, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	buf := &memBuffer{}
	p, err := New(Options{Device: "dev-01", Buffer: buf, Learner: learner,
		Streams: []StreamSpec{{Name: "pump", Source: "sim", Learn: 5, Detect: detect.DefaultOptions()}}})
	if err != nil {
		t.Fatal(err)
	}
	wait := start(context.Background(), p)
	for _, x := range samples(8, func(int) []float64 { return []float64{1, 1} }) {
		if err := p.Put(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return p.Stats().Streams["pump"].State == StateTraining })
	p.CloseInput()
	p.StopLearning()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats().Streams["pump"]; s.State != StateFailed {
		t.Fatalf("state %s, want failed (learning stopped)", s.State)
	}
}

// TestLearningReplayOfAFileAtTwoSpeeds replays one generated CSV file
// through the real replay source into a learning stream: at speed 0 with a
// learner that finishes only after the file has ended (every sample after
// the first learn arrives while it trains, and the source ends), and at
// 50× real time with a learner that returns at once. The alerts are the
// same.
func TestLearningReplayOfAFileAtTwoSpeeds(t *testing.T) {
	const learn, rows = 60, 300
	var b strings.Builder
	b.WriteString("datetime;a;b\n")
	for i := range rows {
		v := 1 + float64(i%5)/10
		if (i >= 150 && i < 160) || (i >= 250 && i < 254) {
			v = 6
		}
		fmt.Fprintf(&b, "%s;%g;%g\n", t0.Add(time.Duration(i)*10*time.Millisecond).Format("2006-01-02 15:04:05.000"), v, v/2)
	}
	path := filepath.Join(t.TempDir(), "run.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	replay := func(speed float64, waitForEnd bool) []byte {
		ended := make(chan struct{})
		learner := func(ctx context.Context, _ string, chans []string, s [][]float64) (Model, error) {
			if waitForEnd {
				if err := released(ctx, ended); err != nil {
					return nil, err
				}
			}
			var sum float64
			for _, row := range s {
				sum += row[0] + row[1]
			}
			return &meanModel{id: "learnt@1", length: 4, hop: 1, chans: chans, thr: 2 * sum / float64(2*len(s))}, nil
		}
		buf := &memBuffer{}
		p, err := New(Options{Device: "dev-01", Buffer: buf, Learner: learner,
			Streams: []StreamSpec{{Name: "pump", Source: "file", Learn: learn, Detect: detect.DefaultOptions()}}})
		if err != nil {
			t.Fatal(err)
		}
		o := source.DefaultReplayOptions()
		o.Name, o.Path, o.Speed, o.Counter = "file", path, speed, p
		r, err := source.NewReplay(o, p)
		if err != nil {
			t.Fatal(err)
		}
		wait := start(context.Background(), p)
		if err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		p.CloseInput() // as the daemon does when its sources are done
		close(ended)
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		st := p.Stats()
		if s := st.Streams["pump"]; s.State != StateScoring || st.DropTotal() != 0 || len(buf.scores(t)) != rows-learn {
			t.Fatalf("speed %v: stream %+v, drops %+v, %d scores: want scoring, no drops, %d scores", speed, s, st.Drops, len(buf.scores(t)), rows-learn)
		}
		got, err := json.Marshal(buf.alerts(t))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	fast, slow := replay(0, true), replay(50, false)
	if !slices.Equal(fast, slow) || len(fast) < 100 {
		t.Fatalf("alerts differ\nspeed 0: %s\nspeed 50: %s", fast, slow)
	}
}

// TestHeldSamplesAreScoredWithoutFurtherInput: the windows of the samples
// held while the model trained are scored when it is installed, not when
// the next sample comes.
func TestHeldSamplesAreScoredWithoutFurtherInput(t *testing.T) {
	in := samples(60, func(i int) []float64 { return []float64{1, 1} })
	learnRun(t, 50, Options{}, func(put func(source.Input), release func(), p *Pipeline) {
		for _, x := range in {
			put(x)
		}
		waitFor(t, func() bool { return p.Stats().Streams["pump"].Held == 10 })
		release()
		waitFor(t, func() bool { return p.Stats().Scores == 10 }) // 10 samples, each ending a window
	})
}

// waitFor waits up to 10 s for cond (testkit.WaitFor with this package's
// usual timeout).
// released waits until ch is closed, or returns ctx's error if ctx ends
// first: how the learners here are held back.
func released(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, "the condition", cond)
}
