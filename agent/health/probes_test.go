package health

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/buffer"
)

// zeroModel scores every window 0.
type zeroModel struct{}

func (zeroModel) ID() string         { return "zero@1" }
func (zeroModel) Window() (int, int) { return 2, 1 }
func (zeroModel) Channels() []string { return []string{"a"} }
func (zeroModel) Threshold() float64 { return 1 }
func (zeroModel) Score(_ context.Context, _, scores, errs []float64) error {
	clear(scores)
	clear(errs)
	return nil
}

// gatedBuffer is an appender whose appends wait while the gate is closed:
// the pipeline's append stage stalls.
type gatedBuffer struct {
	mu      sync.Mutex
	open    chan struct{}
	n       atomic.Int64
	waiting atomic.Int64 // appends held at the gate
}

func newGatedBuffer() *gatedBuffer {
	b := &gatedBuffer{open: make(chan struct{})}
	close(b.open)
	return b
}

func (b *gatedBuffer) gate() chan struct{} { b.mu.Lock(); defer b.mu.Unlock(); return b.open }
func (b *gatedBuffer) close()              { b.mu.Lock(); b.open = make(chan struct{}); b.mu.Unlock() }
func (b *gatedBuffer) release()            { close(b.gate()) }
func (b *gatedBuffer) Append(ctx context.Context, _ string, data ...[]byte) ([]uint64, error) {
	g := b.gate()
	select {
	case <-g:
	default:
		b.waiting.Add(1)
		<-g
		b.waiting.Add(-1)
	}
	b.n.Add(int64(len(data)))
	return make([]uint64, len(data)), nil
}

