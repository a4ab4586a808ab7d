package watch

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	goldenfile "github.com/vigil-edge/vigil/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var (
	t0 = time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)

	statusOnline  = `{"state":"online","since":"2025-06-01T07:50:00Z","device":"pump-7","version":"1.2.0","birth_seq":3,"models":["pump@3"]}`
	statusOffline = `{"state":"offline","device":"kiosk-2","version":"1.1.0","birth_seq":8,"models":[],"reason":"connection lost"}`
	health        = `{"ts":"2025-06-01T07:59:58Z","device":"pump-7","uptime_s":3725,` +
		`"mqtt":{"connected":true,"connects":2,"reconnects":1,"birth_seq":3,"lanes":{"alert":{"published":12,"replayed":2,"invalid":0,"in_flight":1,"replay_backlog":0},"score":{"published":5000,"replayed":40,"invalid":0,"in_flight":3,"replay_backlog":120}}},` +
		`"rates":{"pump":{"samples_per_s":100,"scores_per_s":2.5}},"backlog":{"score":{"mqtt":123,"amplitude":0}},` +
		`"drops":{"queue_full":3,"late":1},"learning":{"pump":"done"},"models":["pump@3"]}`
	alert1 = `{"seq":11,"id":"a-1","ts":"2025-06-01T07:59:00Z","stream":"pump","severity":"major","state":"open","score":3.2,"threshold":1.5,"replayed":true}`
	alert2 = `{"seq":12,"id":"a-2","ts":"2025-06-01T07:59:30Z","stream":"pump","key":"u1","severity":"critical","state":"escalated","score":7.25,"threshold":1.5,"replayed":false}`
)

