package health

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/inference"
)

// Metrics returns a handler for GET /metrics with Vigil's metrics and the Go
// runtime's and the process's (go_*, process_*).
func (r *Reporter) Metrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collector{r})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// metricDef is one of Vigil's metrics, as docs/metrics.md lists it.
type metricDef struct {
	Name, Type, Help string
	Labels           []string
}

// metricDefs are Vigil's own metrics in the order they are declared below;
// MetricsReference renders them.
var metricDefs []metricDef

// def declares a metric: its descriptor, and its entry in the reference.
func def(name, typ, help string, labels ...string) *prometheus.Desc {
	metricDefs = append(metricDefs, metricDef{name, typ, help, labels})
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dBuild     = def("vigil_build_info", "gauge", "Always 1; the labels name the build: Vigil's version, the Go version and the TensorFlow Lite runtime's version.", "version", "goversion", "tflite")
	dUp        = def("vigil_start_time_seconds", "gauge", "When the process started, in seconds since the Unix epoch.")
	dInputs    = def("vigil_inputs_total", "counter", "Inputs received by the pipeline.")
	dScores    = def("vigil_scores_total", "counter", "Window scores appended to the buffer.")
	dAlerts    = def("vigil_alerts_total", "counter", "Alerts appended to the buffer.")
	dDrops     = def("vigil_drops_total", "counter", "Inputs dropped, by source and reason.", "source", "reason")
	dWindows   = def("vigil_stream_windows_total", "counter", "Windows scored, by stream.", "stream")
	dStAlerts  = def("vigil_stream_alerts_total", "counter", "Alerts, by stream.", "stream")
	dEpisodes  = def("vigil_stream_episode_alerts_total", "counter", "Episode alerts, by stream and change (open, escalated, reopened, closed).", "stream", "change")
	dFlips     = def("vigil_stream_suppressed_flips_total", "counter", "Anomalies that continued an episode waiting to close (episode.close_after) instead of closing and reopening it, by stream.", "stream")
	dShift     = def("vigil_stream_shift_windows_total", "counter", "Windows in which a channel's level shift over its last samples went over its limit (streams[].shift_factor times the largest in the training data), by stream.", "stream")
	dStuck     = def("vigil_stream_stuck_windows_total", "counter", "Windows that ended with a channel stuck (one value for longer than the model allows), by stream.", "stream")
	dKeyEvicts = def("vigil_stream_key_evictions_total", "counter", "Behaviour keys evicted (beyond the keys a stream tracks), by stream.", "stream")
	dKeyEvOpen = def("vigil_stream_key_evictions_open_episode_total", "counter", "Behaviour keys evicted with an open episode, which the eviction closed, by stream.", "stream")
	dState     = def("vigil_stream_state", "gauge", "1 for the stream's current state (scoring, learning, training, failed) and model.", "stream", "state", "model")
	dLearned   = def("vigil_stream_learn_samples", "gauge", "Samples a learning stream has collected towards its baseline.", "stream")
	dLearnGoal = def("vigil_stream_learn_target_samples", "gauge", "Samples a learning stream collects before it trains (learn.samples).", "stream")
	dLearnPct  = def("vigil_stream_learn_progress_ratio", "gauge", "Learning progress, 0 to 1: collected over target samples; 1 once the stream scores.", "stream")
	dLatency   = def("vigil_inference_duration_seconds", "histogram", "Inference time per window: each batch's duration divided by its windows, observed once per window.")
	dClamped   = def("vigil_inference_clamped_total", "counter", "Input values clamped to a quantized model's input range.")
	dQueue     = def("vigil_input_queue_length", "gauge", "Inputs waiting in the pipeline's queues.")
	dQueueCap  = def("vigil_input_queue_capacity", "gauge", "Capacity of the pipeline's queues, in inputs.")
	dLaneRecs  = def("vigil_buffer_records", "gauge", "Records in the buffer, by lane.", "lane")
	dLaneBytes = def("vigil_buffer_bytes", "gauge", "Bytes in the buffer, by lane, as counted against the caps.", "lane")
	dLaneCap   = def("vigil_buffer_max_bytes", "gauge", "Byte cap of each lane (buffer.lanes.<lane>.max_bytes, or buffer.max_bytes when the lane has none) and, with lane=\"\", of all lanes together (buffer.max_bytes).", "lane")
	dEvicted   = def("vigil_buffer_evicted_total", "counter", "Records evicted under the byte caps, by lane.", "lane")
	dRejected  = def("vigil_buffer_rejected_total", "counter", "Appends refused because a lane was full, by lane.", "lane")
	dCorrupt   = def("vigil_buffer_corrupt_skipped_total", "counter", "Damaged records skipped, and durable records found lost at start, by lane.", "lane")
	dNoSpace   = def("vigil_buffer_no_space_total", "counter", "Appends refused because the buffer's filesystem was full, by lane.", "lane")
	dDiskFull  = def("vigil_buffer_disk_full", "gauge", "1 while the buffer's filesystem is full and changes are refused.")
	dDiskFree  = def("vigil_buffer_disk_free_bytes", "gauge", "Free space on the buffer's filesystem at the last check.")
	dDamage    = def("vigil_buffer_damage_found", "gauge", "Damage found (and repaired or moved aside) when the buffer was opened: number of findings.")
	dLag       = def("vigil_consumer_lag_records", "gauge", "Records a consumer has not acknowledged, by lane.", "consumer", "lane")
	dDisk      = def("vigil_buffer_disk_bytes", "gauge", "Space the buffer takes on disk.")
	dMQTTUp    = def("vigil_mqtt_connected", "gauge", "1 while the publisher is connected to the MQTT broker, else 0; absent when MQTT is off.", "broker")
	dMQTTConns = def("vigil_mqtt_connections_total", "counter", "Successful connections to the MQTT broker since the start: each one after the first is a reconnection.", "broker")
	dFailovers = def("vigil_mqtt_failovers_total", "counter", "MQTT connections made to another broker of mqtt.brokers than the one before.")
	dCmdSub    = def("vigil_mqtt_commands_subscribed", "gauge", "1 while the publisher's subscription to its commands is in place, else 0 (disconnected, or the broker refused the subscription or did not answer: it is tried again while connected); absent when commands are off.")
	dCmdSubErr = def("vigil_mqtt_command_subscribe_failures_total", "counter", "Attempts to subscribe to the commands that the broker refused (SUBACK 0x80, as a clustered broker electing leaders does) or did not answer in time.")
	dFwdState  = def("vigil_forwarder_state", "gauge", "1 for the forwarder's current state (ok, retrying, throttled, failing, disconnected).", "forwarder", "state")
	dFwdDead   = def("vigil_forwarder_dead_letters_total", "counter", "Records a forwarder gave up on, with a reason.", "forwarder")
	dFwdSent   = def("vigil_forwarder_sent_total", "counter", "Records a forwarder delivered.", "forwarder")
	dFwdLag    = def("vigil_forwarder_backlog_records", "gauge", "Records waiting for a forwarder.", "forwarder")
	dFwdLagS   = def("vigil_forwarder_lag_seconds", "gauge", "Age of the oldest record waiting for a forwarder.", "forwarder")
	dRestarts  = def("vigil_part_restarts_total", "counter", "Restarts of a supervised part (a source or consumer) after it failed, by part.", "part")
	dPartUp    = def("vigil_part_up", "gauge", "1 while a supervised part runs, 0 while it waits to restart or has stopped.", "part")
	dLive      = def("vigil_live", "gauge", "1 while /livez passes (the pipeline makes progress), else 0.")
	dReady     = def("vigil_ready", "gauge", "1 while /readyz passes, else 0; vigil_ready_check gives each check.")
	dReadyChk  = def("vigil_ready_check", "gauge", "1 while the named /readyz check passes, else 0.", "check")
)

