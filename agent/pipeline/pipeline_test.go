package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
)

// meanModel scores a window by the mean of its values; channel errors are
// each channel's mean.
type meanModel struct {
	id            string
	length, hop   int
	chans         []string
	thr           float64
	mu            sync.Mutex
	calls, scored int
}

func (m *meanModel) ID() string         { return m.id }
func (m *meanModel) Window() (int, int) { return m.length, m.hop }
func (m *meanModel) Channels() []string { return m.chans }
func (m *meanModel) Threshold() float64 { return m.thr }
func (m *meanModel) Score(_ context.Context, w, scores, errs []float64) error {
	nc := len(m.chans)
	per := m.length * nc
	n := len(w) / per
	if len(scores) != n || len(errs) != n*nc {
		return errors.New("meanModel: bad buffer sizes")
	}
	for i := 0; i < n; i++ {
		var sum float64
		for c := 0; c < nc; c++ {
			errs[i*nc+c] = 0
		}
		for r := 0; r < m.length; r++ {
			for c := 0; c < nc; c++ {
				v := w[i*per+r*nc+c]
				sum += v
				errs[i*nc+c] += v / float64(m.length)
			}
		}
		scores[i] = sum / float64(per)
	}
	m.mu.Lock()
	m.calls++
	m.scored += n
	m.mu.Unlock()
	return nil
}

// memBuffer records appends per lane.
type memBuffer struct{ testkit.Lanes }

func (b *memBuffer) scores(t *testing.T) []record.Score {
	return testkit.Decode[record.Score](t, &b.Lanes, record.LaneScore)
}

func (b *memBuffer) alerts(t *testing.T) []record.Alert {
	return testkit.Decode[record.Alert](t, &b.Lanes, record.LaneAlert)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// run feeds inputs through a pipeline and drains it.
func run(t *testing.T, opts Options, inputs []source.Input) (*Pipeline, *memBuffer) {
	t.Helper()
	buf := &memBuffer{}
	opts.Buffer = buf
	if opts.Device == "" {
		opts.Device = "dev-01"
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, p, nil, inputs)
	return p, buf
}

// start runs p on a goroutine until its input is closed or ctx ends;
// wait blocks until Run has returned and gives its error.
func start(ctx context.Context, p *Pipeline) (wait func() error) {
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() error { return <-done }
}

var chans2 = []string{"a", "b"}

func samples(n int, f func(i int) []float64) []source.Input {
	out := make([]source.Input, n)
	for i := range out {
		out[i] = source.Input{Source: "sim", Time: t0.Add(time.Duration(i) * time.Second), Channels: chans2, Values: f(i)}
	}
	return out
}

// bursts is n samples of zeros but for those in the spans [from, to),
// which are v.
func bursts(n int, v []float64, spans ...[2]int) []source.Input {
	return samples(n, func(i int) []float64 {
		for _, s := range spans {
			if i >= s[0] && i < s[1] {
				return slices.Clone(v)
			}
		}
		return []float64{0, 0}
	})
}

func sensorSpec(m Model) StreamSpec {
	d := detect.DefaultOptions()
	d.K, d.N = 1, 1
	return StreamSpec{Name: "pump", Source: "sim", Kind: KindSensor, Model: m, Detect: d}
}

func TestSensorStreamScoresEveryWindowAndAlertsOncePerEpisode(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1}
	// Values are 0 except samples 10..15 where they are 3 (channel a) and 1 (b).
	in := bursts(30, []float64{3, 1}, [2]int{10, 16})
	p, buf := run(t, Options{Streams: []StreamSpec{sensorSpec(m)}, Shards: 2}, in)

	scores := buf.scores(t)
	// Windows end at samples 3, 5, ..., 29: 14 windows.
	if len(scores) != 14 {
		t.Fatalf("%d scores, want 14", len(scores))
	}
	for i, s := range scores {
		if want := t0.Add(time.Duration(3+2*i) * time.Second); !s.TS.Equal(want) {
			t.Fatalf("score %d ends at %v, want %v", i, s.TS, want)
		}
		if s.Model != "mean@1" || s.Stream != "pump" || s.Threshold != 1 || s.ID == "" {
			t.Fatalf("score %d = %+v", i, s)
		}
	}
	alerts := buf.alerts(t)
	if len(alerts) < 2 {
		t.Fatalf("%d alerts, want an open and a close: %+v", len(alerts), alerts)
	}
	first, last := alerts[0], alerts[len(alerts)-1]
	if first.State != "open" || last.State != "closed" || first.Episode != last.Episode {
		t.Fatalf("alerts %+v: want one episode from open to closed", alerts)
	}
	if first.TopFeatures[0].Name != "a" {
		t.Fatalf("top feature %q, want a (the channel that moved most)", first.TopFeatures[0].Name)
	}
	if math.Abs(first.TopFeatures[0].Share+first.TopFeatures[1].Share-1) > 1e-9 {
		t.Fatalf("shares %+v do not add up to 1", first.TopFeatures)
	}
	st := p.Stats()
	if st.Inputs != 30 || st.Scores != 14 || st.Streams["pump"].State != StateScoring {
		t.Fatalf("stats %+v", st)
	}
}

