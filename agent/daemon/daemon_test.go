package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/buffer"
)

// repoModels is the folder of the default models, from agent/daemon.
const repoModels = "../../models"

// testConfig writes a config for a daemon that replays a pump CSV (with
// faults) as fast as it can and takes behaviour events over HTTP.
func testConfig(t *testing.T, rows int, extra string) (path, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "pump.csv")
	f, err := os.Create(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	o := source.DefaultSimulatorOptions()
	o.Seed, o.Faults, o.Start = 3, true, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := source.WriteCSV(f, rows, o); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return writeConfig(t, dir, "test-device-01", "", fmt.Sprintf(`
buffer: {kind: badger, memory_budget: 16MiB}
sources:
  - name: pump
    type: replay
    replay: {path: %s, speed: 0, columns: [Accelerometer1RMS, Accelerometer2RMS, Current, Pressure, Temperature, Thermocouple, Voltage, Volume Flow RateRMS]}
  - name: events
    type: http
streams:
  - {name: pump1, source: pump, model: pump8, max_lateness: 0s}
  - {name: web, source: events, kind: behaviour, model: kiosk, key: user_id}
%s`, csvPath, extra))
}

// writeConfig writes dir/vigil.yaml, the config of a daemon running in the
// test, and returns its path and its data_dir (dir/data): device id
// device, the models of modelsDir (the repository's when empty), warnings
// logged, HTTP on a free loopback port, one inference worker, and then
// rest, YAML for the buffer, sources, streams and the like.
func writeConfig(t *testing.T, dir, device, modelsDir, rest string) (path, dataDir string) {
	t.Helper()
	if modelsDir == "" {
		modelsDir, _ = filepath.Abs(repoModels)
	}
	dataDir = filepath.Join(dir, "data")
	cfg := fmt.Sprintf(`
device_id: %s
data_dir: %s
models_dir: %s
log: {level: warn}
http: {listen: "127.0.0.1:0"}
inference: {workers: 1}
%s`, device, dataDir, modelsDir, rest)
	path = filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, dataDir
}

// rewrite replaces old, which must be there, with new in the file at path.
func rewrite(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// rewriteAndReload rewrites the config file (as rewrite) and reloads d
// from it.
func rewriteAndReload(t *testing.T, d *Daemon, path, old, new string) error {
	t.Helper()
	rewrite(t, path, old, new)
	return d.Reload(context.Background())
}

// withSimulator adds a simulated source, sim, to the config file and
// stream, a stream's YAML line, to its streams.
func withSimulator(t *testing.T, path, stream string) {
	t.Helper()
	rewrite(t, path, "  - name: events\n", "  - {name: sim, type: simulator, simulator: {rate: 200, seed: 7}}\n  - name: events\n")
	rewrite(t, path, "  - {name: web,", stream+"\n  - {name: web,")
}

// loadConfig reads and validates a config file as `vigil run` does
// (without its flags).
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path, func(string) (string, bool) { return "", false })
	if err != nil {
		return nil, err
	}
	if errs, _ := cfg.Validate(); len(errs) > 0 {
		return nil, &config.Error{File: path, Problems: errs}
	}
	return cfg, nil
}

// startDaemon runs `vigil run` in-process and waits until it serves. stop
// cancels it and waits for Run's result; the test's cleanup calls it too.
func startDaemon(t *testing.T, cfgPath string) (d *Daemon, stop func() error) {
	t.Helper()
	return startDaemonWith(t, cfgPath, nil)
}

// startDaemonWith is startDaemon with a hook that adjusts the daemon's
// options before it is built.
func startDaemonWith(t *testing.T, cfgPath string, adjust func(*Options)) (d *Daemon, stop func() error) {
	t.Helper()
	d, done, cancel := launch(t, cfgPath, adjust)
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { stop() })
	return d, stop
}

