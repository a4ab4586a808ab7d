// Package health gathers what Vigil knows about itself into one snapshot and
// serves it three ways: the MQTT health message (the publisher sends
// Reporter.Snapshot), the local GET /healthz, and Prometheus metrics on
// GET /metrics, computed from the same snapshot so the three never disagree.
package health

import (
	"encoding/json"
	"net/http"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-edge/vigil/agent/pipeline"
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
}

// Sources are the parts a Reporter reads. Nil functions are skipped.
type Sources struct {
	Device   string
	Version  string
	Started  time.Time
	Pipeline func() pipeline.Stats
	Buffer   func() buffer.Stats
	// Forwarders by name ("mqtt", "amplitude", "dify").
	Forwarders map[string]func() Forwarder
	// Extra holds any further JSON-able sections, e.g. the publisher's own
	// stats under "mqtt_publisher".
	Extra map[string]func() any
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
	Goroutines int                  `json:"goroutines"`
	HeapBytes  uint64               `json:"heap_bytes"`
	Extra      map[string]any       `json:"extra,omitempty"`
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

// Reporter builds snapshots.
type Reporter struct {
	src  Sources
	mu   sync.Mutex
	prev struct {
		at                            time.Time
		inputs, scores, alerts, drops uint64
	}
}

// NewReporter returns a Reporter over src.
func NewReporter(src Sources) *Reporter {
	if src.Started.IsZero() {
		src.Started = time.Now()
	}
	return &Reporter{src: src}
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
	now := time.Now()
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
	}
	if len(r.src.Extra) > 0 {
		s.Extra = map[string]any{}
		for k, f := range r.src.Extra {
			s.Extra[k] = f()
		}
	}
	return s
}

// Healthz answers GET /healthz: 200 with a short JSON summary, or 503 when a
// forwarder is failing permanently or a stream's learning failed.
func (r *Reporter) Healthz(w http.ResponseWriter, _ *http.Request) {
	s := r.Snapshot()
	status, problems := "ok", []string{}
	for name, f := range s.Forwarders {
		if f.State == "failing" {
			problems = append(problems, name+" is failing: "+f.LastError)
		}
	}
	for name, st := range s.Learning {
		if st == pipeline.StateFailed {
			problems = append(problems, "stream "+name+": learning failed")
		}
	}
	if s.BufDisk.Full {
		problems = append(problems, "buffer: disk full, appends refused: "+s.BufDisk.LastError)
	}
	sort.Strings(problems)
	code := http.StatusOK
	if len(problems) > 0 {
		status, code = "degraded", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{
		"status": status, "problems": problems, "device": s.Device, "version": s.Version,
		"uptime_s": s.UptimeS, "models": s.Models, "learning": s.Learning, "forwarders": s.Forwarders,
	})
}

// Metrics returns a handler for GET /metrics with Vigil's metrics and the Go
// runtime's.
func (r *Reporter) Metrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collector{r})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

type collector struct{ r *Reporter }