// sampleView is a view with two devices, as the golden file shows it.
func sampleView() *view {
	v := newView("vigil")
	v.apply("vigil/pump-7/status", []byte(statusOnline), true, t0)
	v.apply("vigil/pump-7/health", []byte(health), false, t0.Add(-2*time.Second))
	v.apply("vigil/pump-7/alerts/pump", []byte(alert1), false, t0)
	v.apply("vigil/pump-7/alerts/pump", []byte(alert2), false, t0)
	v.apply("vigil/kiosk-2/status", []byte(statusOffline), true, t0)
	return v
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		name      string
		v         *view
		connected bool
		dropped   int
	}{
		{"devices", sampleView(), true, 0},
		{"empty-disconnected", newView("vigil"), false, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.v.render("tcp://broker:1883", tc.connected, tc.dropped, t0)
			golden := filepath.Join("testdata", tc.name+".golden")
			want := goldenfile.Want(t, golden, []byte(got), *update)
			if got != string(want) {
				t.Errorf("render differs from %s (run with -update to accept):\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestApply(t *testing.T) {
	v := sampleView()
	if _, ok := v.apply("other/pump-7/status", []byte(statusOnline), false, t0); ok {
		t.Error("a topic outside the prefix was applied")
	}
	if _, ok := v.apply("vigil/pump-7/scores/pump", []byte(`{}`), false, t0); ok {
		t.Error("a score was applied")
	}
	for i := 0; i < 10; i++ {
		v.apply("vigil/pump-7/alerts/pump", []byte(alert1), false, t0)
	}
	if d := v.devices["pump-7"]; len(d.alerts) != maxAlerts || d.nAlerts != 12 {
		t.Errorf("alerts kept %d, counted %d; want %d, 12", len(d.alerts), d.nAlerts, maxAlerts)
	}
	ev, ok := v.apply("vigil/kiosk-2/status", nil, true, t0)
	if !ok || ev.Kind != "status" || v.devices["kiosk-2"] != nil {
		t.Errorf("a cleared status did not remove the device: %+v", ev)
	}
	ev, _ = v.apply("vigil/pump-7/alerts/pump", []byte("not json"), false, t0)
	if string(ev.Payload) != `"not json"` {
		t.Errorf("payload of a non-JSON message: %s", ev.Payload)
	}
}

// runWatch runs Watch until the test ends.
func runWatch(t *testing.T, opts Options) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
}

// TestWatchJSON runs the watcher against mosquitto and reads its JSON
// lines.
func TestWatchJSON(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	c := mqtttest.Connect(t, b)
	mqtttest.Publish(t, c, "vigil/pump-7/status", 1, true, []byte(statusOnline)) // retained, before the watcher
	var out testkit.Buffer
	opts := DefaultOptions()
	opts.Broker, opts.JSON, opts.Out = b.URL(), true, &out
	runWatch(t, opts)

	lines := func() []string {
		s := strings.TrimSpace(out.String())
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	testkit.WaitFor(t, 10*time.Second, "the retained status", func() bool { return len(lines()) >= 1 })
	mqtttest.Publish(t, c, "vigil/pump-7/health", 0, false, []byte(health))
	mqtttest.Publish(t, c, "vigil/pump-7/alerts/pump", 1, false, []byte(alert2))
	mqtttest.Publish(t, c, "vigil/pump-7/scores/pump", 0, false, []byte(`{"score":1}`)) // not watched
	mqtttest.Publish(t, c, "vigil/kiosk-2/status", 1, false, []byte(statusOffline))
	testkit.WaitFor(t, 10*time.Second, "4 lines", func() bool { return len(lines()) >= 4 })

	var got []Event
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, ev)
	}
	want := []struct {
		device, kind string
		retained     bool
		payload      string
	}{
		{"pump-7", "status", true, statusOnline},
		{"pump-7", "health", false, health},
		{"pump-7", "alert", false, alert2},
		{"kiosk-2", "status", false, statusOffline},
	}
	if len(got) != len(want) {
		t.Fatalf("%d lines; want %d:\n%s", len(got), len(want), out.String())
	}
	for i, w := range want {
		g := got[i]
		if g.Device != w.device || g.Kind != w.kind || g.Retained != w.retained || string(g.Payload) != w.payload || g.Received.IsZero() {
			t.Errorf("line %d: %+v\nwant %+v", i, g, w)
		}
	}
}

// TestWatchTerminal checks that the live view redraws in place.
func TestWatchTerminal(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	c := mqtttest.Connect(t, b)
	var out testkit.Buffer
	opts := DefaultOptions()
	opts.Broker, opts.Out, opts.Refresh = b.URL(), &out, 20*time.Millisecond
	runWatch(t, opts)
	testkit.WaitFor(t, 10*time.Second, "a first frame", func() bool { return strings.Contains(out.String(), "no device has published yet") })
	// The status is retained, so it shows whenever the watcher subscribes;
	// its showing proves the subscription (one SUBSCRIBE for every filter)
	// is in place before the alert, which is not retained, goes out.
	mqtttest.Publish(t, c, "vigil/pump-7/status", 1, true, []byte(statusOnline))
	testkit.WaitFor(t, 20*time.Second, "the device", func() bool {
		s := out.String()
		return strings.Contains(s[strings.LastIndex(s, clearScreen):], "pump-7  ONLINE")
	})
	mqtttest.Publish(t, c, "vigil/pump-7/alerts/pump", 1, false, []byte(alert2))
	testkit.WaitFor(t, 20*time.Second, "the device and its alert", func() bool {
		s := out.String()
		frame := s[strings.LastIndex(s, clearScreen):]
		return strings.Contains(frame, "pump-7  ONLINE") && strings.Contains(frame, "critical")
	})
	if n := strings.Count(out.String(), clearScreen); n < 2 {
		t.Errorf("%d frames; want the view redrawn", n)
	}
}

// TestWatchSubscribesAgainAfterARefusal: the broker refuses the watcher's
// subscriptions (SUBACK 0x80, as a NATS node does while JetStream elects
// its leaders; here mosquitto's dynamic security denies them). paho
// completes such a subscription without an error; the watcher must see the
// refusal, stay connected and ask again, and show alerts once the broker
// takes the subscription, without reconnecting.
func TestWatchSubscribesAgainAfterARefusal(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{DynamicSecurity: true})
	allow := b.RefuseSubscriptions("watcher", "watcher-pw", "#")
	dev := mqtttest.Connect(t, b) // anonymous: may publish
	var out, logs testkit.Buffer
	opts := DefaultOptions()
	opts.Broker, opts.JSON, opts.Out = b.URL(), true, &out
	opts.Username, opts.Password = "watcher", "watcher-pw"
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	runWatch(t, opts)
	testkit.WaitFor(t, 20*time.Second, "the refused subscription in the log", func() bool {
		return strings.Contains(logs.String(), "SUBACK code 0x80")
	})

	allow() // disconnects nobody
	testkit.WaitFor(t, 30*time.Second, "an alert once the broker takes the subscription", func() bool {
		mqtttest.Publish(t, dev, "vigil/pump-7/alerts/pump", 1, false, []byte(alert1))
		return strings.Contains(out.String(), `"a-1"`)
	})
	if strings.Contains(logs.String(), "connection lost") {
		t.Errorf("the watcher lost its connection; it should subscribe again on it:\n%s", logs.String())
	}
}

