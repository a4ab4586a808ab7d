package health

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/pipeline"
)

// DefaultStallAfter is how long a shard may hold queued inputs without
// taking one before the pipeline counts as stalled.
const DefaultStallAfter = 20 * time.Second

// Broker is the state of the connection to the MQTT broker Vigil publishes to.
type Broker struct {
	Configured bool   `json:"configured"` // false: MQTT is off
	URL        string `json:"url,omitempty"`
	Connected  bool   `json:"connected"`
	Connects   uint64 `json:"connects"` // successful connections since the start
	LastError  string `json:"last_error,omitempty"`
}

// Lane is a buffer lane's byte cap and what happens at it.
type Lane struct {
	MaxBytes int64 `json:"max_bytes"` // 0: only the buffer's total cap applies
	Reject   bool  `json:"reject"`    // on_full: reject (new records refused)
}

// Check is one probe check: its name, whether it passes and why.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason"`
}

// Progress judges whether the pipeline makes progress: a shard whose queue
// holds inputs while it takes none for StallAfter is stalled. An idle
// pipeline (empty queues) is making progress: no input is not a fault.
type Progress struct {
	Stats      func() pipeline.Stats
	StallAfter time.Duration
	Now        func() time.Time

	mu    sync.Mutex
	last  []pipeline.ShardStats
	since []time.Time // when each shard last made progress (or was idle)
}