func TestIDsAreStableAcrossRuns(t *testing.T) {
	mk := func() []string {
		m := &meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1}
		_, buf := run(t, Options{Streams: []StreamSpec{sensorSpec(m)}}, samples(20, func(i int) []float64 { return []float64{float64(i % 3), 0} }))
		var ids []string
		for _, s := range buf.scores(t) {
			ids = append(ids, s.ID)
		}
		for _, a := range buf.alerts(t) {
			ids = append(ids, a.ID)
		}
		return ids
	}
	a, b := mk(), mk()
	if !slices.Equal(a, b) || len(a) == 0 {
		t.Fatalf("ids differ between two runs over the same input:\n%v\n%v", a, b)
	}
	seen := map[string]bool{}
	for _, id := range a {
		if seen[id] {
			t.Fatalf("id %s used twice", id)
		}
		seen[id] = true
	}
}

func TestBadInputIsDroppedAndCounted(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 2, hop: 1, chans: chans2, thr: 1}
	ts := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	in := []source.Input{
		{Source: "sim", Time: ts(1), Channels: chans2, Values: []float64{0, 0}},
		{Source: "sim", Time: ts(2), Channels: chans2, Values: []float64{math.NaN(), 0}},  // non_finite
		{Source: "sim", Time: ts(3), Channels: chans2, Values: []float64{math.Inf(1), 0}}, // non_finite
		{Source: "sim", Time: ts(4), Channels: []string{"a"}, Values: []float64{1}},       // missing_field
		{Source: "sim", Stream: "nope", Time: ts(5), Values: []float64{1, 1}},             // unknown_stream
		{Source: "other", Time: ts(6), Values: []float64{1, 1}},                           // unknown_stream (no route)
		{Source: "sim", Time: ts(7), Channels: chans2, Values: []float64{0, 0}},
		{Source: "sim", Time: ts(6), Channels: chans2, Values: []float64{0, 0}}, // out_of_order
		{Source: "sim", Time: ts(7), Channels: chans2, Values: []float64{0, 0}}, // duplicate
		{Source: "sim", Time: ts(8), Channels: []string{"b", "a"}, Values: []float64{0, 0}},
	}
	p, buf := run(t, Options{Streams: []StreamSpec{sensorSpec(m)}}, in)
	got := map[string]uint64{}
	for _, d := range p.Stats().Drops {
		got[d.Reason] += d.Count
	}
	want := map[string]uint64{"non_finite": 2, "missing_field": 1, "unknown_stream": 2, "out_of_order": 1, "duplicate": 1}
	for r, n := range want {
		if got[r] != n {
			t.Errorf("drops[%s] = %d, want %d (all: %v)", r, got[r], n, got)
		}
	}
	// Samples 1, 7, 8 were accepted: windows end at 7 and 8.
	if n := len(buf.scores(t)); n != 2 {
		t.Fatalf("%d scores, want 2", n)
	}
}

func TestChannelsAreMappedByName(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 1, hop: 1, chans: []string{"b", "a"}, thr: 100}
	d := detect.DefaultOptions()
	spec := StreamSpec{Name: "pump", Source: "sim", Model: m, Detect: d, TopFeatures: 2}
	spec.Detect.K, spec.Detect.N = 1, 1
	spec.Threshold = 1
	in := []source.Input{{Source: "sim", Time: t0, Channels: chans2, Values: []float64{5, 1}}}
	_, buf := run(t, Options{Streams: []StreamSpec{spec}}, in)
	al := buf.alerts(t)
	if len(al) != 1 || al[0].TopFeatures[0].Name != "a" || al[0].Threshold != 1 {
		t.Fatalf("alerts %+v: want one naming a first, with the stream's threshold override", al)
	}
}

