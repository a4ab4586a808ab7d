package perf

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// PhaseResult is one rate of the load test.
type PhaseResult struct {
	Name      string  `json:"name"`
	Rate      float64 `json:"rate"`       // target, msg/s
	Achieved  float64 `json:"achieved"`   // what the generator sent, msg/s
	Sent      int64   `json:"sent"`       // messages published
	Inputs    float64 `json:"inputs"`     // messages the pipeline received (vigil_inputs_total)
	Expected  int64   `json:"expected"`   // windows the sent messages make
	Scores    float64 `json:"scores"`     // scores appended to the buffer (vigil_scores_total)
	Delivered int     `json:"delivered"`  // distinct scores received from the output broker
	Dups      int     `json:"duplicates"` // scores received more than once (same id)
	// Drops are vigil_drops_total by reason; NotReceived are messages
	// the input broker never handed to Vigil (sent − inputs − drops).
	Drops       map[string]float64 `json:"drops"`
	NotReceived int64              `json:"not_received"`
	OverloadLog int                `json:"overload_log_lines"` // "pipeline full" warnings (rate-limited)
	CPUPerMsgUS float64            `json:"cpu_us_per_msg"`     // vigil's user+system CPU per message sent
	CPUCores    float64            `json:"cpu_cores"`          // vigil's CPU over the phase, in cores
	RSSIdleMB   float64            `json:"rss_idle_mb"`        // before the load, subscribed
	RSSIdleAnon float64            `json:"rss_idle_anon_mb"`   // of which anonymous
	RSSIdleFile float64            `json:"rss_idle_file_mb"`   // of which file-backed
	RSSLoadMB   float64            `json:"rss_load_mb"`        // highest during the load
	LatP50MS    float64            `json:"latency_p50_ms"`     // window end → score at the subscriber, live scores
	LatP99MS    float64            `json:"latency_p99_ms"`
	Load        string             `json:"loadavg"` // /proc/loadavg at the end of the phase
	Sustained   bool               `json:"sustained"`
	Exit        string             `json:"exit,omitempty"` // set when vigil died during the run
	// Outage case only.
	OutageS       float64 `json:"outage_s,omitempty"`
	Replayed      int     `json:"replayed,omitempty"`
	BacklogDoneS  float64 `json:"backlog_done_s,omitempty"` // broker return → last replayed score received
	LiveDuringRep int     `json:"live_during_replay,omitempty"`
}

// LoadReport is what TestLoad writes to tmp/perf/load.json.
type LoadReport struct {
	Started   time.Time     `json:"started"`
	Phases    []PhaseResult `json:"phases"`
	Highest   float64       `json:"highest_sustained"`
	CPU100    *CPU100Result `json:"cpu100,omitempty"`
	Machine   string        `json:"machine"`
	Model     string        `json:"model"`
	PhaseSecs float64       `json:"phase_s"`
}

// CPU100Result is the 100 samples/s measurement: the demo's simulator
// into the buffer with models/pump8, nothing else.
type CPU100Result struct {
	Seconds    float64 `json:"seconds"`
	CPUPercent float64 `json:"cpu_percent_of_one_core"`
	CPUPer1k   float64 `json:"cpu_s_per_1k_samples"`
	RSSMB      float64 `json:"rss_mb"`
	Load       string  `json:"loadavg"`
}

// ARM64Count is one workload counted under qemu-user with the insncount
// plugin: guest (aarch64) instructions per operation, from the difference
// of two runs of the same benchmark at different iteration counts, so the
// process's start-up and set-up cancel out.
type ARM64Count struct {
	Name      string  `json:"name"`
	Unit      string  `json:"unit"` // what one operation is: "window", "Learn(400x8)"
	PerOp     float64 `json:"instructions_per_op"`
	RunsA     int     `json:"iterations_a"`
	RunsB     int     `json:"iterations_b"`
	InsnsA    uint64  `json:"instructions_a"`
	InsnsB    uint64  `json:"instructions_b"`
	HostNsOp  float64 `json:"host_ns_per_op,omitempty"` // the same benchmark natively, for scale
	Measurand string  `json:"measurand"`
}

