package health

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/agent/pipeline"
)

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
