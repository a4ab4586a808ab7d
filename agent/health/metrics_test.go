package health

import (
	"flag"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/buffer"
)

var update = flag.Bool("update", false, "rewrite docs/metrics.md's generated table")

const (
	refFile  = "../../docs/metrics.md"
	refBegin = "<!-- BEGIN GENERATED: metrics -->\n"
	refEnd   = "<!-- END GENERATED: metrics -->"
)

// TestMetricsReference keeps docs/metrics.md's table equal to the metric
// descriptors.
func TestMetricsReference(t *testing.T) {
	b, err := os.ReadFile(refFile)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, refBegin), strings.Index(doc, refEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the generated-section markers", refFile)
	}
	want := doc[:i+len(refBegin)] + MetricsReference() + doc[j:]
	if want == doc {
		return
	}
	if *update {
		if err := os.WriteFile(refFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s is out of date: go test ./agent/health -run TestMetricsReference -update", refFile)
}

// TestMetricsFollowTheConventions: names in base units, counters end in
// _total, nothing else does, every metric has help.
func TestMetricsFollowTheConventions(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range metricDefs {
		if seen[m.Name] {
			t.Errorf("%s declared twice", m.Name)
		}
		seen[m.Name] = true
		if !strings.HasPrefix(m.Name, "vigil_") || m.Help == "" {
			t.Errorf("%s: want a vigil_ prefix and help", m.Name)
		}
		if (m.Type == "counter") != strings.HasSuffix(m.Name, "_total") {
			t.Errorf("%s is a %s: counters, and only counters, end in _total", m.Name, m.Type)
		}
		for _, bad := range []string{"_ms", "_us", "_milliseconds", "_kb", "_mib", "_percent"} {
			if strings.Contains(m.Name, bad) {
				t.Errorf("%s: use base units (seconds, bytes, ratio)", m.Name)
			}
		}
	}
}

func TestMetricsExposeHistogramBuildInfoCapsAndLearning(t *testing.T) {
	st := pipeline.Stats{
		Streams: map[string]pipeline.StreamStats{"pump1": {State: pipeline.StateLearning, Learned: 500, LearnTarget: 2000}},
		Inference: pipeline.Histogram{Bounds: pipeline.InferenceBuckets[:], Counts: make([]uint64, len(pipeline.InferenceBuckets)),
			Count: 3, Sum: 0.003},
	}
	for i := range st.Inference.Counts {
		st.Inference.Counts[i] = 3
	}
	r := NewReporter(Sources{Version: "v1.2.3", TFLite: "2.9.0", Started: time.Unix(1700000000, 0),
		Pipeline: func() pipeline.Stats { return st },
		Buffer: func() buffer.Stats {
			return buffer.Stats{Lanes: map[string]buffer.LaneStats{"score": {Bytes: 10}, "alert": {Bytes: 20}}, Bytes: 30}
		},
		Lanes:          map[string]Lane{"score": {}, "alert": {MaxBytes: 1 << 20}},
		BufferMaxBytes: 256 << 20,
		Broker: func() Broker {
			return Broker{Configured: true, URL: "tcp://127.0.0.1:1883", Connected: true, Connects: 2}
		},
		Forwarders: map[string]func() Forwarder{"mqtt": func() Forwarder {
			subscribed := false
			return Forwarder{State: "ok", CommandsSubscribed: &subscribed, CommandSubscribeFailures: 3}
		}},
	})
	rec := httptest.NewRecorder()
	r.Metrics().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`vigil_build_info{goversion="go`, `tflite="2.9.0",version="v1.2.3"} 1`,
		`vigil_inference_duration_seconds_bucket{le="0.001"} 3`,
		`vigil_inference_duration_seconds_count 3`,
		`vigil_buffer_max_bytes{lane="alert"} 1.048576e+06`,
		`vigil_buffer_max_bytes{lane="score"} 2.68435456e+08`,
		`vigil_buffer_max_bytes{lane=""} 2.68435456e+08`,
		`vigil_buffer_bytes{lane="alert"} 20`,
		`vigil_mqtt_connected{broker="tcp://127.0.0.1:1883"} 1`,
		`vigil_mqtt_connections_total{broker="tcp://127.0.0.1:1883"} 2`,
		"vigil_mqtt_commands_subscribed 0",
		"vigil_mqtt_command_subscribe_failures_total 3",
		`vigil_stream_learn_progress_ratio{stream="pump1"} 0.25`,
		`vigil_stream_learn_target_samples{stream="pump1"} 2000`,
		`vigil_ready_check{check="broker"} 1`,
		`vigil_live 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, "vigil_inference_seconds_per_window") {
		t.Error("the quantile gauge is still exposed")
	}
	if t.Failed() {
		t.Log(text)
	}
}

func TestMetricsCountKeyEvictions(t *testing.T) {
	r := NewReporter(Sources{Pipeline: func() pipeline.Stats {
		return pipeline.Stats{Streams: map[string]pipeline.StreamStats{
			"kiosk": {Kind: pipeline.KindBehaviour, State: "scoring", KeyEvicts: 7, KeyEvictsOpen: 2},
			"pump1": {Kind: pipeline.KindSensor, State: "scoring"},
		}}
	}})
	w := httptest.NewRecorder()
	r.Metrics().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body := w.Body.String()
	for _, want := range []string{
		`vigil_stream_key_evictions_total{stream="kiosk"} 7`,
		`vigil_stream_key_evictions_open_episode_total{stream="kiosk"} 2`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, `key_evictions_total{stream="pump1"}`) {
		t.Error("a sensor stream has key evictions")
	}
}
