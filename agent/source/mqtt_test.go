package source

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

func TestTopicMatches(t *testing.T) {
	for _, tt := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a/x/c", true},
		{"a/+/c", "a//c", true},
		{"+", "a", true},
		{"+", "a/b", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"a/#", "b/a", false},
		{"#", "a/b", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/+/#", "a/b", true},
	} {
		if got := topicMatches(tt.filter, tt.topic); got != tt.want {
			t.Errorf("topicMatches(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
	for _, bad := range []string{"", "a/#/b", "a/b#", "a+/b"} {
		if validFilter(bad) == nil {
			t.Errorf("validFilter(%q) = nil", bad)
		}
	}
}

func newTestMQTT(t *testing.T, edit func(*MQTTOptions)) (*MQTT, *fakeSink, *fakeCounter) {
	t.Helper()
	sink, counter := &fakeSink{}, &fakeCounter{}
	o := DefaultMQTTOptions()
	o.Device, o.Topics, o.Counter = "dev1", []string{"plant/#"}, counter
	o.Payload = pumpPayloadOptions()
	o.ConnectRetryInterval, o.MaxReconnectInterval = 200*time.Millisecond, 500*time.Millisecond
	if edit != nil {
		edit(&o)
	}
	m, err := NewMQTT(o, sink)
	if err != nil {
		t.Fatal(err)
	}
	return m, sink, counter
}

// TestMQTTHandle runs the message handler without a broker.
func TestMQTTHandle(t *testing.T) {
	m, sink, counter := newTestMQTT(t, func(o *MQTTOptions) {
		o.StreamMap = map[string]string{"plant/a/pump": "pumpA", "plant/+/special": "special", "plant/b/#": "bee"}
		o.Clock = newFakeClock()
	})
	if m.ClientID() != "vigil-dev1-src-mqtt" {
		t.Errorf("client id %q", m.ClientID())
	}
	for _, tt := range []struct{ topic, stream string }{
		{"plant/a/pump", "pumpA"},
		{"plant/z/special", "special"},
		{"plant/b/c/d", "bee"},
		{"plant/x/pump7", "pump7"},
	} {
		m.handle(tt.topic, []byte(benchPayload), false)
		ins := sink.Inputs()
		in := ins[len(ins)-1]
		if in.Stream != tt.stream || in.Source != "mqtt" || !slices.Equal(in.Channels, pumpChannels) || in.Values[7] != 32 ||
			!in.Time.Equal(time.UnixMilli(1718000000123)) {
			t.Errorf("%s: input %+v, want stream %s", tt.topic, in, tt.stream)
		}
	}
	// Without a time field the receive time is used.
	m.handle("plant/x/y", []byte(`{"a1":1,"a2":1,"cur":1,"pres":1,"temp":1,"thermo":1,"volt":1,"flow":1}`), false)
	if in := sink.Inputs()[4]; !in.Time.Equal(m.opts.Clock.Now()) {
		t.Errorf("time %v, want receive time", in.Time)
	}
	for _, p := range []string{`not json`, `{"ts":1}`, `{"a1":NaN,"a2":1,"cur":1,"pres":1,"temp":1,"thermo":1,"volt":1,"flow":1}`, `{"a1":"x"}`} {
		m.handle("plant/x/y", []byte(p), false)
	}
	if counter.Get(DropInvalid) != 2 || counter.Get(DropMissing) != 1 || counter.Get(DropNonFinite) != 1 || sink.Len() != 5 {
		t.Errorf("drops %v, %d inputs", counter.n, sink.Len())
	}
	sink.capacity = 5
	m.handle("plant/x/y", []byte(benchPayload), false)
	if counter.Get(DropQueueFull) != 1 {
		t.Errorf("drops %v, want a queue_full", counter.n)
	}
}

func TestMQTTHandleEvents(t *testing.T) {
	m, sink, counter := newTestMQTT(t, func(o *MQTTOptions) {
		o.Payload = PayloadOptions{Events: true, StreamField: "kiosk_id"}
	})
	m.handle("kiosk/events", []byte(`[`+ev1+`,{"event_id":"e2","event_name":"x","user_id":"u"},{"event_name":"x"}]`), false)
	m.handle("kiosk/events", []byte(ev1), false) // a QoS 1 redelivery
	m.handle("kiosk/events", []byte(`nope`), false)
	ins := sink.Inputs()
	if len(ins) != 2 || ins[0].Stream != "kiosk-3" || ins[1].Stream != "events" || ins[0].Event.ID != "e1" {
		t.Fatalf("inputs %+v", ins)
	}
	if counter.Get(DropDuplicate) != 1 || counter.Get(DropMissing) != 1 || counter.Get(DropInvalid) != 1 {
		t.Fatalf("drops %v", counter.n)
	}
}

func TestMQTTOptionsErrors(t *testing.T) {
	for _, tt := range []struct {
		edit func(*MQTTOptions)
		want string
	}{
		{func(o *MQTTOptions) { o.Device = "" }, "Device"},
		{func(o *MQTTOptions) { o.Device = "a/b" }, "Device"},
		{func(o *MQTTOptions) { o.Broker = "127.0.0.1:1883" }, "Broker"},
		{func(o *MQTTOptions) { o.Broker = "http://127.0.0.1:1883" }, "Broker"},
		{func(o *MQTTOptions) { o.Topics = nil }, "Topics"},
		{func(o *MQTTOptions) { o.Topics = []string{"a/#/b"} }, "Topics[0]"},
		{func(o *MQTTOptions) { o.QoS = 3 }, "QoS"},
		{func(o *MQTTOptions) { o.StreamMap = map[string]string{"a/+": ""} }, `StreamMap["a/+"]`},
		{func(o *MQTTOptions) { o.Payload = PayloadOptions{} }, "Payload.Fields"},
		{func(o *MQTTOptions) { o.KeepAlive = 0 }, "KeepAlive"},
	} {
		o := DefaultMQTTOptions()
		o.Device, o.Topics, o.Payload = "d", []string{"t"}, pumpPayloadOptions()
		tt.edit(&o)
		if _, err := NewMQTT(o, &fakeSink{}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("error %v, want one naming %s", err, tt.want)
		}
	}
}

// runMQTT starts m and returns a function that stops it and checks it
// returned nil.
func runMQTT(t *testing.T, m *MQTT) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wait := runAsync(func() error { return m.Run(ctx) })
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := wait(t); err != nil {
			t.Errorf("Run = %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestMQTTIntegration runs the source against a real mosquitto: field
// mapping, routing by topic and by field, bad payloads counted, and
// recovery from a broker outage.
func TestMQTTIntegration(t *testing.T) {
	t.Parallel()
	b := mqtttest.Start(t, mqtttest.Options{})
	m, sink, counter := newTestMQTT(t, func(o *MQTTOptions) {
		o.Broker, o.QoS = b.URL(), 1
		o.Topics = []string{"plant/+/pump", "bus/#"}
		o.StreamMap = map[string]string{"plant/a/pump": "pumpA"}
	})
	byField, fsink, _ := newTestMQTT(t, func(o *MQTTOptions) {
		o.Name, o.Broker, o.Topics = "byfield", b.URL(), []string{"fleet/#"}
		o.Payload.StreamField = "dev"
	})
	runMQTT(t, m)
	runMQTT(t, byField)
	testkit.WaitFor(t, 10*time.Second, "the sources to subscribe", func() bool { return m.Connected() && byField.Connected() })

	pub := mqtttest.Connect(t, b)
	mqtttest.Publish(t, pub, "plant/a/pump", 1, false, []byte(benchPayload))
	mqtttest.Publish(t, pub, "plant/b/pump", 1, false, []byte(benchPayload))
	mqtttest.Publish(t, pub, "bus/x/y/p9", 0, false, []byte(benchPayload))
	mqtttest.Publish(t, pub, "plant/a/pump", 1, false, []byte(`{"ts":1,"a1":Infinity}`))
	mqtttest.Publish(t, pub, "plant/a/pump", 1, false, []byte(`garbage`))
	mqtttest.Publish(t, pub, "plant/a/other", 1, false, []byte(benchPayload)) // not subscribed
	mqtttest.Publish(t, pub, "fleet/1", 1, false, []byte(`{"dev":"pump-42",`+benchPayload[1:]))
	mqtttest.Publish(t, pub, "fleet/2", 1, false, []byte(benchPayload)) // no dev field

	testkit.WaitFor(t, 10*time.Second, "3 inputs and 2 drops", func() bool { return sink.Len() == 3 && counter.Total() == 2 })
	testkit.WaitFor(t, 10*time.Second, "the by-field input", func() bool { return fsink.Len() == 1 })
	var streams []string
	for _, in := range sink.Inputs() {
		streams = append(streams, in.Stream)
		if in.Values[0] != 0.0265878 || !in.Time.Equal(time.UnixMilli(1718000000123)) {
			t.Errorf("input %+v", in)
		}
	}
	slices.Sort(streams)
	if !slices.Equal(streams, []string{"p9", "pump", "pumpA"}) {
		t.Errorf("streams %q", streams)
	}
	if counter.Get(DropNonFinite) != 1 || counter.Get(DropInvalid) != 1 {
		t.Errorf("drops %v", counter.n)
	}
	if in := fsink.Inputs()[0]; in.Stream != "pump-42" {
		t.Errorf("by field: stream %q", in.Stream)
	}
	if byField.opts.Counter.(*fakeCounter).Get(DropMissing) != 1 {
		testkit.WaitFor(t, 5*time.Second, "the missing dev field drop", func() bool {
			return byField.opts.Counter.(*fakeCounter).Get(DropMissing) == 1
		})
	}

	// Outage: the broker goes away and comes back on the same port; the
	// source reconnects and subscribes again by itself.
	b.Stop()
	testkit.WaitFor(t, 10*time.Second, "the source to notice", func() bool { return !m.Connected() })
	b.Start()
	testkit.WaitFor(t, 15*time.Second, "the source to resubscribe", m.Connected)
	pub2 := mqtttest.Connect(t, b)
	mqtttest.Publish(t, pub2, "plant/c/pump", 1, false, []byte(benchPayload))
	testkit.WaitFor(t, 10*time.Second, "the input after the outage", func() bool { return sink.Len() == 4 })
}

// TestMQTTPersistentSession checks the documented CleanSession false
// behaviour: with QoS 1 the broker keeps what was published while the
// source was away.
func TestMQTTPersistentSession(t *testing.T) {
	t.Parallel()
	b := mqtttest.Start(t, mqtttest.Options{})
	edit := func(o *MQTTOptions) {
		o.Broker, o.QoS, o.CleanSession, o.Topics = b.URL(), 1, false, []string{"plant/#"}
	}
	m, sink, _ := newTestMQTT(t, edit)
	stop := runMQTT(t, m)
	testkit.WaitFor(t, 10*time.Second, "the source to subscribe", m.Connected)
	stop()

	pub := mqtttest.Connect(t, b)
	for i := range 3 {
		mqtttest.Publish(t, pub, fmt.Sprintf("plant/p/%d", i), 1, false, []byte(benchPayload))
	}
	m2, _, _ := newTestMQTT(t, edit)
	m2.sink = sink // same sink, new run of the same client id
	runMQTT(t, m2)
	testkit.WaitFor(t, 10*time.Second, "the queued messages", func() bool { return sink.Len() == 3 })
}

func TestMQTTTLSAndPassword(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		opts mqtttest.Options
	}{
		{"tls client cert", mqtttest.Options{RequireClientCert: true}},
		{"password", mqtttest.Options{Users: map[string]string{"vigil": "pw"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := mqtttest.Start(t, tt.opts)
			m, sink, _ := newTestMQTT(t, func(o *MQTTOptions) {
				o.Broker, o.TLS = b.URL(), b.TLSConfig()
				o.Username, o.Password = b.Credentials()
			})
			runMQTT(t, m)
			testkit.WaitFor(t, 10*time.Second, "the source to subscribe", m.Connected)
			mqtttest.Publish(t, mqtttest.Connect(t, b), "plant/x", 1, false, []byte(benchPayload))
			testkit.WaitFor(t, 10*time.Second, "the input", func() bool { return sink.Len() == 1 })
		})
	}
}

// TestMQTTBrokerAbsent checks that Run keeps trying while no broker
// listens, and still stops cleanly.
func TestMQTTBrokerAbsent(t *testing.T) {
	m, _, _ := newTestMQTT(t, func(o *MQTTOptions) { o.Broker = "tcp://127.0.0.1:1" })
	stop := runMQTT(t, m)
	if m.Connected() {
		t.Fatal("connected to nothing")
	}
	stop()
}

// BenchmarkMQTTHandle measures the message handler's work per message
// (decode, route, hand over), without the network.
func BenchmarkMQTTHandle(b *testing.B) {
	sink := &discardSink{}
	o := DefaultMQTTOptions()
	o.Device, o.Topics, o.Payload = "d", []string{"plant/#"}, pumpPayloadOptions()
	m, err := NewMQTT(o, sink)
	if err != nil {
		b.Fatal(err)
	}
	p := []byte(benchPayload)
	b.ReportAllocs()
	for b.Loop() {
		m.handle("plant/p1/pump", p, false)
	}
	if sink.n == 0 {
		b.Fatal("nothing handed over")
	}
}

type discardSink struct{ n int }

func (s *discardSink) Put(context.Context, Input) error { s.n++; return nil }
func (s *discardSink) TryPut(Input) bool                { s.n++; return true }

// countSink counts inputs and signals when a target is reached.
type countSink struct {
	n      atomic.Int64
	target atomic.Int64
	done   chan struct{}
}

func (s *countSink) Put(context.Context, Input) error { s.TryPut(Input{}); return nil }
func (s *countSink) TryPut(Input) bool {
	if s.n.Add(1) == s.target.Load() {
		s.done <- struct{}{}
	}
	return true
}

// BenchmarkMQTTThroughput pushes the pump payload through a real mosquitto
// into the source, in batches of 1000 QoS 0 messages, and reports the
// messages per second and this process's CPU time per message (the
// publisher's included, mosquitto's not).
func BenchmarkMQTTThroughput(b *testing.B) {
	broker := mqtttest.Start(b, mqtttest.Options{ExtraConfig: "max_queued_messages 0\nmax_inflight_messages 0"})
	sink := &countSink{done: make(chan struct{}, 1)}
	o := DefaultMQTTOptions()
	o.Device, o.Broker, o.Topics, o.Payload = "bench", broker.URL(), []string{"plant/#"}, pumpPayloadOptions()
	m, err := NewMQTT(o, sink)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wait := runAsync(func() error { return m.Run(ctx) })
	defer func() { cancel(); wait(b) }()
	testkit.WaitFor(b, 10*time.Second, "the source to subscribe", m.Connected)
	pub := mqtttest.Connect(b, broker)
	p := []byte(benchPayload)
	const batch = 1000

	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	sent := int64(0)
	for b.Loop() {
		sent += batch
		sink.target.Store(sent)
		var tok paho.Token
		for range batch {
			tok = pub.Publish("plant/p1/pump", 0, false, p)
		}
		if !tok.WaitTimeout(10 * time.Second) {
			b.Fatal("publish timed out")
		}
		select {
		case <-sink.done:
		case <-time.After(10 * time.Second):
			b.Fatalf("received %d of %d", sink.n.Load(), sent)
		}
	}
	elapsed := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(sent), "cpu-µs/msg")
}

// Retained messages, which the broker delivers again at every
// subscription, are ignored by default (counted as retained); with
// Retained take, a retained sample is taken once, with its own time, and
// one without a time field is not taken.
func TestMQTTRetainedMessages(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	pub := mqtttest.Connect(t, b)
	mqtttest.Publish(t, pub, "plant/p1/pump", 1, true, []byte(benchPayload)) // ts 1718000000123
	mqtttest.Publish(t, pub, "plant/p2/pump", 1, true, []byte(`{"a1":1,"a2":1,"cur":1,"pres":1,"temp":1,"thermo":1,"volt":1,"flow":1}`))
	live := []byte(strings.Replace(benchPayload, "1718000000123", "1718000001000", 1))
	for _, tt := range []struct {
		policy       string
		wantTaken    int // retained samples taken over two connections
		wantRetained int // retained messages dropped over two connections
	}{
		{"", 0, 4},
		{RetainedTake, 1, 3},
	} {
		t.Run("retained="+tt.policy, func(t *testing.T) {
			m, sink, counter := newTestMQTT(t, func(o *MQTTOptions) {
				o.Name, o.Broker, o.QoS, o.Retained = "ret"+tt.policy, b.URL(), 1, tt.policy
				o.Topics = []string{"plant/+/pump"}
			})
			for conn := 1; conn <= 2; conn++ {
				stop := runMQTT(t, m)
				mqtttest.WaitFor(t, 10*time.Second, "the source to subscribe", m.Connected)
				// A live message after the retained ones: once it is in,
				// the retained ones were handled (paho keeps the order).
				mqtttest.Publish(t, pub, "plant/p3/pump", 1, false, live)
				testkit.WaitFor(t, 10*time.Second, "the live message", func() bool {
					n := 0
					for _, in := range sink.Inputs() {
						if in.Time.Equal(time.UnixMilli(1718000001000)) {
							n++
						}
					}
					return n == conn
				})
				stop()
			}
			taken := 0
			for _, in := range sink.Inputs() {
				if !in.Time.Equal(time.UnixMilli(1718000001000)) {
					taken++
					if want := time.UnixMilli(1718000000123); !in.Time.Equal(want) {
						t.Errorf("retained sample taken with time %v, want its own %v", in.Time, want)
					}
				}
			}
			if taken != tt.wantTaken || counter.Get(DropRetained) != tt.wantRetained {
				t.Errorf("retained samples taken %d, dropped as retained %d; want %d and %d", taken, counter.Get(DropRetained), tt.wantTaken, tt.wantRetained)
			}
		})
	}
}

// A sample stamped further ahead of the clock than MaxFuture is dropped as
// future: taken, it would make every later sample of its stream late.
func TestMQTTSampleFromTheFuture(t *testing.T) {
	clock := testkit.NewFakeClock(time.UnixMilli(1718000000123).Add(-time.Minute))
	m, sink, counter := newTestMQTT(t, func(o *MQTTOptions) { o.Clock = clock })
	future := strings.Replace(benchPayload, "1718000000123", "32503680000000", 1) // year 3000
	m.handle("plant/p1/pump", []byte(future), false)
	m.handle("plant/p1/pump", []byte(benchPayload), false) // a minute ahead: a clock off a little
	if sink.Len() != 1 || counter.Get(DropFuture) != 1 {
		t.Fatalf("%d inputs, %d dropped as future; want 1 and 1", sink.Len(), counter.Get(DropFuture))
	}
}

// FuzzMQTTRoute fuzzes the routing of a topic to a stream: a topic goes to
// the stream_map entry whose filter matches it, else to the source's only
// stream, else to the stream named by its last level; routing agrees with
// topicMatches and never panics.
func FuzzMQTTRoute(f *testing.F) {
	for _, s := range [][2]string{
		{"plant/pump1/telemetry", "plant/pump1/telemetry"},
		{"plant/pump1/telemetry", "plant/+/telemetry"},
		{"plant/pump1/telemetry", "plant/#"},
		{"plant/pump1", "plant/pump1/#"},
		{"$SYS/broker", "#"},
		{"a//b", "a/+/b"},
		{"plant/", "plant/+"},
		{"x", "+"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, topic, filter string) {
		if validFilter(filter) != nil || topic == "" || strings.ContainsAny(topic, "+#") {
			return
		}
		for _, only := range []string{"", "only"} {
			m, _, _ := newTestMQTT(t, func(o *MQTTOptions) {
				o.StreamMap = map[string]string{filter: "mapped"}
				o.Stream = only
			})
			got := m.route(topic)
			last := topic[strings.LastIndexByte(topic, '/')+1:]
			want := last
			switch {
			case topicMatches(filter, topic):
				want = "mapped"
			case only != "":
				want = only
			}
			if got != want {
				t.Fatalf("route(%q) with stream_map {%q: mapped}, stream %q = %q, want %q", topic, filter, only, got, want)
			}
		}
	})
}