func TestWatchOptions(t *testing.T) {
	err := Watch(context.Background(), Options{Prefix: "a/+", Refresh: time.Millisecond})
	for _, w := range []string{"Options.Broker", "Options.Prefix", "Options.Out", "Options.Refresh", "Options.ConnectTimeout"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not name %s", err, w)
		}
	}
	opts := DefaultOptions()
	opts.Broker, opts.Out, opts.ConnectTimeout = "tcp://127.0.0.1:1", &testkit.Buffer{}, time.Second
	if err := Watch(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "connect to tcp://127.0.0.1:1") {
		t.Errorf("unreachable broker: %v", err)
	}
}

// TestRenderEscapesHostileText: a user id (alert key), a device id, a
// status reason and a health value with newlines and escape sequences
// are shown escaped: they forge no line and take over no terminal.
func TestRenderEscapesHostileText(t *testing.T) {
	const evil = "eve\n08:00:00 ALERT CRITICAL forged\x1b[2J\x1b]0;pwned\x07\u202e"
	v := newView("vigil")
	hostile, _ := json.Marshal(map[string]any{"seq": 1, "id": "a-9", "ts": "2025-06-01T07:59:00Z", "stream": "web", "key": evil,
		"severity": "major", "state": "open\x1b[31m", "score": 2, "threshold": 1})
	v.apply("vigil/pump-7/alerts/web", hostile, false, t0)
	status, _ := json.Marshal(map[string]any{"state": "offline", "reason": evil, "version": evil, "birth_seq": 1})
	v.apply("vigil/pump-7/status", status, true, t0)
	v.apply("vigil/dev\x1b[1m\n-9/status", []byte(statusOnline), true, t0)
	h, _ := json.Marshal(map[string]any{"uptime_s": 1, "learning": map[string]any{"web\nforged": evil}})
	v.apply("vigil/pump-7/health", h, false, t0)
	got := v.render("tcp://broker:1883", true, 0, t0)
	for _, r := range got {
		if r != '\n' && (r < 0x20 || r == 0x7f || r == '\u202e') {
			t.Fatalf("render has %U:\n%s", r, got)
		}
	}
	if strings.Contains(got, "\n08:00:00 ALERT") || strings.Contains(got, "\n-9") || strings.Contains(got, "\nforged") {
		t.Fatalf("a hostile string forged a line:\n%s", got)
	}
	if !strings.Contains(got, `eve\n08:00:00 ALERT CRITICAL forged\x1b[2J`) {
		t.Fatalf("the hostile key is not shown escaped:\n%s", got)
	}
}
