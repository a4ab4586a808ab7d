// Package health gathers what Vigil knows about itself into one snapshot and
// serves it three ways: the MQTT health message (the publisher sends
// Reporter.Snapshot), the local GET /healthz, and Prometheus metrics on
// GET /metrics, computed from the same snapshot so the three never disagree.
package health

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/buffer"
)

// Forwarder is what health needs of a forwarder (or the publisher).
type Forwarder struct {
	State       string  `json:"state"`   // ok | retrying | throttled | failing | disconnected
	Backlog     int     `json:"backlog"` // records waiting for it
	LagS        float64 `json:"lag_s"`   // age of the oldest record waiting for it
	DeadLetters uint64  `json:"dead_letters"`
	Sent        uint64  `json:"sent"`
	LastError   string  `json:"last_error,omitempty"`
	// Broker and Failovers, for the MQTT publisher: the broker in use and
	// the connections made to another broker than the one before.
	Broker    string `json:"broker,omitempty"`
	Failovers uint64 `json:"failovers,omitempty"`
	// CommandsSubscribed and CommandSubscribeFailures, for the MQTT
	// publisher with commands on (nil: off): whether its command
	// subscription is in place, and the attempts the broker refused
	// (SUBACK 0x80, as a cluster electing leaders does) or did not answer.
	CommandsSubscribed       *bool  `json:"commands_subscribed,omitempty"`
	CommandSubscribeFailures uint64 `json:"command_subscribe_failures,omitempty"`
}

// Part is the state of one of the daemon's supervised parts (a source, a
// consumer) as its supervisor sees it.
type Part struct {
	State     string `json:"state"` // running | restarting | stopped | failed
	Restarts  uint64 `json:"restarts"`
	LastError string `json:"last_error,omitempty"`
}

// States of a Part.
const (
	PartRunning    = "running"
	PartRestarting = "restarting"
	PartStopped    = "stopped"
	PartFailed     = "failed"
)

// Sources are the parts a Reporter reads. Nil functions are skipped.
type Sources struct {
	Device   string
	Version  string
	Started  time.Time
	Pipeline func() pipeline.Stats
	Buffer   func() buffer.Stats
	// Forwarders by name ("mqtt", "amplitude", "dify").
	Forwarders map[string]func() Forwarder
	// Parts are the supervised parts by name ("source/pump",
	// "consumer/mqtt"...).
	Parts func() map[string]Part
	// Extra holds any further JSON-able sections, e.g. the publisher's own
	// stats under "mqtt_publisher".
	Extra map[string]func() any
	// Broker is the MQTT connection's state; nil when unknown.
	Broker func() Broker
	// Lanes are the buffer lanes' caps, by lane; BufferMaxBytes the cap on
	// all lanes together.
	Lanes          map[string]Lane
	BufferMaxBytes int64
	// StallAfter is the liveness probe's patience (default DefaultStallAfter).
	StallAfter time.Duration
	// Now is the probes' clock (default time.Now).
	Now func() time.Time
	// TFLite is the TensorFlow Lite runtime's version, for vigil_build_info.
	TFLite string
	// Inputs are further readiness checks of the sources (an MQTT source's
	// connection to its broker); nil for none.
	Inputs func() []Check
}

// Snapshot is the health message.
type Snapshot struct {
	Device     string               `json:"device"`
	Version    string               `json:"version"`
	TS         time.Time            `json:"ts"`
	UptimeS    float64              `json:"uptime_s"`
	Rates      Rates                `json:"rates"`
	Inference  Latency              `json:"inference"`
	Pipeline   pipeline.Stats       `json:"pipeline"`
	Backlog    map[string]Backlog   `json:"backlog"`
	DiskBytes  int64                `json:"disk_bytes"`
	BufBytes   int64                `json:"buffer_bytes"`
	BufDisk    buffer.DiskStats     `json:"buffer_disk"`
	BufDamage  []string             `json:"buffer_damage,omitempty"`
	Evicted    map[string]uint64    `json:"evicted"`
	Forwarders map[string]Forwarder `json:"forwarders"`
	Models     map[string]string    `json:"models"`   // stream → model@version
	Learning   map[string]string    `json:"learning"` // stream → state
	Parts      map[string]Part      `json:"parts,omitempty"`
	Goroutines int                  `json:"goroutines"`
	HeapBytes  uint64               `json:"heap_bytes"`
	Extra      map[string]any       `json:"extra,omitempty"`
	// Problems are what /healthz reports as degrading the device; empty
	// when all is well.
	Problems []string `json:"problems"`
}