// countFeatures counts a key's events and failures.
type countFeatures struct{ n, fail float64 }

func (c *countFeatures) Add(e *source.Event, dst []float64) bool {
	c.n++
	if e.Name == "form_error" {
		c.fail++
	}
	dst[0], dst[1] = c.n, c.fail
	return true
}

func TestBehaviourStreamKeysByUser(t *testing.T) {
	m := &meanModel{id: "kiosk@1", length: 1, hop: 1, chans: []string{"events", "failures"}, thr: 2}
	d := detect.DefaultOptions()
	d.K, d.N = 1, 1
	spec := StreamSpec{Name: "kiosk", Source: "http", Kind: KindBehaviour, Key: "user_id", Model: m, Detect: d,
		Features: func() Featurizer { return &countFeatures{} }}
	var in []source.Input
	for i := 0; i < 3; i++ {
		for _, u := range []string{"user-1", "user-2"} {
			name := "page_view"
			if u == "user-2" {
				name = "form_error"
			}
			in = append(in, source.Input{Source: "http", Time: t0.Add(time.Duration(i) * time.Second),
				Event: &source.Event{ID: u + name, Name: name, UserID: u}})
		}
	}
	in = append(in, source.Input{Source: "http", Time: t0, Event: &source.Event{Name: "x"}}) // no user: missing_field
	p, buf := run(t, Options{Streams: []StreamSpec{spec}}, in)
	if n := len(buf.scores(t)); n != 6 {
		t.Fatalf("%d scores, want one per event (6)", n)
	}
	al := buf.alerts(t)
	if len(al) == 0 || al[0].State != "open" {
		t.Fatalf("alerts %+v: want an episode opened for user-2", al)
	}
	for _, a := range al {
		if a.Key != "user-2" || a.Kind != KindBehaviour || a.Episode != al[0].Episode {
			t.Fatalf("alert %+v: want only user-2's one episode", a)
		}
	}
	if p.Stats().Streams["kiosk"].Keys != 2 {
		t.Fatalf("keys = %d, want 2", p.Stats().Streams["kiosk"].Keys)
	}
}

