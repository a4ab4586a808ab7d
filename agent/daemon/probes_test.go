package daemon

import (
	"strings"
	"testing"
	"time"
)

// TestDaemonServesProbesStatusAndMetrics: the routes the daemon adds for
// operators answer, and the status page's JSON carries the scores.
func TestDaemonServesProbesStatusAndMetrics(t *testing.T) {
	cfgPath, _ := testConfig(t, 600, "")
	d, _ := startDaemon(t, cfgPath)
	base := "http://" + d.addr
	waitFor(t, 30*time.Second, func() bool { return d.current().pipe.Stats().Scores > 0 })
	for path, want := range map[string]string{
		"/livez":       `"status":"live"`,
		"/readyz":      `"name":"models","ok":true`,
		"/healthz":     `"status":"ok"`,
		"/":            `<title>Vigil status</title>`,
		"/status.json": `"points":{"pump1":[[`,
		"/metrics":     `vigil_inference_duration_seconds_bucket{le="0.001"}`,
	} {
		code, body := get(t, base+path)
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, want 200 with %s:\n%.600s", path, code, want, body)
		}
	}
}