// MetricsReference is the table of Vigil's metrics that docs/metrics.md
// holds between its generated-section markers.
func MetricsReference() string {
	var b strings.Builder
	b.WriteString("| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n")
	for _, m := range metricDefs {
		labels := "—"
		if len(m.Labels) > 0 {
			labels = "`" + strings.Join(m.Labels, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", m.Name, m.Type, labels, strings.ReplaceAll(m.Help, "|", "\\|"))
	}
	return b.String()
}

type collector struct{ r *Reporter }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dBuild, dUp, dInputs, dScores, dAlerts, dDrops, dWindows, dStAlerts, dState,
		dLearned, dLearnGoal, dLearnPct, dLatency, dQueue, dQueueCap, dLaneRecs, dLaneBytes, dLaneCap, dEvicted,
		dRejected, dCorrupt, dLag, dDisk, dMQTTUp, dMQTTConns, dFwdState, dFwdDead, dFwdSent, dFwdLag, dFwdLagS,
		dLive, dReady, dReadyChk, dEpisodes, dFlips, dKeyEvicts, dKeyEvOpen, dClamped, dFailovers, dRestarts, dPartUp,
		dNoSpace, dDiskFull, dDiskFree, dDamage, dCmdSub, dCmdSubErr} {
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
	b01 := func(ok bool) float64 {
		if ok {
			return 1
		}
		return 0
	}
	gauge(dBuild, 1, src.Version, runtime.Version(), src.TFLite)
	gauge(dUp, float64(src.Started.UnixNano())/1e9)
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
			for change, n := range st.Episodes {
				counter(dEpisodes, float64(n), name, change)
			}
			counter(dFlips, float64(st.SuppressedFlips), name)
			counter(dStuck, float64(st.StuckWindows), name)
			counter(dShift, float64(st.ShiftWindows), name)
			if st.Kind == pipeline.KindBehaviour {
				counter(dKeyEvicts, float64(st.KeyEvicts), name)
				counter(dKeyEvOpen, float64(st.KeyEvictsOpen), name)
			}
			if st.LearnTarget > 0 {
				gauge(dLearned, float64(st.Learned), name)
				gauge(dLearnGoal, float64(st.LearnTarget), name)
				gauge(dLearnPct, learnRatio(st.State, st.Learned, st.LearnTarget), name)
			}
		}
		h := p.Inference
		buckets := make(map[float64]uint64, len(h.Bounds))
		for i, le := range h.Bounds {
			buckets[le] = h.Counts[i]
		}
		ch <- prometheus.MustNewConstHistogram(dLatency, h.Count, h.Sum, buckets)
		counter(dClamped, float64(inference.ClampedTotal()))
		gauge(dQueue, float64(p.QueueLen))
		gauge(dQueueCap, float64(p.QueueCap))
	}
	if src.Buffer != nil {
		b := src.Buffer()
		for lane, ls := range b.Lanes {
			gauge(dLaneRecs, float64(ls.Records), lane)
			gauge(dLaneBytes, float64(ls.Bytes), lane)
			if l, ok := src.Lanes[lane]; ok || src.BufferMaxBytes > 0 {
				cap := l.MaxBytes
				if cap == 0 {
					cap = src.BufferMaxBytes
				}
				if cap > 0 {
					gauge(dLaneCap, float64(cap), lane)
				}
			}
			counter(dEvicted, float64(ls.Evicted), lane)
			counter(dRejected, float64(ls.Rejected), lane)
			counter(dCorrupt, float64(ls.CorruptSkipped), lane)
			counter(dNoSpace, float64(ls.NoSpace), lane)
		}
		gauge(dDiskFull, b01(b.Disk.Full))
		gauge(dDiskFree, float64(b.Disk.Free))
		gauge(dDamage, float64(len(b.Damage)))
		if src.BufferMaxBytes > 0 {
			gauge(dLaneCap, float64(src.BufferMaxBytes), "")
		}
		for consumer, lanes := range b.Consumers {
			for lane, cs := range lanes {
				gauge(dLag, float64(cs.Lag), consumer, lane)
			}
		}
		gauge(dDisk, float64(b.DiskBytes))
	}
	if src.Broker != nil {
		if b := src.Broker(); b.Configured {
			gauge(dMQTTUp, b01(b.Connected), b.URL)
			counter(dMQTTConns, float64(b.Connects), b.URL)
		}
	}
	for name, f := range src.Forwarders {
		fs := f()
		gauge(dFwdState, 1, name, fs.State)
		counter(dFwdDead, float64(fs.DeadLetters), name)
		counter(dFwdSent, float64(fs.Sent), name)
		gauge(dFwdLag, float64(fs.Backlog), name)
		gauge(dFwdLagS, fs.LagS, name)
		if name == "mqtt" {
			counter(dFailovers, float64(fs.Failovers))
			if fs.CommandsSubscribed != nil {
				gauge(dCmdSub, b01(*fs.CommandsSubscribed))
				counter(dCmdSubErr, float64(fs.CommandSubscribeFailures))
			}
		}
	}
	if src.Parts != nil {
		for name, p := range src.Parts() {
			counter(dRestarts, float64(p.Restarts), name)
			gauge(dPartUp, b01(p.State == PartRunning), name)
		}
	}
	live := true
	for _, chk := range c.r.Live() {
		live = live && chk.OK
	}
	gauge(dLive, b01(live))
	ready := true
	for _, chk := range c.r.Ready() {
		ready = ready && chk.OK
		gauge(dReadyChk, b01(chk.OK), chk.Name)
	}
	gauge(dReady, b01(ready))
}

// learnRatio is a stream's learning progress: 1 once it scores.
func learnRatio(state string, learned, target int) float64 {
	if state == "scoring" || target <= 0 {
		return 1
	}
	return min(1, float64(learned)/float64(target))
}