// launch builds a daemon from the config file, runs it and waits until it
// serves; done receives Run's result. The test's cleanup cancels it, waits
// for it and, if the test failed, shows its logs.
func launch(t *testing.T, cfgPath string, adjust func(*Options)) (d *Daemon, done <-chan error, cancel func()) {
	t.Helper()
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	opts := Options{
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Version:      "test",
		ReloadConfig: func() (*config.Config, error) { return loadConfig(cfgPath) },
	}
	if adjust != nil {
		adjust(&opts)
	}
	d, err = New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancelRun := context.WithCancel(context.Background())
	result := make(chan error, 1)
	ended := make(chan struct{})
	go func() {
		err := d.Run(ctx)
		result <- err
		close(ended)
	}()
	t.Cleanup(func() {
		cancelRun()
		<-ended
		if t.Failed() {
			t.Logf("daemon logs:\n%s", logs.String())
		}
	})
	select {
	case <-d.Ready():
	case err := <-result:
		t.Fatalf("daemon stopped before serving: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("daemon not ready within 60s")
	}
	return d, result, cancelRun
}

func TestRunScoresAReplayedFileIntoTheBuffer(t *testing.T) {
	const rows = 2000
	cfgPath, dataDir := testConfig(t, rows, "")
	d, stop := startDaemon(t, cfgPath)

	// Windows of 60 with hop 10 over 2000 samples: 195 scores.
	const wantScores = (rows-60)/10 + 1
	waitFor(t, 60*time.Second, func() bool { return d.Stats().Streams["pump1"].Windows >= wantScores })

	// The local endpoints answer.
	base := "http://" + d.Addr()
	code, body := get(t, base+"/healthz")
	if code != http.StatusOK || !strings.Contains(body, `"status":"ok"`) {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	code, body = get(t, base+"/metrics")
	for _, want := range []string{"vigil_inputs_total", "vigil_scores_total", `vigil_stream_windows_total{stream="pump1"} 195`, "vigil_buffer_records"} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Fatalf("/metrics (%d) lacks %q", code, want)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Reopen the buffer: every window's score is there, once, with a unique id.
	b := reopen(t, dataDir)
	ids := map[string]bool{}
	n := 0
	for _, s := range readAll[record.Score](t, b, record.LaneScore) {
		if s.Stream != "pump1" {
			continue
		}
		n++
		if ids[s.ID] {
			t.Fatalf("score id %s twice", s.ID)
		}
		ids[s.ID] = true
		if s.Model != "pump8@1" || s.Threshold <= 0 {
			t.Fatalf("score %+v", s)
		}
	}
	if n != wantScores {
		t.Fatalf("%d pump1 scores in the buffer, want %d", n, wantScores)
	}
	alerts := readAll[record.Alert](t, b, record.LaneAlert)
	if len(alerts) == 0 {
		t.Fatal("no alert for a replay with injected faults")
	}
}

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

func TestRunAcceptsBehaviourEventsOverHTTP(t *testing.T) {
	cfgPath, _ := testConfig(t, 100, "")
	d, _ := startDaemon(t, cfgPath)
	var evs []map[string]any
	t0 := time.Now().Add(-time.Minute)
	for i := 0; i < 6; i++ {
		evs = append(evs, map[string]any{"event_id": fmt.Sprintf("ev-%d", i), "event_name": "form_error",
			"timestamp": t0.Add(time.Duration(i) * 5 * time.Second).UTC().Format(time.RFC3339Nano), "user_id": "user-12345"})
	}
	evs = append(evs, map[string]any{"event_id": "bad", "event_name": "", "user_id": "user-12345"})
	body, _ := json.Marshal(evs)
	resp, err := http.Post("http://"+d.Addr()+"/v1/events", "text/plain;charset=UTF-8", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(out), `"accepted":6`) {
		t.Fatalf("POST /v1/events: %d %s, want 400 accepting 6 and naming the bad one", resp.StatusCode, out)
	}
	waitFor(t, 30*time.Second, func() bool { return d.Stats().Streams["web"].Windows >= 5 })
}

func reopen(t *testing.T, dataDir string) buffer.Buffer {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dataDir
	b, err := openBuffer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// readAll reads every record of lane from b and decodes each, a JSON
// object, into a T (record.Score, record.Alert, ...).
func readAll[T any](t *testing.T, b buffer.Buffer, lane string) []T {
	t.Helper()
	var out []T
	from := uint64(1)
	for {
		recs, err := b.ReadFrom(lane, from, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			var v T
			if err := json.Unmarshal(r.Data, &v); err != nil {
				t.Fatalf("lane %s, seq %d: %v", lane, r.Seq, err)
			}
			out = append(out, v)
		}
		from = recs[len(recs)-1].Seq + 1
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor is testkit.WaitFor for the daemon's tests, whose conditions
// the test's own failure message names.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, timeout, "the condition", cond)
}

func TestRunLearnsAStreamsBaselineOnTheDevice(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model: not in -short")
	}
	cfgPath, dataDir := testConfig(t, 1500, "")
	// A second stream replays the same file and learns its own model.
	b, _ := os.ReadFile(cfgPath)
	cfg := string(b)
	start := strings.Index(cfg, "  - name: pump\n")
	end := strings.Index(cfg, "  - name: events")
	second := strings.Replace(cfg[start:end], "name: pump", "name: pump2", 1)
	cfg = cfg[:end] + second + cfg[end:]
	cfg = strings.Replace(cfg, "  - {name: web,", "  - {name: learner, source: pump2, model: pump8, learn: {samples: 400, budget: 20s}}\n  - {name: web,", 1)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d, stop := startDaemon(t, cfgPath)
	// The replay runs as fast as it can, so the samples after the first
	// 400 go by while the model trains: the test waits for the state.
	waitFor(t, 90*time.Second, func() bool { return d.Stats().Streams["learner"].State == "scoring" })
	st := d.Stats().Streams["learner"]
	if !strings.HasPrefix(st.Model, "learner@learned-") {
		t.Fatalf("learnt model %q", st.Model)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "learned", "learner.tflite")); err != nil {
		t.Fatalf("learnt model not saved: %v", err)
	}
	// After a restart the stream scores with the model it learnt, at once.
	d2, _ := startDaemon(t, cfgPath)
	if st := d2.Stats().Streams["learner"]; st.State != "scoring" || st.Model == "" {
		t.Fatalf("after restart: %+v, want scoring with the learnt model", st)
	}
}

// TestEmbeddedBrokerOnAFreePort: with the embedded broker on port 0 and no
// broker configured, the publisher connects to the port the broker got.
func TestEmbeddedBrokerOnAFreePort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with its MQTT publisher: not in -short")
	}
	cfgPath, _ := testConfig(t, 100, `
mqtt: {embedded_broker: {listen: "127.0.0.1:0"}}
`)
	d, _ := startDaemon(t, cfgPath)
	if strings.HasSuffix(d.brokerURL(), ":0") {
		t.Fatalf("broker URL %s: the configured port, not the bound one", d.brokerURL())
	}
	waitFor(t, 30*time.Second, func() bool { return d.Health().Forwarders["mqtt"].State == "ok" })
}

