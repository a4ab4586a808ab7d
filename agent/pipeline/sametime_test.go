package pipeline

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/source"
)

// coarse returns n samples arriving at rate per second in bursts
// (exponential gaps), stamped by a clock of resolution res.
func coarse(n int, rate float64, res time.Duration, seed uint64) []source.Input {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]source.Input, n)
	var at float64 // seconds since t0
	for i := range out {
		at += r.ExpFloat64() / rate
		ts := t0.Add(time.Duration(at * float64(time.Second))).Truncate(res)
		out[i] = source.Input{Source: "sim", Time: ts, Channels: chans2, Values: []float64{r.Float64(), r.Float64()}}
	}
	return out
}

func checkAllKept(t *testing.T, in []source.Input, length, hop int) {
	t.Helper()
	shared := 0
	for i := 1; i < len(in); i++ {
		if in[i].Time.Equal(in[i-1].Time) {
			shared++
		}
	}
	if shared < len(in)/20 {
		t.Fatalf("only %d of %d samples share a time with the one before: the test data is too fine", shared, len(in))
	}
	m := &meanModel{id: "mean@1", length: length, hop: hop, chans: chans2, thr: 1e9}
	p, buf := run(t, Options{Streams: []StreamSpec{sensorSpec(m)}}, in)
	if d := p.Stats().Drops; len(d) > 0 {
		t.Fatalf("drops %+v (%d samples, %d sharing a time): want none", d, len(in), shared)
	}
	scores := buf.scores(t)
	want := (len(in)-length)/hop + 1
	if len(scores) != want {
		t.Fatalf("%d scores, want %d", len(scores), want)
	}
	ids := map[string]bool{}
	for i, s := range scores {
		if ids[s.ID] {
			t.Fatalf("score %d (ts %v): id %s repeats", i, s.TS, s.ID)
		}
		ids[s.ID] = true
		if i > 0 && s.TS.Before(scores[i-1].TS) {
			t.Fatalf("score %d ends at %v, before the one before (%v)", i, s.TS, scores[i-1].TS)
		}
	}
}

// TestSamplesSharingATimeAreKept: 1k msg/s with millisecond timestamps
// and 10 Hz with second timestamps lose nothing, and every window gets its
// own id.
func TestSamplesSharingATimeAreKept(t *testing.T) {
	t.Run("1kHz_ms", func(t *testing.T) { checkAllKept(t, coarse(3000, 1000, time.Millisecond, 1), 10, 5) })
	t.Run("10Hz_s", func(t *testing.T) { checkAllKept(t, coarse(600, 10, time.Second, 2), 4, 1) })
}

// TestDuplicatesAreSamplesThatAreTheSame: a duplicate has the message id of
// one taken, or (without ids) its time and values; a sample that only
// shares a time is kept.
func TestDuplicatesAreSamplesThatAreTheSame(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 1, hop: 1, chans: chans2, thr: 1e9}
	ts := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	in := []source.Input{
		{Source: "sim", Time: ts(1), Channels: chans2, Values: []float64{1, 2}},
		{Source: "sim", Time: ts(1), Channels: chans2, Values: []float64{1, 3}}, // kept: other values
		{Source: "sim", Time: ts(1), Channels: chans2, Values: []float64{1, 2}}, // duplicate
		{Source: "sim", Time: ts(1), Channels: chans2, Values: []float64{1, 3}}, // duplicate
		{Source: "sim", Time: ts(2), Channels: chans2, Values: []float64{1, 2}}, // kept: a new time
		{Source: "sim", Time: ts(3), Channels: chans2, Values: []float64{0, 0}, ID: "m1"},
		{Source: "sim", Time: ts(3), Channels: chans2, Values: []float64{0, 0}, ID: "m2"}, // kept: another message
		{Source: "sim", Time: ts(4), Channels: chans2, Values: []float64{5, 5}, ID: "m1"}, // duplicate: id m1 again
		{Source: "sim", Time: ts(4), Channels: chans2, Values: []float64{5, 5}, ID: "m3"},
	}
	p, buf := run(t, Options{Streams: []StreamSpec{sensorSpec(m)}}, in)
	got := map[string]uint64{}
	for _, d := range p.Stats().Drops {
		got[d.Reason] += d.Count
	}
	if len(got) != 1 || got["duplicate"] != 3 {
		t.Errorf("drops %v, want 3 duplicates", got)
	}
	if n := len(buf.scores(t)); n != 6 {
		t.Fatalf("%d scores, want 6", n)
	}
}

// TestEpisodesWithinOneTimestamp: windows that end at one time alert with
// ids and episodes of their own.
func TestEpisodesWithinOneTimestamp(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 1, hop: 1, chans: chans2, thr: 1}
	spec := sensorSpec(m)
	spec.Detect = detect.DefaultOptions()
	spec.Detect.K, spec.Detect.N, spec.Detect.Cooldown, spec.Detect.CloseAfter = 1, 1, 0, 0
	var in []source.Input
	for i := range 20 {
		v := float64(i%2) * 5 // anomalous, normal, anomalous, ...
		in = append(in, source.Input{Source: "sim", Time: t0.Add(time.Duration(i/10) * time.Second), Channels: chans2, Values: []float64{v, v + float64(i)*1e-6}})
	}
	_, buf := run(t, Options{Streams: []StreamSpec{spec}}, in)
	al := buf.alerts(t)
	if len(al) != 19 {
		t.Fatalf("%d alerts, want 19 (10 open, 9 closed)", len(al))
	}
	ids, eps := map[string]bool{}, map[string]int{}
	for _, a := range al {
		if ids[a.ID] {
			t.Fatalf("alert id %s repeats", a.ID)
		}
		ids[a.ID] = true
		eps[a.Episode]++
	}
	if len(eps) != 10 {
		t.Fatalf("%d episodes, want 10 (open and close each)", len(eps))
	}
}

// TestClockStepBackWithCoarseTimestamps: a 10 Hz sensor that stamps in
// seconds and whose clock steps back an hour is followed (its late
// samples repeat their times, which broke the run of increasing ones),
// while a clock stuck at one past time is not.
func TestClockStepBackWithCoarseTimestamps(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 2, hop: 1, chans: chans2, thr: 100}
	spec := sensorSpec(m)
	spec.MaxLateness = 5 * time.Second
	var in []source.Input
	sample := func(at time.Time, v float64) {
		in = append(in, source.Input{Source: "sim", Time: at, Channels: chans2, Values: []float64{v, float64(len(in))}})
	}
	for i := range 100 {
		sample(t0.Add(time.Duration(i/10)*time.Second), 0)
	}
	stuck := t0.Add(-time.Hour)
	for range 50 {
		sample(stuck, 0) // a stuck clock: late, all of them
	}
	back := t0.Add(-2 * time.Hour)
	for i := range 100 {
		sample(back.Add(time.Duration(i/10)*time.Second), 0)
	}
	p, buf := run(t, Options{Streams: []StreamSpec{spec}}, in)
	got := map[string]uint64{}
	for _, d := range p.Stats().Drops {
		got[d.Reason] += d.Count
	}
	n := clockStepSamples(m.length) // the step is taken at the 11th sample after it: the first with a new second
	if got[string(DropClockStep)] != 1 || got["late"] != uint64(50+n) {
		t.Fatalf("drops %v: want 1 clock_step, %d late", got, 50+n)
	}
	// 99 windows before; after the step, 100-n-1 samples follow the one
	// that starts the new timeline.
	if s := len(buf.scores(t)); s != 99+100-n-1 {
		t.Fatalf("%d scores, want %d", s, 99+100-n-1)
	}
}
