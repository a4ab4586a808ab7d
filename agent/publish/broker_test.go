package publish

import (
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
)

func startEmbedded(t *testing.T) *EmbeddedBroker {
	t.Helper()
	eb, err := NewEmbeddedBroker("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "embedded broker Run", eb.Run)
	return eb
}

// collector gathers the messages of a paho subscription.
type collector struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (c *collector) add(_ paho.Client, m paho.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
}

func (c *collector) get() []paho.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]paho.Message(nil), c.msgs...)
}

// subscribe subscribes cl to filter at QoS 1, collecting into c.
func (c *collector) subscribe(t *testing.T, cl paho.Client, filter string) {
	t.Helper()
	if tok := cl.Subscribe(filter, 1, c.add); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
}

func TestEmbeddedBrokerPubSub(t *testing.T) {
	eb := startEmbedded(t)
	sub := newPaho(t, eb.URL())
	var got collector
	got.subscribe(t, sub, "bus/#")
	pub := newPaho(t, eb.URL())
	for _, q := range []byte{0, 1} {
		mqtttest.Publish(t, pub, "bus/sensor/1", q, false, []byte{'0' + q})
	}
	mqtttest.Publish(t, pub, "bus/retained", 1, true, []byte("kept"))
	testkit.WaitFor(t, 5*time.Second, "3 messages", func() bool { return len(got.get()) == 3 })
	for i, want := range []string{"0", "1", "kept"} {
		if m := got.get()[i]; string(m.Payload()) != want {
			t.Errorf("message %d: %q; want %q", i, m.Payload(), want)
		}
	}
	// A late subscriber gets the retained message.
	var late collector
	late2 := newPaho(t, eb.URL())
	late.subscribe(t, late2, "bus/retained")
	testkit.WaitFor(t, 5*time.Second, "the retained message", func() bool { return len(late.get()) == 1 })
}

// TestPublisherOnEmbeddedBroker runs the publisher against the embedded
// broker, as the demo does.
func TestPublisherOnEmbeddedBroker(t *testing.T) {
	eb := startEmbedded(t)
	sub := newPaho(t, eb.URL())
	var got collector
	got.subscribe(t, sub, "vigil/dev1/alerts/#")
	buf := newMemBuffer(t)
	p := startPublisher(t, buf, testOptions(eb.URL()))
	testkit.WaitFor(t, 10*time.Second, "connected", p.Connected)
	appendN(t, buf, record.LaneAlert, 0, 100, func(i int) []byte { return alertJSON("pump", i) })
	testkit.WaitFor(t, 10*time.Second, "100 alerts", func() bool { return len(got.get()) == 100 })
	testkit.WaitFor(t, 5*time.Second, "acknowledged", func() bool { return lag(buf, record.LaneAlert) == 0 })
}

func TestEmbeddedBrokerListenError(t *testing.T) {
	eb := startEmbedded(t)
	if _, err := NewEmbeddedBroker(eb.Addr(), nil); err == nil {
		t.Fatal("a second broker on the same address: want an error")
	}
}