// LoadTable is the load test's table: one row per rate.
func LoadTable(r LoadReport) *Table {
	t := &Table{Header: []string{"phase", "target msg/s", "sent msg/s", "CPU µs/msg", "cores", "RSS idle MB", "RSS load MB",
		"delivered/expected", "dups", "drops (reason)", "not received", "overload log lines", "p50 ms", "p99 ms", "backlog s", "sustained", "load avg"}}
	for _, p := range r.Phases {
		drops := "0"
		if len(p.Drops) > 0 {
			var ds []string
			for k, v := range p.Drops {
				ds = append(ds, fmt.Sprintf("%.0f %s", v, labelValue(k, "reason")))
			}
			sort.Strings(ds)
			drops = strings.Join(ds, ", ")
		}
		backlog := ""
		if p.OutageS > 0 {
			backlog = fmt.Sprintf("%.1f (%d replayed, %d live meanwhile)", p.BacklogDoneS, p.Replayed, p.LiveDuringRep)
		}
		t.Add(p.Name, fmt.Sprintf("%.0f", p.Rate), fmt.Sprintf("%.0f", p.Achieved), fmt.Sprintf("%.1f", p.CPUPerMsgUS),
			fmt.Sprintf("%.2f", p.CPUCores), fmt.Sprintf("%.1f", p.RSSIdleMB), fmt.Sprintf("%.1f", p.RSSLoadMB),
			fmt.Sprintf("%d/%d", p.Delivered, p.Expected), fmt.Sprint(p.Dups), drops, fmt.Sprint(p.NotReceived),
			fmt.Sprint(p.OverloadLog), fmt.Sprintf("%.1f", p.LatP50MS), fmt.Sprintf("%.1f", p.LatP99MS), backlog,
			yesNo(p.Sustained)+crashed(p), p.Load)
	}
	return t
}