func TestLearningStreamTrainsThenScores(t *testing.T) {
	var gotSamples int
	learner := func(_ context.Context, stream string, chans []string, s [][]float64) (Model, error) {
		gotSamples = len(s)
		return &meanModel{id: "learnt@1", length: 2, hop: 1, chans: chans, thr: 10}, nil
	}
	spec := StreamSpec{Name: "pump", Source: "sim", Learn: 10, Detect: detect.DefaultOptions()}
	buf := &memBuffer{}
	p, err := New(Options{Device: "dev-01", Buffer: buf, Learner: learner, Streams: []StreamSpec{spec}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := start(ctx, p)
	in := samples(10, func(int) []float64 { return []float64{1, 1} })
	for _, x := range in {
		if err := p.Put(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the condition", func() bool { return p.Stats().Streams["pump"].State == StateScoring })
	for i := 10; i < 15; i++ {
		x := samples(1, func(int) []float64 { return []float64{1, 1} })[0]
		x.Time = t0.Add(time.Duration(i) * time.Second)
		if err := p.Put(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	p.CloseInput()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if gotSamples != 10 {
		t.Fatalf("learner got %d samples, want 10", gotSamples)
	}
	// The first window after learning reaches back into the baseline: each
	// of the 5 samples ends one.
	if n := len(buf.scores(t)); n != 5 {
		t.Fatalf("%d scores after learning, want 5 (5 samples, window 2, hop 1)", n)
	}
}

func TestSetThreshold(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 1, hop: 1, chans: chans2, thr: 1}
	buf := &memBuffer{}
	p, _ := New(Options{Device: "dev-01", Buffer: buf, Streams: []StreamSpec{sensorSpec(m)}})
	ctx := context.Background()
	wait := start(ctx, p)
	if err := p.SetThreshold(ctx, "pump", 50); err != nil {
		t.Fatal(err)
	}
	if err := p.SetThreshold(ctx, "nope", 5); err == nil {
		t.Fatal("SetThreshold on an unknown stream: no error")
	}
	if err := p.SetThreshold(ctx, "pump", -1); err == nil {
		t.Fatal("SetThreshold(-1): no error")
	}
	// Bounded by 100× the calibrated threshold (1), either way: 1e308
	// would switch detection off, 1e-9 would make every window an alert.
	for _, thr := range []float64{1e308, 101, 0.0099, 1e-9} {
		if err := p.SetThreshold(ctx, "pump", thr); err == nil || !strings.Contains(err.Error(), "out of bounds 0.01..100") {
			t.Errorf("SetThreshold(%g) = %v, want out of bounds 0.01..100", thr, err)
		}
	}
	for _, x := range samples(3, func(int) []float64 { return []float64{10, 10} }) {
		p.Put(ctx, x)
	}
	p.CloseInput()
	wait()
	if al := buf.alerts(t); len(al) != 0 {
		t.Fatalf("alerts above the raised threshold: %+v", al)
	}
	if th := p.Stats().Streams["pump"].Threshold; th != 50 {
		t.Fatalf("threshold %v, want 50", th)
	}
}

// TestTryPutOnAFullQueue: TryPut refuses an input its stream's queue has no
// room for and leaves the count to the source (which counts it as
// queue_full through the pipeline's Drop: counting it here too counted
// every drop twice).
func TestTryPutOnAFullQueue(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 1, hop: 1, chans: chans2, thr: 1}
	p, _ := New(Options{Device: "dev-01", Buffer: &memBuffer{}, Queue: 1, Streams: []StreamSpec{sensorSpec(m)}})
	in := samples(1, func(int) []float64 { return []float64{0, 0} })[0]
	if !p.TryPut(in) {
		t.Fatal("first TryPut refused")
	}
	if p.TryPut(in) {
		t.Fatal("TryPut on a full queue accepted")
	}
	if d := p.Stats().Drops; len(d) != 0 {
		t.Fatalf("drops %+v: the source counts a refused input, not TryPut", d)
	}
	if st := p.Stats(); st.QueueLen != 1 || st.QueueCap != 1 || st.Inputs != 2 {
		t.Fatalf("queue %d/%d, inputs %d: want 1/1 and 2", st.QueueLen, st.QueueCap, st.Inputs)
	}
}

// TestTryPutToTwoStreamsWithOneFull: an input for two streams, one of whose
// queues is full, reaches the other; the pipeline counts the one drop and
// TryPut reports the input taken, so an HTTP client is not told to resend
// what one stream already has.
func TestTryPutToTwoStreamsWithOneFull(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 1, hop: 1, chans: chans2, thr: 1}
	a, b := sensorSpec(m), sensorSpec(m)
	a.Name, b.Name = "a", "b"
	p, err := New(Options{Device: "dev-01", Buffer: &memBuffer{}, Queue: 1, Shards: 2, Streams: []StreamSpec{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	if p.streams["a"].shard == p.streams["b"].shard {
		t.Fatal("both streams hash to one shard: pick other names")
	}
	in := samples(1, func(int) []float64 { return []float64{0, 0} })[0]
	in.Stream = ""
	full := in
	full.Stream = "a"
	if !p.TryPut(full) {
		t.Fatal("filling a's queue refused")
	}
	if !p.TryPut(in) {
		t.Fatal("an input that reached b was reported refused")
	}
	if d := p.Stats().Drops; len(d) != 1 || d[0].Reason != string(source.DropQueueFull) || d[0].Count != 1 {
		t.Fatalf("drops %+v, want one queue_full (for a)", d)
	}
	if n := len(p.streams["b"].shard.in); n != 1 {
		t.Fatalf("b's queue holds %d, want 1", n)
	}
}

func TestNewRejectsBadSpecs(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 1, hop: 1, chans: chans2, thr: 1}
	for name, o := range map[string]Options{
		"no device":          {Buffer: &memBuffer{}},
		"no buffer":          {Device: "d"},
		"no model, no learn": {Device: "d", Buffer: &memBuffer{}, Streams: []StreamSpec{{Name: "x"}}},
		"duplicate":          {Device: "d", Buffer: &memBuffer{}, Streams: []StreamSpec{sensorSpec(m), sensorSpec(m)}},
		"learn, no learner":  {Device: "d", Buffer: &memBuffer{}, Streams: []StreamSpec{{Name: "x", Learn: 5}}},
		"behaviour, no features": {Device: "d", Buffer: &memBuffer{},
			Streams: []StreamSpec{{Name: "x", Kind: KindBehaviour, Model: m}}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func BenchmarkPipelineSensor(b *testing.B) {
	m := &meanModel{id: "mean@1", length: 60, hop: 10, chans: []string{"1", "2", "3", "4", "5", "6", "7", "8"}, thr: 1e9}
	d := detect.DefaultOptions()
	p, _ := New(Options{Device: "dev-01", Buffer: &memBuffer{}, Streams: []StreamSpec{{Name: "pump", Source: "sim", Model: m, Detect: d}}})
	ctx := context.Background()
	wait := start(ctx, p)
	vals := []float64{1, 2, 3, 4, 5, 6, 7, 8}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		p.Put(ctx, source.Input{Source: "sim", Time: t0.Add(time.Duration(i) * time.Millisecond), Channels: m.chans, Values: vals})
		i++
	}
	p.CloseInput()
	wait()
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "samples/s")
}

// TestClockStepBackIsFollowed: after the samples' clock steps back by an
// hour, a run of late samples in increasing order is taken as the new
// timeline, and scoring resumes; stray late samples are still dropped.
func TestClockStepBackIsFollowed(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 2, hop: 1, chans: chans2, thr: 100}
	spec := sensorSpec(m)
	spec.MaxLateness = 5 * time.Second
	ts := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var in []source.Input
	sample := func(at time.Time) {
		in = append(in, source.Input{Source: "sim", Time: at, Channels: chans2, Values: []float64{0, 0}})
	}
	for s := range 20 { // windows end at 1..19: 19 scores
		sample(ts(s))
	}
	sample(ts(-100)) // a stray late sample: dropped
	sample(ts(20))   // 20 scores
	back := ts(-3600)
	n := clockStepSamples(m.length)
	for i := range n + 5 { // the first n-1 are late; the n-th is the new timeline
		sample(back.Add(time.Duration(i) * time.Second))
	}
	p, buf := run(t, Options{Streams: []StreamSpec{spec}}, in)
	checkClockStepDrops(t, p, n)
	// After the step: the n-th sample starts a new window; the 5 after it
	// end 5 windows.
	if s := len(buf.scores(t)); s != 20+5 {
		t.Fatalf("%d scores, want %d", s, 25)
	}
}

// TestBehaviourKeyClockStepBackIsFollowed: a behaviour key follows its own
// clock stepping back as a sensor stream does, and starts its features
// afresh on the new timeline; the other keys are untouched.
func TestBehaviourKeyClockStepBackIsFollowed(t *testing.T) {
	m := &meanModel{id: "kiosk@1", length: 1, hop: 1, chans: []string{"events", "failures"}, thr: 1000}
	d := detect.DefaultOptions()
	d.K, d.N = 1, 1
	spec := StreamSpec{Name: "kiosk", Source: "http", Kind: KindBehaviour, Key: "user_id", Model: m, Detect: d,
		MaxLateness: 5 * time.Second, Features: func() Featurizer { return &countFeatures{} }}
	ts := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var in []source.Input
	event := func(user string, at time.Time) {
		in = append(in, source.Input{Source: "http", Time: at,
			Event: &source.Event{ID: fmt.Sprint(user, len(in)), Name: "page_view", UserID: user}})
	}
	for s := range 5 { // 5 scores for each user, user-1's event count 1..5
		event("user-1", ts(s))
		event("user-2", ts(s))
	}
	event("user-1", ts(-100)) // a stray late event: dropped
	event("user-1", ts(4))    // same time as the newest: taken (6th)
	n := clockStepSamples(m.length)
	back := ts(-3600)
	for i := range n + 2 { // the first n-1 are late; the n-th starts the new timeline
		event("user-1", back.Add(time.Duration(i)*time.Second))
	}
	event("user-2", ts(5)) // user-2 is still on the old timeline
	p, buf := run(t, Options{Streams: []StreamSpec{spec}}, in)
	checkClockStepDrops(t, p, n)
	var u1, u2 []float64
	for _, s := range buf.scores(t) {
		switch s.Key {
		case "user-1":
			u1 = append(u1, s.Score*2) // the mean of (events, 0 failures)
		case "user-2":
			u2 = append(u2, s.Score*2)
		}
	}
	// user-1: 6 events on the old timeline, then the new one counts afresh.
	if want := []float64{1, 2, 3, 4, 5, 6, 1, 2, 3}; !slices.Equal(u1, want) {
		t.Errorf("user-1's event counts %v, want %v", u1, want)
	}
	if want := []float64{1, 2, 3, 4, 5, 6}; !slices.Equal(u2, want) {
		t.Errorf("user-2's event counts %v, want %v", u2, want)
	}
}

// checkClockStepDrops checks that a clock step of need late inputs, after
// one stray late input, was counted as need late drops and one clock_step.
func checkClockStepDrops(t *testing.T, p *Pipeline, need int) {
	t.Helper()
	got := map[string]uint64{}
	for _, d := range p.Stats().Drops {
		got[d.Reason] += d.Count
	}
	if got["late"] != uint64(1+need-1) || got[string(DropClockStep)] != 1 {
		t.Errorf("drops %v: want %d late and 1 clock_step", got, need)
	}
}

// TestEpisodeCloseAfterCountsFlips: two bursts with two normal windows
// between them are two episodes when an episode closes at the first normal
// window, and one episode with a suppressed flip when it closes only after
// 10 s of normal windows; Stats counts both.
func TestEpisodeCloseAfterCountsFlips(t *testing.T) {
	in := func() []source.Input {
		return bursts(50, []float64{3, 2}, [2]int{10, 16}, [2]int{22, 26})
	}
	for _, tt := range []struct {
		closeAfter             time.Duration
		opens, closes, flips   uint64
		episodesInAlertRecords int
	}{
		{closeAfter: 0, opens: 2, closes: 2, flips: 0, episodesInAlertRecords: 2},
		{closeAfter: 10 * time.Second, opens: 1, closes: 1, flips: 1, episodesInAlertRecords: 1},
	} {
		m := &meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1}
		spec := sensorSpec(m)
		spec.Detect.CloseAfter = tt.closeAfter
		p, buf := run(t, Options{Streams: []StreamSpec{spec}, Shards: 1}, in())
		eps := map[string]bool{}
		for _, a := range buf.alerts(t) {
			eps[a.Episode] = true
		}
		ss := p.Stats().Streams["pump"]
		if ss.Episodes["open"] != tt.opens || ss.Episodes["closed"] != tt.closes || ss.Episodes["reopened"] != 0 ||
			ss.SuppressedFlips != tt.flips || len(eps) != tt.episodesInAlertRecords {
			t.Errorf("close_after %v: episodes %v, flips %d, %d episode ids; want %d opens, %d closes, %d flips, %d ids",
				tt.closeAfter, ss.Episodes, ss.SuppressedFlips, len(eps), tt.opens, tt.closes, tt.flips, tt.episodesInAlertRecords)
		}
	}
}

type confModel struct{ *meanModel }

func (c confModel) Confidence(score float64) (float64, bool) { return 1 - 1/(1+score), true }

// TestAlertsCarryConfidence: a model that knows its normal-score
// distribution gives each alert its confidence at the alert's score.
func TestAlertsCarryConfidence(t *testing.T) {
	m := confModel{&meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1}}
	in := bursts(30, []float64{3, 2}, [2]int{10, 16})
	_, buf := run(t, Options{Streams: []StreamSpec{sensorSpec(m)}, Shards: 1}, in)
	alerts := buf.alerts(t)
	if len(alerts) == 0 {
		t.Fatal("no alerts")
	}
	for _, a := range alerts {
		if a.Confidence == nil || math.Abs(*a.Confidence-(1-1/(1+a.Score))) > 1e-12 {
			t.Fatalf("alert %+v: confidence %v, want 1 − 1/(1+score)", a, a.Confidence)
		}
	}
	m2 := &meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1}
	_, buf = run(t, Options{Streams: []StreamSpec{sensorSpec(m2)}, Shards: 1}, in)
	for _, a := range buf.alerts(t) {
		if a.Confidence != nil {
			t.Fatalf("a model without a distribution gave confidence %v", *a.Confidence)
		}
	}
}