// Rates are per-second rates since the previous snapshot.
type Rates struct {
	Inputs float64 `json:"inputs_per_s"`
	Scores float64 `json:"scores_per_s"`
	Alerts float64 `json:"alerts_per_s"`
	Drops  float64 `json:"drops_per_s"`
}

// Latency is per-window inference latency in microseconds.
type Latency struct {
	P50us float64 `json:"p50_us"`
	P99us float64 `json:"p99_us"`
}

// Backlog is one lane's size and each consumer's lag on it.
type Backlog struct {
	Records int            `json:"records"`
	Bytes   int64          `json:"bytes"`
	OldestS float64        `json:"oldest_s"`
	Lag     map[string]int `json:"lag"` // consumer → records not acknowledged
}

// unroutedWindow is how long inputs that reached no stream stay a problem
// after the last one.
const unroutedWindow = 5 * time.Minute

// Reporter builds snapshots.
type Reporter struct {
	src      Sources
	progress *Progress
	mu       sync.Mutex
	prev     struct {
		at                            time.Time
		inputs, scores, alerts, drops uint64
	}
	// unrouted tracks, per source, the unknown_stream drops seen and when
	// their count last grew.
	unrouted map[string]unrouted
	now      func() time.Time // time.Now; tests set it
}

type unrouted struct {
	count  uint64
	grewAt time.Time
}

// NewReporter returns a Reporter over src.
func NewReporter(src Sources) *Reporter {
	if src.Started.IsZero() {
		src.Started = time.Now()
	}
	return &Reporter{src: src, now: time.Now, progress: &Progress{Stats: src.Pipeline, StallAfter: src.StallAfter, Now: src.Now}}
}

// AddForwarder adds a forwarder's state to the snapshots. Call it before
// serving.
func (r *Reporter) AddForwarder(name string, f func() Forwarder) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.src.Forwarders == nil {
		r.src.Forwarders = map[string]func() Forwarder{}
	}
	r.src.Forwarders[name] = f
}