// Check returns nil while the pipeline makes progress, else why not.
func (p *Progress) Check() error {
	if p.Stats == nil {
		return nil
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	after := p.StallAfter
	if after <= 0 {
		after = DefaultStallAfter
	}
	shards := p.Stats().Shards
	t := now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(shards) != len(p.last) { // first call, or a reload built new shards
		p.last = make([]pipeline.ShardStats, len(shards))
		p.since = make([]time.Time, len(shards))
		for i := range p.since {
			p.since[i] = t
		}
	}
	var stalled []string
	for i, s := range shards {
		if s.Queued == 0 || s.Handled != p.last[i].Handled {
			p.since[i] = t
		}
		p.last[i] = s
		if d := t.Sub(p.since[i]); d > after {
			stalled = append(stalled, fmt.Sprintf("shard %d holds %d queued inputs and has taken none for %s", i, s.Queued, d.Round(time.Second)))
		}
	}
	if len(stalled) > 0 {
		return fmt.Errorf("pipeline stalled: %v", stalled)
	}
	return nil
}

// Live is the liveness verdict: the process answers (this code runs) and the
// pipeline makes progress.
func (r *Reporter) Live() []Check {
	c := Check{Name: "pipeline", OK: true, Reason: "every shard is idle or taking inputs from its queue"}
	if err := r.progress.Check(); err != nil {
		c.OK, c.Reason = false, err.Error()
	}
	return []Check{c}
}

// Ready is the readiness verdict: the pipeline makes progress, the buffer
// takes appends, every stream has a model or is learning one, the broker is
// connected (when MQTT is on), every MQTT source is connected, and no
// enabled forwarder is failing.
func (r *Reporter) Ready() []Check {
	checks := r.Live()
	var p pipeline.Stats
	if r.src.Pipeline != nil {
		p = r.src.Pipeline()
	}

	buf := Check{Name: "buffer", OK: true, Reason: "appends succeed and no rejecting lane is at its cap"}
	if p.AppendError != "" {
		buf.OK, buf.Reason = false, "the last append failed: "+p.AppendError
	} else if r.src.Buffer != nil {
		b := r.src.Buffer()
		var full []string
		for name, l := range r.src.Lanes {
			if l.Reject && l.MaxBytes > 0 && b.Lanes[name].Bytes >= l.MaxBytes {
				full = append(full, fmt.Sprintf("lane %s is at its cap of %d bytes and rejects new records", name, l.MaxBytes))
			}
		}
		if r.src.BufferMaxBytes > 0 && b.Bytes >= r.src.BufferMaxBytes {
			for name, l := range r.src.Lanes {
				if l.Reject {
					full = append(full, fmt.Sprintf("the buffer is at its cap of %d bytes and lane %s rejects new records", r.src.BufferMaxBytes, name))
				}
			}
		}
		if len(full) > 0 {
			sort.Strings(full)
			buf.OK, buf.Reason = false, fmt.Sprint(full)
		}
	}
	checks = append(checks, buf)

	models := Check{Name: "models", OK: true}
	var failed []string
	n := map[string]int{}
	for name, st := range p.Streams {
		n[st.State]++
		if st.State == pipeline.StateFailed {
			failed = append(failed, fmt.Sprintf("stream %s: learning failed: %s", name, st.LearnError))
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		models.OK, models.Reason = false, fmt.Sprint(failed)
	} else {
		models.Reason = fmt.Sprintf("%d stream(s) scoring, %d learning, %d training", n[pipeline.StateScoring], n[pipeline.StateLearning], n[pipeline.StateTraining])
	}
	checks = append(checks, models)

	broker := Check{Name: "broker", OK: true, Reason: "MQTT is off"}
	if r.src.Broker != nil {
		b := r.src.Broker()
		switch {
		case !b.Configured:
		case b.Connected:
			broker.Reason = "connected to " + b.URL
		default:
			broker.OK, broker.Reason = false, "not connected to "+b.URL+"; retrying"
			if b.LastError != "" {
				broker.Reason += ": " + b.LastError
			}
		}
	}
	checks = append(checks, broker)

	if r.src.Inputs != nil {
		checks = append(checks, r.src.Inputs()...)
	}

	names := make([]string, 0, len(r.src.Forwarders))
	for name := range r.src.Forwarders {
		if name != "mqtt" { // the broker check covers the publisher
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		f := r.src.Forwarders[name]()
		c := Check{Name: "forwarder " + name, OK: f.State != "failing", Reason: f.State}
		if f.LastError != "" {
			c.Reason += ": " + f.LastError
		}
		checks = append(checks, c)
	}
	return checks
}

// Livez answers GET /livez: 200 while the process and the pipeline make
// progress, else 503; the body gives each check and its reason.
func (r *Reporter) Livez(w http.ResponseWriter, _ *http.Request) {
	writeProbe(w, "live", r.Live())
}

// Readyz answers GET /readyz: 200 when every readiness check passes, else
// 503; the body gives each check and its reason.
func (r *Reporter) Readyz(w http.ResponseWriter, _ *http.Request) {
	writeProbe(w, "ready", r.Ready())
}

func writeProbe(w http.ResponseWriter, what string, checks []Check) {
	status, code := what, http.StatusOK
	for _, c := range checks {
		if !c.OK {
			status, code = "not "+what, http.StatusServiceUnavailable
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"status": status, "checks": checks})
}

// Watchdog pings systemd's watchdog only while Check passes, so that a
// wedged pipeline is restarted by systemd.
type Watchdog struct {
	Check  func() error       // nil: healthy
	Notify func(state string) // sends "WATCHDOG=1" (sd_notify)
	Log    *slog.Logger

	stalled bool
}

// Beat runs one check and pings when it passes; it reports whether it pinged.
func (w *Watchdog) Beat() bool {
	if err := w.Check(); err != nil {
		if !w.stalled && w.Log != nil {
			w.Log.Error("not pinging the systemd watchdog: systemd will restart vigil unless progress resumes", "err", err)
		}
		w.stalled = true
		return false
	}
	if w.stalled && w.Log != nil {
		w.Log.Info("the pipeline makes progress again; pinging the systemd watchdog")
	}
	w.stalled = false
	w.Notify("WATCHDOG=1")
	return true
}

// Run beats on every tick until done is closed.
func (w *Watchdog) Run(tick <-chan time.Time, done <-chan struct{}) {
	for {
		select {
		case <-tick:
			w.Beat()
		case <-done:
			return
		}
	}
}