// labelValue returns the value of label in a metric key such as
// `vigil_drops_total{reason="late",source="bus"}`.
func labelValue(key, label string) string {
	_, rest, ok := strings.Cut(key, label+`="`)
	if !ok {
		return key
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

func crashed(p PhaseResult) string {
	if p.Exit != "" {
		return " (vigil died)"
	}
	return ""
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// Report gathers the figures of `make bench`.
type Report struct {
	Bench []BenchResult
	Load  *LoadReport
	ARM64 []ARM64Count
	// Load average when the report was made.
	LoadAvg string
	At      time.Time
}

// row is one figure of the report beside its target.
type row struct {
	figure, value, target, verdict, source string
}

// Table is the benchmark report: every figure beside its target, with
// "met", "MISSED", or "—" (no target, or not measured).
func (r Report) Table() *Table {
	t := &Table{Header: []string{"figure", "measured", "target", "met", "from"}}
	for _, x := range r.rows() {
		t.Add(x.figure, x.value, x.target, x.verdict, x.source)
	}
	return t
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func (r Report) rows() []row {
	var rows []row
	add := func(x row) { rows = append(rows, x) }
	missing := func(figure, target, source string) {
		add(row{figure, "not measured", target, "—", source})
	}
	metric := func(pkg, name, unit string) (float64, bool) {
		if b := Find(r.Bench, pkg, name); b != nil {
			v, ok := b.Metrics[unit]
			return v, ok
		}
		return 0, false
	}

	// Issue 5: source to buffer.
	const s2b = "perf BenchmarkSourceToBuffer/buffer=badger"
	if v, ok := metric("/agent/internal/harness/perf", "SourceToBuffer/buffer=badger", "samples/s"); ok {
		add(row{"source→buffer samples/s (pump8, 60/10, Badger)", fmtNum(v), "≥ 50 000", verdict(v >= 50000), s2b})
		w, _ := metric("/agent/internal/harness/perf", "SourceToBuffer/buffer=badger", "windows/s")
		add(row{"source→buffer windows/s", fmtNum(w), "", "—", s2b})
		c, _ := metric("/agent/internal/harness/perf", "SourceToBuffer/buffer=badger", "cpu-s/1k-samples")
		add(row{"CPU s per 1k samples (saturated)", fmt.Sprintf("%.4f", c), "", "—", s2b})
	} else {
		missing("source→buffer samples/s", "≥ 50 000", s2b)
	}
	if r.Load != nil && r.Load.CPU100 != nil {
		c := r.Load.CPU100
		add(row{"CPU at 100 samples/s (demo simulator, pump8)", fmt.Sprintf("%.2f %% of a core (%.4f s/1k samples)", c.CPUPercent, c.CPUPer1k),
			"≤ 2 %", verdict(c.CPUPercent <= 2), "vigil run, /proc stat, " + fmt.Sprintf("%.0f s", c.Seconds)})
		add(row{"RSS at 100 samples/s", fmt.Sprintf("%.1f MB", c.RSSMB), "", "—", "vigil run"})
	} else {
		missing("CPU at 100 samples/s", "≤ 2 %", "make loadtest")
	}

	// Issue 8: the peer workload.
	if r.Load != nil {
		var idle float64
		for _, p := range r.Load.Phases {
			idle = math.Max(idle, p.RSSIdleMB)
		}
		var anon, file float64
		if len(r.Load.Phases) > 0 {
			anon, file = r.Load.Phases[0].RSSIdleAnon, r.Load.Phases[0].RSSIdleFile
		}
		add(row{"RSS idle (MQTT source subscribed, highest of the runs)", fmt.Sprintf("%.1f MB (first run: %.1f anon + %.1f file)", idle, anon, file),
			"≤ 20 MB", verdict(idle <= 20), "load test"})
		if p := r.Load.phase(10000); p != nil {
			add(row{"RSS under load at 10k msg/s", fmt.Sprintf("%.1f MB", p.RSSLoadMB), "≤ 40 MB", verdict(p.RSSLoadMB <= 40), "load test"})
			add(row{"CPU per input message at 10k msg/s", fmt.Sprintf("%.1f µs", p.CPUPerMsgUS), "≤ 35 µs", verdict(p.CPUPerMsgUS <= 35), "load test"})
			add(row{"score latency p50/p99 at 10k msg/s (window end → subscriber)", fmt.Sprintf("%.1f / %.1f ms", p.LatP50MS, p.LatP99MS), "", "—", "load test"})
		} else {
			missing("CPU per input message at 10k msg/s", "≤ 35 µs", "load test")
		}
		add(row{"highest sustained rate, nothing lost", fmt.Sprintf("%s msg/s", fmtNum(r.Load.Highest)), "≥ 24 000", verdict(r.Load.Highest >= 24000), "load test"})
		var silent []string
		for _, p := range r.Load.Phases {
			if p.NotReceived > 0 || (len(p.Drops) > 0 && p.OverloadLog == 0) {
				silent = append(silent, p.Name)
			}
		}
		v := "none silent: every loss counted in /metrics"
		if len(silent) > 0 {
			v = "unaccounted loss in " + strings.Join(silent, ", ")
		}
		add(row{"overload never silent", v, "counted drops + rate-limited log", verdict(len(silent) == 0), "load test"})
		if p := r.Load.outage(); p != nil {
			lost := p.Expected - int64(p.Delivered)
			add(row{fmt.Sprintf("outage at 5k msg/s, output broker down %.0f s: scores lost", p.OutageS), fmt.Sprint(lost), "0", verdict(lost == 0), "load test"})
			add(row{"outage: backlog delivered after the broker's return", fmt.Sprintf("%.1f s (%d live scores meanwhile)", p.BacklogDoneS, p.LiveDuringRep),
				"≤ 10 s, live flowing", verdict(p.BacklogDoneS <= 10 && p.LiveDuringRep > 0), "load test"})
		}
	} else {
		missing("peer workload (load test)", "see issue 8", "make loadtest")
	}

	// Issue 2: inference.
	for _, batch := range []int{1, 16, 64} {
		name := fmt.Sprintf("Score/dense/batch=%d", batch)
		s, ok1 := metric("/inference", name+"/score", "ns/window")
		ratio, ok2 := metric("/inference", name+"/bare-invoke", "score/bare")
		allocs, _ := metric("/inference", name+"/score", "allocs/op")
		if !ok1 {
			missing("inference ns/window dense batch="+fmt.Sprint(batch), "", "inference BenchmarkScore")
			continue
		}
		target, met := "", "—"
		if batch == 1 {
			target, met = "≤ 1.2× bare, 0 allocs", verdict(ok2 && ratio <= 1.2 && allocs == 0)
		}
		add(row{fmt.Sprintf("inference dense 60×8, batch %d: ns/window; Score/bare invoke", batch),
			fmt.Sprintf("%s ns; %.2f×; %.0f allocs", fmtNum(s), ratio, allocs), target, met, "inference BenchmarkScore"})
	}
	// Issue 4: buffer.
	for _, b := range []string{"batched/batch=1", "batched/batch=64", "batched/batch=1024", "sync/batch=1", "sync/batch=64"} {
		if v, ok := metric("/buffer", "Append/"+b, "records/s"); ok {
			target, met := "", "—"
			if b == "batched/batch=1024" {
				target, met = "≥ 200 000", verdict(v >= 200000)
			}
			add(row{"buffer append records/s, " + b + " (200 B)", fmtNum(v), target, met, "buffer BenchmarkAppend"})
		}
	}
	if v, ok := metric("/buffer", "AppendSyncConcurrent", "records/s"); ok {
		add(row{"buffer sync appends/s, 16 writers (group commit)", fmtNum(v), "≥ 5 000", verdict(v >= 5000), "buffer BenchmarkAppendSyncConcurrent"})
	} else {
		missing("buffer sync appends/s, 16 writers", "≥ 5 000", "buffer")
	}
	if v, ok := metric("/buffer", "ReadAck", "records/s"); ok {
		add(row{"buffer read+ack records/s", fmtNum(v), "", "—", "buffer BenchmarkReadAck"})
	}

	// Issue 6: publishing.
	if v, ok := metric("/agent/publish", "Drain/qos1", "msgs/s"); ok {
		add(row{"drain of a 1M backlog at QoS 1, msg/s", fmtNum(v), "≥ 20 000", verdict(v >= 20000), "publish BenchmarkDrain"})
	} else {
		missing("drain at QoS 1", "≥ 20 000 msg/s", "publish BenchmarkDrain")
	}
	if v, ok := metric("/agent/publish", "Drain/qos0", "msgs/s"); ok {
		add(row{"drain of a 1M backlog at QoS 0, msg/s", fmtNum(v), "", "—", "publish BenchmarkDrain"})
	}
	p50, ok1 := metric("/agent/publish", "AlertLatency", "p50-ms")
	p99, ok2 := metric("/agent/publish", "AlertLatency", "p99-ms")
	if ok1 && ok2 {
		add(row{"alert latency append → subscriber p50/p99 at 1k/s", fmt.Sprintf("%.2f / %.2f ms", p50, p99), "p99 ≤ 20 ms", verdict(p99 <= 20), "publish BenchmarkAlertLatency"})
	} else {
		missing("alert latency p99", "≤ 20 ms", "publish BenchmarkAlertLatency")
	}

	// Issue 7: Amplitude.
	if v, ok := metric("/amplitude", "Latency", "p99-ms"); ok {
		add(row{"alert → Amplitude acknowledgement p99", fmt.Sprintf("%.0f ms", v), "≤ 1.5 s", verdict(v <= 1500), "amplitude BenchmarkLatency"})
	}

	// arm64 under emulation.
	for _, c := range r.ARM64 {
		add(row{"arm64 (qemu-user) " + c.Name, fmt.Sprintf("%s guest instructions per %s", fmtNum(c.PerOp), c.Unit), "", "—", c.Measurand})
	}
	if len(r.ARM64) == 0 {
		missing("arm64 instruction counts", "", "make bench-arm64")
	}
	return rows
}

func (r *LoadReport) phase(rate float64) *PhaseResult {
	for i := range r.Phases {
		if r.Phases[i].Rate == rate && r.Phases[i].OutageS == 0 {
			return &r.Phases[i]
		}
	}
	return nil
}

func (r *LoadReport) outage() *PhaseResult {
	for i := range r.Phases {
		if r.Phases[i].OutageS > 0 {
			return &r.Phases[i]
		}
	}
	return nil
}

// fmtNum formats a number with thin groups of three digits: 1234567 →
// "1 234 567"; below 100 with up to 3 significant digits.
func fmtNum(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprint(v)
	}
	if math.Abs(v) < 100 {
		return fmt.Sprintf("%.3g", v)
	}
	s := fmt.Sprintf("%.0f", math.Abs(v))
	var b strings.Builder
	if v < 0 {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	return b.String()
}