// TestPrintAlertsShowsEveryAlert: the console consumer prints every alert,
// even when the MQTT publisher acknowledged (and so let the buffer delete)
// it first.
func TestPrintAlertsShowsEveryAlert(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with its MQTT publisher: not in -short")
	}
	cfgPath, _ := testConfig(t, 3000, `
mqtt: {embedded_broker: {listen: "127.0.0.1:0"}}
`)
	out := &testkit.Buffer{}
	d, stop := startDaemonWith(t, cfgPath, func(o *Options) { o.PrintAlerts, o.Stdout = true, out })
	// A window counts as scored before its records reach the buffer; the
	// global counters move only after the append. Once every score is in
	// the buffer, the stream's alert count is final, and the global one
	// catches up with it when the alert records are in too.
	const windows = (3000-60)/10 + 1
	var alerts uint64
	waitFor(t, 90*time.Second, func() bool {
		st := d.Stats()
		alerts = st.Alerts
		return st.Scores >= windows && st.Alerts == st.Streams["pump1"].Alerts
	})
	if alerts == 0 {
		t.Fatal("the replay raised no alert")
	}
	lines := func() int { return strings.Count(out.String(), " ALERT ") }
	waitFor(t, 30*time.Second, func() bool { return uint64(lines()) >= alerts })
	stop()
	if n := lines(); uint64(n) != alerts {
		t.Fatalf("printed %d alerts, the pipeline raised %d", n, alerts)
	}
}

// TestMQTTSourceWithoutFieldsMapsModelChannels: an MQTT source without
// fields.values maps each channel of its stream's model to the payload
// field of the same name, as the config reference says.
func TestMQTTSourceWithoutFieldsMapsModelChannels(t *testing.T) {
	path, _ := writeConfig(t, t.TempDir(), "test-device-01", "", `
sources:
  - name: bus
    type: mqtt
    mqtt: {broker: "tcp://127.0.0.1:1", topics: ["pump/#"]}
streams:
  - {name: pump1, source: bus, model: pump8}
`)
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	got := sameNameFields(cfg, "bus")
	if len(got) != 8 || got["Pressure"] != "Pressure" || got["Volume Flow RateRMS"] != "Volume Flow RateRMS" {
		t.Fatalf("fields %v: want pump8's 8 channels under their own names", got)
	}
	if ps := Check(cfg); len(ps) > 0 {
		t.Fatalf("a generation with an MQTT source without fields: %v", ps)
	}
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
