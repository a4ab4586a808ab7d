package pipeline

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/source"
)

// stuckModel is a meanModel whose manifest records its training data's
// longest runs of one value.
type stuckModel struct {
	*meanModel
	runs []int
}

func (m *stuckModel) MaxRuns() []int { return m.runs }

// noisy gives channel a a value that never repeats and channel b one that
// freezes at 0.5 in the samples [from, to).
func noisy(n, from, to int) func(i int) []float64 {
	return func(i int) []float64 {
		b := 0.01 * float64(i%7)
		if i >= from && i < to {
			b = 0.5
		}
		return []float64{0.001 * float64(i%11), b}
	}
}

func TestAStuckChannelOpensAnEpisodeThatNamesIt(t *testing.T) {
	// limits: 40 samples for a, 10 for b (at least the window, 4)
	m := &stuckModel{&meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1}, []int{4, 1}}
	spec := sensorSpec(m)
	spec.Detect = detect.DefaultOptions() // 2 of 3, close after 5 s
	spec.StuckFactor = 10
	in := samples(80, noisy(80, 30, 50))
	p, buf := run(t, Options{Streams: []StreamSpec{spec}}, in)

	var stuck []time.Time
	for _, s := range buf.scores(t) {
		if s.Score >= 1 {
			t.Fatalf("score %v: the model alone sees nothing here", s.Score)
		}
		if s.Stuck != "" {
			if s.Stuck != "b" {
				t.Fatalf("score %+v: stuck %q, want b", s, s.Stuck)
			}
			stuck = append(stuck, s.TS)
		}
	}
	// b reads 0.5 from sample 30: its run reaches 10 at sample 39, and
	// lasts to sample 49. Windows end on odd samples.
	if len(stuck) != 6 || !stuck[0].Equal(t0.Add(39*time.Second)) || !stuck[5].Equal(t0.Add(49*time.Second)) {
		t.Fatalf("stuck windows end at %v, want 39 s to 49 s", stuck)
	}
	alerts := buf.alerts(t)
	if len(alerts) != 2 || alerts[0].State != "open" || alerts[1].State != "closed" || alerts[0].Episode != alerts[1].Episode {
		t.Fatalf("alerts %+v, want one episode, opened and closed", alerts)
	}
	open := alerts[0]
	if !open.TS.Equal(t0.Add(41*time.Second)) || open.Severity != "warning" {
		t.Fatalf("open %+v: want a warning at the second stuck window (41 s)", open)
	}
	if len(open.TopFeatures) != 1 || open.TopFeatures[0].Name != "b" || open.TopFeatures[0].Share != 1 {
		t.Fatalf("open names %+v, want b alone", open.TopFeatures)
	}
	if !strings.Contains(open.Reason, "sensor stuck: b has read 0.5 for 12 samples in a row") {
		t.Fatalf("open reason %q", open.Reason)
	}
	if got := p.Stats().Streams["pump"].StuckWindows; got != 6 {
		t.Fatalf("stuck windows counted %d, want 6", got)
	}
}

func TestNoStuckCheckWithoutLimits(t *testing.T) {
	for _, c := range []struct {
		name   string
		runs   []int
		factor int
	}{{"no runs", nil, 10}, {"wrong length", []int{1}, 10}, {"factor 0", []int{1, 1}, 0}} {
		t.Run(c.name, func(t *testing.T) {
			m := &stuckModel{&meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1}, c.runs}
			spec := sensorSpec(m)
			spec.StuckFactor = c.factor
			_, buf := run(t, Options{Streams: []StreamSpec{spec}}, samples(80, noisy(80, 10, 80)))
			for _, s := range buf.scores(t) {
				if s.Stuck != "" {
					t.Fatalf("score %+v marked stuck without usable limits", s)
				}
			}
			if a := buf.alerts(t); len(a) != 0 {
				t.Fatalf("alerts %+v", a)
			}
		})
	}
}

// shiftModel is a meanModel whose manifest records the largest level
// shifts of its training data.
type shiftModel struct {
	*meanModel
	recent     int
	floor, max []float64
}

func (m *shiftModel) LevelShift() (int, []float64, []float64) { return m.recent, m.floor, m.max }

