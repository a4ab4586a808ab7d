package pipeline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/source"
)

// TestCoarseTimestampsThroughMosquitto feeds a pipeline through the real
// MQTT source and a real mosquitto: 3,000 messages at 1k msg/s in bursts
// stamped in milliseconds, and 600 at 10 Hz stamped in seconds. Nothing
// is dropped, and every sample is windowed.
func TestCoarseTimestampsThroughMosquitto(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	fast := &meanModel{id: "mean@1", length: 10, hop: 5, chans: chans2, thr: 1e9}
	slow := &meanModel{id: "mean@1", length: 4, hop: 1, chans: chans2, thr: 1e9}
	fs, ss := sensorSpec(fast), sensorSpec(slow)
	fs.Name, fs.Source = "fast", "mqtt"
	ss.Name, ss.Source = "slow", "mqtt"
	buf := &memBuffer{}
	p, err := New(Options{Device: "dev-01", Buffer: buf, Streams: []StreamSpec{fs, ss}})
	if err != nil {
		t.Fatal(err)
	}
	o := source.DefaultMQTTOptions()
	o.Device, o.Broker, o.QoS, o.Topics, o.Counter = "dev-01", b.URL(), 1, []string{"plant/#"}, p
	o.Payload = source.PayloadOptions{Fields: map[string]string{"a": "a", "b": "b"}, Channels: chans2, TimeField: "ts", TimeFormat: source.TimeUnixMs}
	o.ConnectRetryInterval = 200 * time.Millisecond
	m, err := source.NewMQTT(o, p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pdone := make(chan error, 1)
	go func() { pdone <- p.Run(context.Background()) }()
	mdone := make(chan error, 1)
	go func() { mdone <- m.Run(ctx) }()
	mqtttest.WaitFor(t, 10*time.Second, "the source to subscribe", m.Connected)

	pub := mqtttest.Connect(t, b)
	r := rand.New(rand.NewPCG(3, 4))
	base := t0.UnixMilli()
	var at float64 // ms since base
	sharedFast, sharedSlow := 0, 0
	var last int64 = -1
	for i := range 3000 {
		at += r.ExpFloat64() // bursts around 1 msg/ms
		ms := base + int64(at)
		if ms == last {
			sharedFast++
		}
		last = ms
		mqtttest.Publish(t, pub, "plant/fast", 1, false, fmt.Appendf(nil, `{"ts":%d,"a":%g,"b":%d}`, ms, r.Float64(), i))
	}
	for i := range 600 {
		ms := base + int64(i/10)*1000
		if i%10 != 0 {
			sharedSlow++
		}
		mqtttest.Publish(t, pub, "plant/slow", 1, false, fmt.Appendf(nil, `{"ts":%d,"a":%g,"b":%d}`, ms, r.Float64(), i))
	}
	if sharedFast < 300 || sharedSlow != 540 {
		t.Fatalf("%d and %d samples share a time with the one before: the test data is too fine", sharedFast, sharedSlow)
	}
	mqtttest.WaitFor(t, 20*time.Second, "every message in the pipeline", func() bool { return p.Stats().Inputs == 3600 })
	cancel()
	if err := <-mdone; err != nil {
		t.Fatal(err)
	}
	p.CloseInput()
	if err := <-pdone; err != nil {
		t.Fatal(err)
	}
	if d := p.Stats().Drops; len(d) > 0 {
		t.Fatalf("drops %+v: want none", d)
	}
	n := map[string]int{}
	for _, s := range buf.scores(t) {
		n[s.Stream]++
	}
	if n["fast"] != (3000-10)/5+1 || n["slow"] != 600-4+1 {
		t.Fatalf("scores %v, want fast %d and slow %d", n, (3000-10)/5+1, 600-4+1)
	}
}
