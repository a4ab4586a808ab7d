package health

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/buffer"
)

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