var (
	dInputs    = prometheus.NewDesc("vigil_inputs_total", "Inputs received by the pipeline.", nil, nil)
	dScores    = prometheus.NewDesc("vigil_scores_total", "Window scores appended to the buffer.", nil, nil)
	dAlerts    = prometheus.NewDesc("vigil_alerts_total", "Alerts appended to the buffer.", nil, nil)
	dDrops     = prometheus.NewDesc("vigil_drops_total", "Inputs dropped, by source and reason.", []string{"source", "reason"}, nil)
	dWindows   = prometheus.NewDesc("vigil_stream_windows_total", "Windows scored, by stream.", []string{"stream"}, nil)
	dStAlerts  = prometheus.NewDesc("vigil_stream_alerts_total", "Alerts, by stream.", []string{"stream"}, nil)
	dState     = prometheus.NewDesc("vigil_stream_state", "1 for the stream's current state.", []string{"stream", "state", "model"}, nil)
	dLatency   = prometheus.NewDesc("vigil_inference_seconds_per_window", "Inference latency per window, by quantile.", []string{"quantile"}, nil)
	dQueue     = prometheus.NewDesc("vigil_input_queue_length", "Inputs waiting in the pipeline's queue.", nil, nil)
	dLaneRecs  = prometheus.NewDesc("vigil_buffer_records", "Records in the buffer, by lane.", []string{"lane"}, nil)
	dLaneBytes = prometheus.NewDesc("vigil_buffer_bytes", "Bytes in the buffer, by lane.", []string{"lane"}, nil)
	dEvicted   = prometheus.NewDesc("vigil_buffer_evicted_total", "Records evicted under the byte caps, by lane.", []string{"lane"}, nil)
	dRejected  = prometheus.NewDesc("vigil_buffer_rejected_total", "Appends refused because a lane was full, by lane.", []string{"lane"}, nil)
	dCorrupt   = prometheus.NewDesc("vigil_buffer_corrupt_skipped_total", "Damaged records skipped, and durable records found lost at start, by lane.", []string{"lane"}, nil)
	dNoSpace   = prometheus.NewDesc("vigil_buffer_no_space_total", "Appends refused because the buffer's filesystem was full, by lane.", []string{"lane"}, nil)
	dDiskFull  = prometheus.NewDesc("vigil_buffer_disk_full", "1 while the buffer's filesystem is full and changes are refused.", nil, nil)
	dDiskFree  = prometheus.NewDesc("vigil_buffer_disk_free_bytes", "Free space on the buffer's filesystem at the last check.", nil, nil)
	dDamage    = prometheus.NewDesc("vigil_buffer_damage_found", "Damage found (and repaired or moved aside) when the buffer was opened: number of findings.", nil, nil)
	dLag       = prometheus.NewDesc("vigil_consumer_lag_records", "Records a consumer has not acknowledged, by lane.", []string{"consumer", "lane"}, nil)
	dDisk      = prometheus.NewDesc("vigil_buffer_disk_bytes", "Space the buffer takes on disk.", nil, nil)
	dFwdState  = prometheus.NewDesc("vigil_forwarder_state", "1 for the forwarder's current state.", []string{"forwarder", "state"}, nil)
	dFwdDead   = prometheus.NewDesc("vigil_forwarder_dead_letters_total", "Records a forwarder gave up on, with a reason.", []string{"forwarder"}, nil)
	dFwdSent   = prometheus.NewDesc("vigil_forwarder_sent_total", "Records a forwarder delivered.", []string{"forwarder"}, nil)
	dFwdLag    = prometheus.NewDesc("vigil_forwarder_backlog_records", "Records waiting for a forwarder.", []string{"forwarder"}, nil)
	dFwdLagS   = prometheus.NewDesc("vigil_forwarder_lag_seconds", "Age of the oldest record waiting for a forwarder.", []string{"forwarder"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dInputs, dScores, dAlerts, dDrops, dWindows, dStAlerts, dState, dLatency, dQueue,
		dLaneRecs, dLaneBytes, dEvicted, dRejected, dCorrupt, dNoSpace, dDiskFull, dDiskFree, dDamage, dLag, dDisk, dFwdState, dFwdDead, dFwdSent, dFwdLag, dFwdLagS} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	src := c.r.src
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	if src.Pipeline != nil {
		p := src.Pipeline()
		counter(dInputs, float64(p.Inputs))
		counter(dScores, float64(p.Scores))
		counter(dAlerts, float64(p.Alerts))
		for _, d := range p.Drops {
			counter(dDrops, float64(d.Count), d.Source, d.Reason)
		}
		for name, st := range p.Streams {
			counter(dWindows, float64(st.Windows), name)
			counter(dStAlerts, float64(st.Alerts), name)
			gauge(dState, 1, name, st.State, st.Model)
		}
		gauge(dLatency, p.InferenceP50.Seconds(), "0.5")
		gauge(dLatency, p.InferenceP99.Seconds(), "0.99")
		gauge(dQueue, float64(p.QueueLen))
	}
	if src.Buffer != nil {
		b := src.Buffer()
		for lane, ls := range b.Lanes {
			gauge(dLaneRecs, float64(ls.Records), lane)
			gauge(dLaneBytes, float64(ls.Bytes), lane)
			counter(dEvicted, float64(ls.Evicted), lane)
			counter(dRejected, float64(ls.Rejected), lane)
			counter(dCorrupt, float64(ls.CorruptSkipped), lane)
			counter(dNoSpace, float64(ls.NoSpace), lane)
		}
		full := 0.0
		if b.Disk.Full {
			full = 1
		}
		gauge(dDiskFull, full)
		gauge(dDiskFree, float64(b.Disk.Free))
		gauge(dDamage, float64(len(b.Damage)))
		for consumer, lanes := range b.Consumers {
			for lane, cs := range lanes {
				gauge(dLag, float64(cs.Lag), consumer, lane)
			}
		}
		gauge(dDisk, float64(b.DiskBytes))
	}
	for name, f := range src.Forwarders {
		fs := f()
		gauge(dFwdState, 1, name, fs.State)
		counter(dFwdDead, float64(fs.DeadLetters), name)
		counter(dFwdSent, float64(fs.Sent), name)
		gauge(dFwdLag, float64(fs.Backlog), name)
		gauge(dFwdLagS, fs.LagS, name)
	}
}