type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWatchdogStopsPingingWhileTheAppendStageIsStalled drives a real
// pipeline whose buffer appends block: the watchdog pings while the pipeline
// is idle or busy, stops once a shard has held queued inputs for StallAfter
// without taking one, and pings again once the stage resumes. /livez and
// /readyz say the same with the reason.
func TestWatchdogStopsPingingWhileTheAppendStageIsStalled(t *testing.T) {
	buf := newGatedBuffer()
	d := detect.DefaultOptions()
	p, err := pipeline.New(pipeline.Options{Device: "dev-01", Buffer: buf, Shards: 1, Queue: 16,
		Streams: []pipeline.StreamSpec{{Name: "s", Source: "src", Kind: pipeline.KindSensor, Model: zeroModel{}, Detect: d}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)

	clock := &fakeClock{}
	r := NewReporter(Sources{Pipeline: p.Stats, StallAfter: 10 * time.Second, Now: clock.now})
	var pings atomic.Int64
	w := &Watchdog{Check: func() error {
		for _, c := range r.Live() {
			if !c.OK {
				return errString(c.Reason)
			}
		}
		return nil
	}, Notify: func(s string) {
		if s == "WATCHDOG=1" {
			pings.Add(1)
		}
	}}
	t0 := time.Unix(1700000000, 0)
	in := func(i int) source.Input {
		return source.Input{Source: "src", Time: t0.Add(time.Duration(i) * time.Second), Channels: []string{"a"}, Values: []float64{0}}
	}

	// Idle: pings, however long nothing arrives.
	for range 3 {
		if !w.Beat() {
			t.Fatal("idle pipeline: no ping")
		}
		clock.advance(time.Minute)
	}
	// Working: inputs flow and are appended.
	for i := range 5 {
		p.Put(ctx, in(i))
	}
	// All of them: the shard may take them in more than one batch, and an
	// append still to come when the gate closes below would be the one
	// held there, with in(5) queued behind it too.
	waitUntil(t, "the 4 windows of the 5 inputs appended", func() bool { return p.Stats().Scores == 4 })
	if !w.Beat() {
		t.Fatal("working pipeline: no ping")
	}

	// Stall the append stage, then queue inputs behind it.
	buf.close()
	p.Put(ctx, in(5))
	waitUntil(t, "an append held at the gate", func() bool { return buf.waiting.Load() > 0 })
	for i := 6; i < 12; i++ {
		p.TryPut(in(i))
	}
	if q := p.Stats().Shards[0].Queued; q != 6 {
		t.Fatalf("%d inputs queued behind the stalled append, want 6", q)
	}
	w.Beat() // the stall starts being timed here
	clock.advance(5 * time.Second)
	if !w.Beat() {
		t.Fatal("pings stopped before StallAfter")
	}
	clock.advance(6 * time.Second)
	before := pings.Load()
	for range 3 {
		if w.Beat() {
			t.Fatal("pinged while the append stage is stalled")
		}
		clock.advance(time.Minute)
	}
	if pings.Load() != before {
		t.Fatalf("pings went on: %d → %d", before, pings.Load())
	}
	for _, probe := range []struct {
		path string
		h    func(*httptest.ResponseRecorder)
	}{
		{"/livez", func(rec *httptest.ResponseRecorder) { r.Livez(rec, nil) }},
		{"/readyz", func(rec *httptest.ResponseRecorder) { r.Readyz(rec, nil) }},
	} {
		rec := httptest.NewRecorder()
		probe.h(rec)
		if rec.Code != 503 || !strings.Contains(rec.Body.String(), "has taken none for") {
			t.Fatalf("%s while stalled: %d %s", probe.path, rec.Code, rec.Body)
		}
	}

	// The stage resumes: pings resume.
	buf.release()
	waitUntil(t, "the queue to drain", func() bool { return p.Stats().Shards[0].Queued == 0 })
	if !w.Beat() {
		t.Fatal("no ping after the stage resumed")
	}
	rec := httptest.NewRecorder()
	r.Livez(rec, nil)
	if rec.Code != 200 {
		t.Fatalf("/livez after resuming: %d %s", rec.Code, rec.Body)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestWatchdogRunPingsOnEachTick: Run beats on the ticks it is given.
func TestWatchdogRunPingsOnEachTick(t *testing.T) {
	pings := make(chan string, 3)
	w := &Watchdog{Check: func() error { return nil }, Notify: func(s string) { pings <- s }}
	tick, done := make(chan time.Time), make(chan struct{})
	go w.Run(tick, done)
	for range 3 {
		tick <- time.Time{}
		if s := <-pings; s != "WATCHDOG=1" {
			t.Fatalf("notified %q", s)
		}
	}
	close(done)
}

func TestReadyzGivesAReasonPerCheck(t *testing.T) {
	st := pipeline.Stats{Streams: map[string]pipeline.StreamStats{
		"pump1": {State: pipeline.StateLearning}, "pump2": {State: pipeline.StateScoring}}}
	bs := buffer.Stats{Lanes: map[string]buffer.LaneStats{"alert": {Bytes: 100}}, Bytes: 100}
	broker := Broker{Configured: true, URL: "tcp://127.0.0.1:1883", LastError: "connection refused"}
	fwd := Forwarder{State: "ok"}
	r := NewReporter(Sources{
		Pipeline: func() pipeline.Stats { return st }, Buffer: func() buffer.Stats { return bs },
		Broker:     func() Broker { return broker },
		Forwarders: map[string]func() Forwarder{"amplitude": func() Forwarder { return fwd }, "mqtt": func() Forwarder { return Forwarder{State: "disconnected"} }},
		Lanes:      map[string]Lane{"alert": {MaxBytes: 100, Reject: true}, "score": {}},
		Inputs: func() []Check {
			return []Check{{Name: "source bus", OK: broker.Connected, Reason: "subscribed or not"}}
		},
	})
	get := func() (int, map[string]Check) {
		rec := httptest.NewRecorder()
		r.Readyz(rec, nil)
		var body struct {
			Status string
			Checks []Check
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		m := map[string]Check{}
		for _, c := range body.Checks {
			if c.Reason == "" {
				t.Errorf("check %s has no reason", c.Name)
			}
			m[c.Name] = c
		}
		return rec.Code, m
	}
	code, c := get()
	if code != 503 || c["buffer"].OK || !strings.Contains(c["buffer"].Reason, "lane alert is at its cap") ||
		c["broker"].OK || !strings.Contains(c["broker"].Reason, "connection refused") ||
		!c["models"].OK || c["models"].Reason != "1 stream(s) scoring, 1 learning, 0 training" ||
		!c["forwarder amplitude"].OK || !c["pipeline"].OK || c["source bus"].OK {
		t.Fatalf("readyz: %d %+v", code, c)
	}
	if _, ok := c["forwarder mqtt"]; ok {
		t.Fatal("the publisher is reported twice (broker and forwarder)")
	}
	bs.Lanes["alert"] = buffer.LaneStats{Bytes: 10}
	bs.Bytes = 10
	broker.Connected = true
	if code, c := get(); code != 200 {
		t.Fatalf("readyz with all well: %d %+v", code, c)
	}
	st.AppendError = "score: disk full"
	fwd = Forwarder{State: "failing", LastError: "401 invalid api key"}
	st.Streams["pump1"] = pipeline.StreamStats{State: pipeline.StateFailed, LearnError: "no variance"}
	code, c = get()
	if code != 503 || c["buffer"].OK || c["forwarder amplitude"].OK || c["models"].OK ||
		!strings.Contains(c["models"].Reason, "pump1: learning failed: no variance") {
		t.Fatalf("readyz: %d %+v", code, c)
	}
	// Liveness does not depend on the broker, the buffer or the forwarders.
	rec := httptest.NewRecorder()
	r.Livez(rec, nil)
	if rec.Code != 200 {
		t.Fatalf("livez: %d %s", rec.Code, rec.Body)
	}
}