// Snapshot gathers the current state.
func (r *Reporter) Snapshot() Snapshot {
	now := r.now()
	s := Snapshot{
		Device: r.src.Device, Version: r.src.Version, TS: now.UTC(),
		UptimeS:    now.Sub(r.src.Started).Seconds(),
		Backlog:    map[string]Backlog{},
		Evicted:    map[string]uint64{},
		Forwarders: map[string]Forwarder{},
		Models:     map[string]string{},
		Learning:   map[string]string{},
		Goroutines: runtime.NumGoroutine(),
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.HeapBytes = ms.HeapAlloc
	if r.src.Pipeline != nil {
		p := r.src.Pipeline()
		s.Pipeline = p
		s.Inference = Latency{P50us: float64(p.InferenceP50) / 1e3, P99us: float64(p.InferenceP99) / 1e3}
		for name, st := range p.Streams {
			if st.Model != "" {
				s.Models[name] = st.Model
			}
			s.Learning[name] = st.State
		}
		r.mu.Lock()
		if dt := now.Sub(r.prev.at).Seconds(); !r.prev.at.IsZero() && dt > 0 {
			s.Rates = Rates{
				Inputs: float64(p.Inputs-r.prev.inputs) / dt,
				Scores: float64(p.Scores-r.prev.scores) / dt,
				Alerts: float64(p.Alerts-r.prev.alerts) / dt,
				Drops:  float64(p.DropTotal()-r.prev.drops) / dt,
			}
		}
		r.prev.at, r.prev.inputs, r.prev.scores, r.prev.alerts, r.prev.drops = now, p.Inputs, p.Scores, p.Alerts, p.DropTotal()
		s.Problems = append(s.Problems, r.unroutedProblems(p, now)...)
		r.mu.Unlock()
	}
	if r.src.Buffer != nil {
		b := r.src.Buffer()
		s.DiskBytes, s.BufBytes, s.BufDisk, s.BufDamage = b.DiskBytes, b.Bytes, b.Disk, b.Damage
		for lane, ls := range b.Lanes {
			bl := Backlog{Records: ls.Records, Bytes: ls.Bytes, OldestS: ls.OldestAge.Seconds(), Lag: map[string]int{}}
			for consumer, lanes := range b.Consumers {
				if cs, ok := lanes[lane]; ok {
					bl.Lag[consumer] = cs.Lag
				}
			}
			s.Backlog[lane] = bl
			s.Evicted[lane] = ls.Evicted
		}
	}
	for name, f := range r.src.Forwarders {
		s.Forwarders[name] = f()
		if s.Forwarders[name].State == "failing" {
			s.Problems = append(s.Problems, name+" is failing: "+s.Forwarders[name].LastError)
		}
	}
	for name, st := range s.Learning {
		if st == pipeline.StateFailed {
			s.Problems = append(s.Problems, "stream "+name+": learning failed")
		}
	}
	if r.src.Parts != nil {
		s.Parts = r.src.Parts()
	}
	for name, p := range s.Parts {
		if p.State == PartRestarting || p.State == PartFailed {
			s.Problems = append(s.Problems, name+" is "+p.State+": "+p.LastError)
		}
	}
	if s.BufDisk.Full {
		s.Problems = append(s.Problems, "buffer: disk full, appends refused: "+s.BufDisk.LastError)
	}
	sort.Strings(s.Problems)
	if s.Problems == nil {
		s.Problems = []string{}
	}
	if len(r.src.Extra) > 0 {
		s.Extra = map[string]any{}
		for k, f := range r.src.Extra {
			s.Extra[k] = f()
		}
	}
	return s
}

// unroutedProblems names the sources whose inputs reached no stream
// (unknown_stream drops) within the last unroutedWindow: a subscription or
// a stream_map that routes nowhere loses every message. r.mu is held.
func (r *Reporter) unroutedProblems(p pipeline.Stats, now time.Time) []string {
	if r.unrouted == nil {
		r.unrouted = map[string]unrouted{}
	}
	var out []string
	for _, d := range p.Drops {
		if d.Reason != string(source.DropUnknown) {
			continue
		}
		u := r.unrouted[d.Source]
		if d.Count > u.count {
			u = unrouted{count: d.Count, grewAt: now}
			r.unrouted[d.Source] = u
		}
		if now.Sub(u.grewAt) < unroutedWindow {
			out = append(out, fmt.Sprintf("source %s: %d inputs reached no stream (unknown_stream); check its topics, stream_from and stream_map against the streams' names", d.Source, u.count))
		}
	}
	return out
}

// Healthz answers GET /healthz: 200 with a short JSON summary, or 503 when a
// forwarder is failing permanently, a part is restarting after a failure,
// a stream's learning failed, or a source's inputs reached no stream within the last five minutes.
func (r *Reporter) Healthz(w http.ResponseWriter, _ *http.Request) {
	s := r.Snapshot()
	status, problems := "ok", s.Problems
	code := http.StatusOK
	if len(problems) > 0 {
		status, code = "degraded", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{
		"status": status, "problems": problems, "device": s.Device, "version": s.Version,
		"uptime_s": s.UptimeS, "models": s.Models, "learning": s.Learning, "forwarders": s.Forwarders,
		"parts": s.Parts,
	})
}
