package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/buffer"
)

// The field-inputs suite feeds what users and hostile clients actually send
// through the real sources (a real mosquitto, real HTTP on loopback) into a
// daemon running in the test, and checks what the user gets.

// postEvents posts evs to the daemon's /v1/events with an optional bearer
// token and query string, and returns the status and the body.
func postEvents(t *testing.T, d *Daemon, bearer, query string, evs ...map[string]any) (int, string) {
	t.Helper()
	body, _ := json.Marshal(evs)
	req, err := http.NewRequest(http.MethodPost, "http://"+d.Addr()+"/v1/events"+query, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// event is a behaviour event for user at t.
func event(id, user string, t time.Time) map[string]any {
	return map[string]any{"event_id": id, "event_name": "page_view", "user_id": user, "timestamp": t.UTC().Format(time.RFC3339Nano)}
}

// A token in the URL is refused unless http.allow_query_token says
// otherwise; the header always works.
func TestFieldQueryTokenIsOffByDefault(t *testing.T) {
	const tok = "field-token-0123456789"
	for _, tc := range []struct {
		allow     bool
		wantQuery int
	}{{false, http.StatusUnauthorized}, {true, http.StatusAccepted}} {
		t.Run(fmt.Sprintf("allow_query_token=%v", tc.allow), func(t *testing.T) {
			cfgPath, _ := testConfig(t, 100, "")
			rewrite(t, cfgPath, `http: {listen: "127.0.0.1:0"}`, fmt.Sprintf(`http: {listen: "127.0.0.1:0", token: %q, allow_query_token: %v}`, tok, tc.allow))
			d, _ := startDaemon(t, cfgPath)
			now := time.Now()
			if code, body := postEvents(t, d, "", "?token="+tok, event("q1", "user-1", now)); code != tc.wantQuery {
				t.Errorf("token in the query: %d %s, want %d", code, body, tc.wantQuery)
			}
			if code, body := postEvents(t, d, tok, "", event("h1", "user-1", now)); code != http.StatusAccepted {
				t.Errorf("token in the header: %d %s, want 202", code, body)
			}
		})
	}
}

// pumpChannels are the inputs of models/pump8.
var pumpChannels = []string{"Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple", "Voltage", "Volume Flow RateRMS"}

// pumpMeans are pump8's normalisation means: a normal sample.
var pumpMeans = []float64{0.0265, 0.0403, 1.0004, 0.0793, 78.132, 26.257, 229.91, 32.099}

// mqttConfig writes a config for a daemon with the broker, an in-memory
// buffer and one source, plant, of MQTT settings plant (YAML), for
// streams, each stream's YAML.
func mqttConfig(t *testing.T, broker *mqtttest.Broker, plant string, streams ...string) string {
	t.Helper()
	path, _ := writeConfig(t, t.TempDir(), "field-device-01", "", fmt.Sprintf(`
buffer: {kind: memory}
mqtt: {broker: %q}
sources:
  - {name: plant, type: mqtt, mqtt: %s}
streams:
  - %s
`, broker.URL(), plant, strings.Join(streams, "\n  - ")))
	return path
}

// sample is a normal pump8 sample stamped t, as a JSON payload.
func sample(t time.Time, extra map[string]any) []byte {
	m := map[string]any{"ts": t.UnixMilli()}
	for i, c := range pumpChannels {
		m[c] = pumpMeans[i]
	}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// waitSubscribed waits until every MQTT source of the daemon is subscribed.
func waitSubscribed(t *testing.T, d *Daemon) {
	t.Helper()
	waitFor(t, 30*time.Second, func() bool {
		for _, s := range d.current().sources {
			if s.connected != nil && !s.connected() {
				return false
			}
		}
		return true
	})
}

// drops returns the pipeline's drops of source src for reason.
func drops(d *Daemon, src string, reason source.DropReason) uint64 {
	for _, dr := range d.Stats().Drops {
		if dr.Source == src && dr.Reason == string(reason) {
			return dr.Count
		}
	}
	return 0
}

// With one stream on a source, every topic of its subscription reaches that
// stream, whatever the topic's last level; with several, a topic that
// reaches none degrades /healthz, naming the source.
func TestFieldTopicsReachTheOnlyStream(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{}) // skips in -short
	pub := mqtttest.Connect(t, broker)
	t.Run("one stream", func(t *testing.T) {
		d, _ := startDaemon(t, mqttConfig(t, broker, `{topics: ["plant/pump1/telemetry"], qos: 1, fields: {timestamp: ts, timestamp_format: unix_ms}}`,
			`{name: pump1, source: plant, model: pump8, max_lateness: 0s}`))
		waitSubscribed(t, d)
		t0 := time.Now().Add(-time.Hour)
		for i := range 70 {
			mqtttest.Publish(t, pub, "plant/pump1/telemetry", 1, false, sample(t0.Add(time.Duration(i)*time.Second), nil))
		}
		waitFor(t, 30*time.Second, func() bool {
			return d.Stats().Streams["pump1"].Windows >= 1 || drops(d, "plant", source.DropUnknown) > 0
		})
		if n := drops(d, "plant", source.DropUnknown); n > 0 {
			t.Fatalf("%d samples on plant/pump1/telemetry dropped as unknown_stream; the only stream is pump1", n)
		}
	})
	t.Run("two streams", func(t *testing.T) {
		d, _ := startDaemon(t, mqttConfig(t, broker, `{topics: ["plant/+/telemetry"], qos: 1, fields: {timestamp: ts, timestamp_format: unix_ms}}`,
			`{name: pump1, source: plant, model: pump8}`, `{name: pump2, source: plant, model: pump8}`))
		waitSubscribed(t, d)
		if code, body := get(t, "http://"+d.Addr()+"/healthz"); code != http.StatusOK {
			t.Fatalf("/healthz before any message: %d %s", code, body)
		}
		mqtttest.Publish(t, pub, "plant/pump3/telemetry", 1, false, sample(time.Now(), nil))
		waitFor(t, 30*time.Second, func() bool { return drops(d, "plant", source.DropUnknown) > 0 })
		code, body := get(t, "http://"+d.Addr()+"/healthz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "source plant: 1 inputs reached no stream") {
			t.Fatalf("/healthz after a message that reached no stream: %d %s, want 503 naming source plant", code, body)
		}
	})
}

// A retained sample on the subscribed topic is not ingested at every
// connect stamped with the arrival time: by default it is dropped, counted
// as retained.
func TestFieldRetainedSampleIsNotIngested(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{}) // skips in -short
	pub := mqtttest.Connect(t, broker)
	mqtttest.Publish(t, pub, "plant/pump1/telemetry", 1, true, sample(time.Now().Add(-time.Hour), map[string]any{"ts": nil}))
	d, _ := startDaemon(t, mqttConfig(t, broker, `{topics: ["plant/pump1/telemetry"], qos: 1}`,
		`{name: pump1, source: plant, model: pump8}`))
	waitFor(t, 30*time.Second, func() bool { return drops(d, "plant", source.DropRetained) > 0 || d.Stats().Inputs > 0 })
	if in := d.Stats().Inputs; in != 0 || drops(d, "plant", source.DropRetained) != 1 {
		t.Fatalf("a retained sample at connect: %d inputs, %d dropped as retained; want 0 and 1", in, drops(d, "plant", source.DropRetained))
	}
}

// --print-alerts shows a hostile user id escaped: a newline or an escape
// sequence in it forges no alert line and takes over no terminal.
func TestFieldPrintAlertsEscapesUserIDs(t *testing.T) {
	o := buffer.DefaultOptions()
	o.Lanes = []buffer.LaneOptions{{Name: record.LaneAlert}}
	buf, err := buffer.NewMemory(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := buf.RegisterConsumer(consumerConsole, record.LaneAlert); err != nil {
		t.Fatal(err)
	}
	const evil = "eve\n12:00:00 ALERT CRITICAL open web bob score 99\x1b[2J\x1b]0;pwned\x07"
	a, _ := json.Marshal(record.Alert{ID: "a1", TS: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), Stream: "web", Key: evil, Kind: "behaviour",
		Score: 2, Threshold: 1, Severity: "major", Episode: "e1", State: "open", TopFeatures: []record.Feature{{Name: "form_error\x1b[31m", Share: 1}}})
	if _, err := buf.Append(context.Background(), record.LaneAlert, a); err != nil {
		t.Fatal(err)
	}
	out := &testkit.Buffer{}
	d := &Daemon{buf: buf, opts: Options{Stdout: out}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.printAlertsTo(ctx) }()
	waitFor(t, 10*time.Second, func() bool { return out.String() != "" })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.Count(got, "\n") != 1 || strings.ContainsAny(got, "\x1b\x07") {
		t.Fatalf("--print-alerts wrote %q: one line without escape sequences wanted", got)
	}
	if !strings.Contains(got, `web eve\n12:00:00 ALERT`) {
		t.Fatalf("--print-alerts wrote %q: want the user id escaped", got)
	}
}

// A buffer that cannot be opened says so once, naming the directory: the
// message does not repeat its prefix.
func TestFieldBufferOpenErrorSaysItOnce(t *testing.T) {
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = notADir
	_, err := openBuffer(cfg, slog.New(slog.DiscardHandler))
	if err == nil || strings.Count(err.Error(), "open buffer") != 1 || !strings.Contains(err.Error(), filepath.Join(notADir, "buffer")) {
		t.Fatalf("openBuffer under a file: %v; want one \"open buffer <dir>\"", err)
	}
	cfg.Buffer.Kind, cfg.Buffer.MaxBytes = "memory", -1
	if _, err = openBuffer(cfg, slog.New(slog.DiscardHandler)); err == nil || strings.Count(err.Error(), "buffer:") != 1 {
		t.Fatalf("openBuffer with bad options: %v; want one \"buffer:\"", err)
	}
}

// An event stamped in year 2999 is refused with a 400 that says why, and
// counted; the user's next real event is accepted.
func TestFieldEventFromTheFutureIsRefused(t *testing.T) {
	cfgPath, _ := testConfig(t, 100, "")
	d, _ := startDaemon(t, cfgPath)
	code, body := postEvents(t, d, "", "", event("f1", "user-7", time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)))
	if code != http.StatusBadRequest || !strings.Contains(body, "ahead of this device's clock") || !strings.Contains(body, "at most 5m0s ahead is accepted") {
		t.Fatalf("an event from year 2999: %d %s, want 400 saying it is ahead of the clock", code, body)
	}
	if code, body := postEvents(t, d, "", "", event("f2", "user-7", time.Now())); code != http.StatusAccepted {
		t.Fatalf("the next real event: %d %s, want 202", code, body)
	}
	if n := drops(d, "events", source.DropFuture); n != 1 {
		t.Fatalf("%d events counted as future, want 1", n)
	}
}

