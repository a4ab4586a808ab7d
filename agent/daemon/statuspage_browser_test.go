package daemon

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// TestStatusPageInChromium runs the demo's sources and streams (the
// simulated pump with injected faults and the kiosk users) and opens the
// status page in headless Chromium: the page renders a chart per stream, the
// demo's first alert is on it within a minute of the start, and a screenshot
// is written (to VIGIL_STATUS_SCREENSHOT when set, e.g.
// VIGIL_STATUS_SCREENSHOT=$PWD/docs/status-page.png for the README).
func TestStatusPageInChromium(t *testing.T) {
	testkit.Chromium(t) // skips early without one (and under -short: the demo runs for up to a minute)
	models, _ := filepath.Abs(repoModels)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vigil.yaml")
	cfg := fmt.Sprintf(`
device_id: pump-01
data_dir: %s
models_dir: %s
log: {level: warn}
http: {listen: "127.0.0.1:0"}
buffer: {kind: memory}
mqtt: {embedded_broker: {listen: "127.0.0.1:0"}}
sources:
  - name: pump
    type: simulator
    simulator: {rate: 100, faults: true, fault_interval: 20s, seed: 1, users: 20}
streams:
  - {name: pump1, source: pump, model: pump8}
  - {name: kiosk, source: pump, kind: behaviour, model: kiosk, key: user_id, cooldown: 1m}
`, filepath.Join(dir, "data"), models)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d, _ := startDaemon(t, cfgPath)
	url := "http://" + d.addr + "/"

	browse := func(args ...string) string { return testkit.Headless(t, url, args...) }

	// The page renders before any alert: a chart per stream, the probes.
	dom := browse("--dump-dom")
	for _, want := range []string{`data-stream="pump1"`, `data-stream="kiosk"`, `>live</span>`, `>pipeline</b>`, `>MQTT broker</td>`} {
		if !strings.Contains(dom, want) {
			t.Fatalf("the page lacks %s:\n%s", want, dom)
		}
	}

	// The demo's first alert, on the page within a minute of the start.
	waitFor(t, time.Until(start.Add(time.Minute)), func() bool { return d.current().pipe.Stats().Alerts > 0 })
	dom = browse("--dump-dom")
	if !strings.Contains(dom, `<tr class="alert-row" data-id="`) {
		t.Fatalf("no alert row on the page %v after the start, though the pipeline has %d alert(s):\n%s",
			time.Since(start).Round(time.Second), d.current().pipe.Stats().Alerts, dom)
	}
	if since := time.Since(start); since > time.Minute {
		t.Fatalf("the first alert reached the page %v after the start, want within a minute", since.Round(time.Second))
	}
	t.Logf("first alert on the page %v after the start", time.Since(start).Round(time.Second))

	shot := os.Getenv("VIGIL_STATUS_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "status-page.png")
	}
	browse("--window-size=1280,1280", "--screenshot="+shot)
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 10000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s: %d bytes, %v", shot, len(png), err)
	}
}
