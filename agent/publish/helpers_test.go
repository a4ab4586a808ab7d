package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/netproxy"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

// testLanes are the buffer lanes of the publisher, as the daemon configures
// them (advice and alerts never evicted before scores).
func testLanes() []buffer.LaneOptions {
	return []buffer.LaneOptions{
		{Name: record.LaneScore, Priority: 0, Durability: buffer.Batched},
		{Name: record.LaneAlert, Priority: 2},
		{Name: record.LaneAdvice, Priority: 1},
	}
}

func newMemBuffer(t testing.TB) *buffer.Memory {
	t.Helper()
	o := buffer.DefaultOptions()
	o.Lanes = testLanes()
	o.MaxBytes = 2 << 30
	m, err := buffer.NewMemory(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	// Registered up front, so that lag() counts from the start.
	if err := m.RegisterConsumer(DefaultConsumer, record.LaneScore, record.LaneAlert, record.LaneAdvice); err != nil {
		t.Fatal(err)
	}
	return m
}

// testLogger logs to the test when VIGIL_TEST_LOG is set, else nowhere.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("VIGIL_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// testOptions are fast options for tests: short keep-alive and backoff,
// unpaced replay, no health.
func testOptions(broker string) Options {
	o := DefaultOptions()
	o.Broker = broker
	o.Device = "dev1"
	o.ReplayRate = 0
	o.KeepAlive = 2 * time.Second
	o.PingTimeout = time.Second
	o.ConnectTimeout = 2 * time.Second
	o.ReconnectMin = 20 * time.Millisecond
	o.ReconnectMax = 200 * time.Millisecond
	o.HealthInterval = 0
	o.Version = "test"
	return o
}

// startPublisher runs a publisher until the test ends and fails the test if
// Run returns an error.
func startPublisher(t testing.TB, buf Log, opts Options) *Publisher {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	p, err := New(buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "Run", p.Run)
	return p
}

var testEpoch = time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)

// alertJSON is the stored form of alert n of stream.
func alertJSON(stream string, n int) []byte {
	ts := testEpoch.Add(time.Duration(n) * time.Second)
	a := record.Alert{
		ID: fmt.Sprintf("a-%s-%06d", stream, n), TS: ts, Device: "dev1", Stream: stream, Kind: "sensor",
		Score: 2, Threshold: 1, Severity: record.SeverityMajor, Episode: "e", State: "open",
		Window: record.Window{Start: ts.Add(-time.Second), End: ts}, TopFeatures: []record.Feature{{Name: "rpm", Share: 1}},
		Model: "m@1",
	}
	b, _ := json.Marshal(a)
	return b
}

func scoreJSON(stream string, n int) []byte {
	ts := testEpoch.Add(time.Duration(n) * time.Millisecond)
	b, _ := json.Marshal(record.Score{ID: fmt.Sprintf("s-%s-%07d", stream, n), TS: ts, Stream: stream, Score: 0.1, Threshold: 1, Model: "m@1"})
	return b
}

func adviceJSON(alertID string) []byte {
	b, _ := json.Marshal(record.Advice{ID: "v-" + alertID, TS: testEpoch, AlertID: alertID, Device: "dev1", Stream: "pump",
		Severity: record.SeverityMajor, WorkflowRunID: "run-1", Status: "succeeded", Outputs: map[string]any{"text": "check the pump"}})
	return b
}

// appendN appends n records made by mk(i), i from first on, in batches.
func appendN(t testing.TB, buf buffer.Buffer, lane string, first, n int, mk func(i int) []byte) {
	t.Helper()
	const batch = 4096
	for i := 0; i < n; i += batch {
		var data [][]byte
		for j := i; j < min(n, i+batch); j++ {
			data = append(data, mk(first+j))
		}
		if _, err := buf.Append(context.Background(), lane, data...); err != nil {
			t.Fatalf("append to %s: %v", lane, err)
		}
	}
}

// wire is a message as received by a test subscriber, decoded.
type wire struct {
	Topic    string
	Seq      uint64 `json:"seq"`
	ID       string `json:"id"`
	Stream   string `json:"stream"`
	Replayed bool   `json:"replayed"`
	TS       time.Time
	Raw      []byte
}

func decodeWire(topic string, payload []byte) (wire, error) {
	var w wire
	if err := json.Unmarshal(payload, &w); err != nil {
		return w, fmt.Errorf("decode %s %q: %w", topic, payload, err)
	}
	w.Topic, w.Raw = topic, payload
	if w.ID == "" {
		return w, errors.New("message without id on " + topic)
	}
	return w, nil
}

// startConnected is startPublisher, then a wait for the connection.
func startConnected(t testing.TB, buf Log, opts Options) *Publisher {
	t.Helper()
	p := startPublisher(t, buf, opts)
	testkit.WaitFor(t, 10*time.Second, "connected", p.Connected)
	return p
}

// startBehindProxy starts a broker and a proxy to it (closed at the end
// of the test), for the tests that cut the publisher's link, and returns
// them with the test options of a publisher that connects through the
// proxy.
func startBehindProxy(t testing.TB) (*mqtttest.Broker, *netproxy.Proxy, Options) {
	t.Helper()
	b := mqtttest.Start(t, mqtttest.Options{})
	proxy := newProxy(t, b.Addr())
	return b, proxy, testOptions("tcp://" + proxy.Addr())
}

// newProxy returns a proxy to addr, closed at the end of the test.
func newProxy(t testing.TB, addr string) *netproxy.Proxy {
	t.Helper()
	proxy, err := netproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	return proxy
}