// childConfigEnv names the config a child test process runs the daemon
// with (TestFieldDurableChild).
const childConfigEnv = "VIGIL_FIELD_CHILD_CONFIG"

// TestFieldDurableChild is not a test of its own: run by
// TestFieldDurableEventsSurviveSIGKILL in a child process, it runs the
// daemon, prints its address and waits to be killed.
func TestFieldDurableChild(t *testing.T) {
	cfgPath := os.Getenv(childConfigEnv)
	if cfgPath == "" {
		t.Skip("run by TestFieldDurableEventsSurviveSIGKILL in a child process")
	}
	d, _ := startDaemon(t, cfgPath)
	fmt.Printf("ADDR %s\n", d.Addr())
	<-make(chan struct{}) // until SIGKILL
}

// With http.durable, events answered 202 survive a SIGKILL right after the
// answer: the restarted daemon scores them. (Without it, they are lost:
// the 202 only says they were queued in memory.)
func TestFieldDurableEventsSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("a child process killed with SIGKILL: not in -short")
	}
	cfgPath, _ := testConfig(t, 100, "")
	rewrite(t, cfgPath, `http: {listen: "127.0.0.1:0"}`, `http: {listen: "127.0.0.1:0", durable: true}`)

	child, sc := startChild(t, "TestFieldDurableChild", childConfigEnv+"="+cfgPath)
	addr := ""
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatalf("the child printed no address: %v", sc.Err())
	}
	// Six events of one user; retried while the source is still starting.
	var evs []map[string]any
	t0 := time.Now().Add(-time.Minute)
	for i := range 6 {
		evs = append(evs, event(fmt.Sprintf("ev-%d", i), "user-42", t0.Add(time.Duration(i)*5*time.Second)))
	}
	body, _ := json.Marshal(evs)
	waitFor(t, 30*time.Second, func() bool {
		resp, err := http.Post("http://"+addr+"/v1/events", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("POST /v1/events: %d", resp.StatusCode)
		}
		return resp.StatusCode == http.StatusAccepted
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()

	d, _ := startDaemon(t, cfgPath)
	waitFor(t, 30*time.Second, func() bool { return d.Stats().Streams["web"].Windows >= 5 })
	// The client's retry after the restart is a duplicate, not a second copy.
	if code, out := postEvents(t, d, "", "", evs[0]); code != http.StatusBadRequest || !strings.Contains(out, "duplicate") {
		t.Errorf("retry of a journalled event after the restart: %d %s, want 400 duplicate", code, out)
	}
}

// A retained set-threshold on the broker, as `mosquitto_pub -r` leaves it,
// is not run when the daemon connects: the reply says why, naming the
// request, and the threshold is unchanged. A live one out of bounds is
// refused with the bounds; one within them is applied.
func TestFieldRetainedCommandIsNotRun(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{}) // skips in -short
	pub := mqtttest.Connect(t, broker)
	const dev = "field-device-01"
	mqtttest.Publish(t, pub, "vigil/"+dev+"/cmd/set-threshold", 1, true, []byte(`{"id":"x","requester":"mallory","stream":"pump1","threshold":1e308}`))
	replies := mqtttest.Subscribe(t, broker, "vigil/"+dev+"/cmd/+/reply", 1)
	d, _ := startDaemon(t, mqttConfig(t, broker, `{topics: ["plant/#"]}`,
		`{name: pump1, source: plant, model: pump8}`))
	calibrated := d.Stats().Streams["pump1"].Threshold
	reply := func(i int) publishReply {
		msgs := replies.WaitN(t, i+1, 30*time.Second)
		var r publishReply
		if err := json.Unmarshal(msgs[i].Payload, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := reply(0); r.OK || r.ID != "x" || r.Requester != "mallory" || !strings.Contains(r.Message, "retained") {
		t.Fatalf("reply to a retained set-threshold: %+v", r)
	}
	mqtttest.Publish(t, pub, "vigil/"+dev+"/cmd/set-threshold", 1, false, []byte(`{"id":"y","stream":"pump1","threshold":1e308}`))
	if r := reply(1); r.OK || !strings.Contains(r.Message, "out of bounds") {
		t.Fatalf("reply to set-threshold 1e308: %+v", r)
	}
	if got := d.Stats().Streams["pump1"].Threshold; got != calibrated {
		t.Fatalf("threshold %v after refused commands, want the calibrated %v", got, calibrated)
	}
	mqtttest.Publish(t, pub, "vigil/"+dev+"/cmd/set-threshold", 1, false, []byte(fmt.Sprintf(`{"id":"z","requester":"ops","stream":"pump1","threshold":%v}`, 2*calibrated)))
	if r := reply(2); !r.OK || r.Requester != "ops" || !strings.HasPrefix(r.Message, fmt.Sprintf("stream pump1: threshold %g (was %g", 2*calibrated, calibrated)) {
		t.Fatalf("reply to set-threshold 2x: %+v", r)
	}
}

// publishReply is a command reply as published.
type publishReply struct {
	ID        string `json:"id"`
	Requester string `json:"requester"`
	OK        bool   `json:"ok"`
	Message   string `json:"message"`
}

// The daemon's HTTP server cuts a slow body at http.read_timeout and keeps
// serving others.
func TestFieldSlowBodyIsCut(t *testing.T) {
	cfgPath, _ := testConfig(t, 100, "")
	rewrite(t, cfgPath, `http: {listen: "127.0.0.1:0"}`, `http: {listen: "127.0.0.1:0", read_timeout: 300ms, max_connections: 4}`)
	d, _ := startDaemon(t, cfgPath)
	var slow []net.Conn
	for range 8 {
		c, err := net.Dial("tcp", d.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[")
		slow = append(slow, c)
	}
	if code, body := postEvents(t, d, "", "", event("s1", "user-1", time.Now())); code != http.StatusAccepted {
		t.Fatalf("a normal request behind 8 slow ones: %d %s", code, body)
	}
	slow[0].SetReadDeadline(time.Now().Add(30 * time.Second)) // a safety net
	if _, err := io.ReadAll(slow[0]); err != nil {
		t.Fatalf("a slow body was not cut at the read timeout: %v", err)
	}
}