func TestALevelShiftOpensAnEpisodeThatNamesIt(t *testing.T) {
	// windows of 12, the last 2 samples against the 10 before; b's
	// largest shift in training was 2 (a limit of 3 at factor 1.5)
	m := &shiftModel{&meanModel{id: "mean@1", length: 12, hop: 1, chans: chans2, thr: 1}, 2, []float64{0.01, 0.01}, []float64{0, 2}}
	spec := sensorSpec(m)
	spec.Detect = detect.DefaultOptions()
	spec.ShiftFactor = 1.5
	// b alternates 0 and 0.02 (std 0.01), then steps to 0.1 from sample
	// 40: the mean model scores it far below its threshold of 1
	in := samples(60, func(i int) []float64 {
		b := 0.02 * float64(i%2)
		if i >= 40 {
			b = 0.1
		}
		return []float64{0.5, b}
	})
	p, buf := run(t, Options{Streams: []StreamSpec{spec}}, in)
	var shifted []int
	for _, s := range buf.scores(t) {
		if s.Shifted != "" {
			if s.Shifted != "b" {
				t.Fatalf("score %+v: shifted %q, want b (a never moved in training)", s, s.Shifted)
			}
			shifted = append(shifted, int(s.TS.Sub(t0)/time.Second))
		}
	}
	// sample 40: (0.1 − 0.01)/0.01 = 9 against the limit 3, and so on
	// while the step is in the last 2 samples and the base still
	// alternates: windows ending at 40 .. 47
	if len(shifted) == 0 || shifted[0] != 40 {
		t.Fatalf("shifted windows end at %v s, want from 40 s on", shifted)
	}
	alerts := buf.alerts(t)
	if len(alerts) == 0 || alerts[0].State != "open" || !alerts[0].TS.Equal(t0.Add(41*time.Second)) {
		t.Fatalf("alerts %+v, want an open at 41 s", alerts)
	}
	if a := alerts[0]; len(a.TopFeatures) != 1 || a.TopFeatures[0].Name != "b" ||
		!strings.HasPrefix(a.Reason, "level shift: b moved +9 standard deviations over its last 2 samples") {
		t.Fatalf("open %+v: want b named, with the reason", a)
	}
	if got := p.Stats().Streams["pump"].ShiftWindows; got != uint64(len(shifted)) {
		t.Fatalf("shift windows counted %d, want %d", got, len(shifted))
	}

	// factor 0 turns the check off
	spec.ShiftFactor = 0
	if _, buf := run(t, Options{Streams: []StreamSpec{spec}}, in); len(buf.alerts(t)) != 0 {
		t.Fatalf("alerts %+v with the check off", buf.alerts(t))
	}
}

// checksModel has both checks' records: runs of 1 and shifts that the
// benchmark's data never reaches.
type checksModel struct {
	*meanModel
}

func (m *checksModel) MaxRuns() []int { return slices.Repeat([]int{1}, len(m.chans)) }
func (m *checksModel) LevelShift() (int, []float64, []float64) {
	return 10, slices.Repeat([]float64{0.01}, len(m.chans)), slices.Repeat([]float64{1e9}, len(m.chans))
}

// BenchmarkPipelineSensorWithChecks is BenchmarkPipelineSensor with the
// stuck-sensor and level-shift checks on (windows of 60 × 8, hop 10):
// their cost per sample.
func BenchmarkPipelineSensorWithChecks(b *testing.B) {
	m := &checksModel{&meanModel{id: "mean@1", length: 60, hop: 10, chans: []string{"1", "2", "3", "4", "5", "6", "7", "8"}, thr: 1e9}}
	spec := StreamSpec{Name: "pump", Source: "sim", Model: m, Detect: detect.DefaultOptions(), StuckFactor: 10, ShiftFactor: 1.8}
	p, _ := New(Options{Device: "dev-01", Buffer: &memBuffer{}, Streams: []StreamSpec{spec}})
	ctx := context.Background()
	wait := start(ctx, p)
	// 13 rows in turn, each channel's value differing from one row to the
	// next (the pipeline keeps an input's values until it is scored)
	rows := make([][]float64, 13)
	for r := range rows {
		rows[r] = make([]float64, 8)
		for c := range rows[r] {
			rows[r][c] = float64((r*7+c)%13) * 0.1
		}
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		p.Put(ctx, source.Input{Source: "sim", Time: t0.Add(time.Duration(i) * time.Millisecond), Channels: m.chans, Values: rows[i%len(rows)]})
		i++
	}
	p.CloseInput()
	wait()
	if st := p.Stats().Streams["pump"]; st.StuckWindows+st.ShiftWindows != 0 {
		b.Fatalf("the checks fired: %+v", st)
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "samples/s")
}
