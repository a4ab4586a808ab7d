package health

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/buffer"
)

func healthz(t *testing.T, r *Reporter) (int, []string) {
	t.Helper()
	rec := httptest.NewRecorder()
	r.Healthz(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var body struct {
		Status   string   `json:"status"`
		Problems []string `json:"problems"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	return rec.Code, body.Problems
}

// Inputs that reach no stream make /healthz degraded, naming the source,
// until five minutes pass without another.
func TestHealthzReportsInputsThatReachNoStream(t *testing.T) {
	var mu sync.Mutex
	stats := pipeline.Stats{Drops: []pipeline.Drop{{Source: "plant", Reason: string(source.DropLate), Count: 4}}}
	r := NewReporter(Sources{Pipeline: func() pipeline.Stats {
		mu.Lock()
		defer mu.Unlock()
		return stats
	}})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	if code, problems := healthz(t, r); code != http.StatusOK || len(problems) != 0 {
		t.Fatalf("late drops only: %d %v, want 200 and no problem", code, problems)
	}
	mu.Lock()
	stats.Drops = append(stats.Drops, pipeline.Drop{Source: "plant", Reason: string(source.DropUnknown), Count: 120})
	mu.Unlock()
	code, problems := healthz(t, r)
	if code != http.StatusServiceUnavailable || len(problems) != 1 || !strings.Contains(problems[0], "source plant: 120 inputs reached no stream") {
		t.Fatalf("unknown_stream drops: %d %v, want 503 naming source plant", code, problems)
	}
	if s := r.Snapshot(); len(s.Problems) != 1 {
		t.Fatalf("the health message's problems: %v", s.Problems)
	}
	now = now.Add(unroutedWindow)
	if code, problems := healthz(t, r); code != http.StatusOK {
		t.Fatalf("%v after the last unknown_stream drop: %d %v, want 200", unroutedWindow, code, problems)
	}
}

// TestHealthShowsFullDisk: a buffer whose disk is full makes /healthz
// answer 503 with the reason, and the metrics say so.
func TestHealthShowsFullDisk(t *testing.T) {
	full := true
	r := NewReporter(Sources{Buffer: func() buffer.Stats {
		return buffer.Stats{
			Lanes: map[string]buffer.LaneStats{"alert": {NoSpace: 3}},
			Disk:  buffer.DiskStats{Full: full, Free: 10, Reserve: 100, LastError: "10 bytes free"},
		}
	}})
	get := func(h http.Handler, path string) (int, string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		b, _ := io.ReadAll(w.Result().Body)
		return w.Code, string(b)
	}
	code, body := get(http.HandlerFunc(r.Healthz), "/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "disk full") || !strings.Contains(body, "10 bytes free") {
		t.Errorf("healthz with a full disk: %d %s", code, body)
	}
	_, metrics := get(r.Metrics(), "/metrics")
	for _, want := range []string{"vigil_buffer_disk_full 1", `vigil_buffer_no_space_total{lane="alert"} 3`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	full = false
	if code, body := get(http.HandlerFunc(r.Healthz), "/healthz"); code != http.StatusOK {
		t.Errorf("healthz once space returned: %d %s", code, body)
	}
}
