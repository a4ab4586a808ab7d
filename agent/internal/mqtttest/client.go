package mqtttest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// ClientOptions returns paho options to connect to b as clientID: the
// broker's URL, its TLS configuration and credentials, short timeouts,
// automatic reconnection (with resubscription left to the caller).
func (b *Broker) ClientOptions(clientID string) *paho.ClientOptions {
	o := paho.NewClientOptions().
		AddBroker(b.URL()).
		SetClientID(clientID).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetKeepAlive(10 * time.Second).
		SetMaxReconnectInterval(time.Second).
		SetAutoReconnect(true)
	if cfg := b.TLSConfig(); cfg != nil {
		o.SetTLSConfig(cfg)
	}
	if u, p := b.Credentials(); u != "" {
		o.SetUsername(u)
		o.SetPassword(p)
	}
	return o
}

var clientSeq atomic.Int64

// Connect returns a client connected to b (client id "mqtttest-<n>"),
// disconnected at cleanup; it fails the test when it cannot connect within
// 10 s.
func Connect(t testing.TB, b *Broker) paho.Client {
	t.Helper()
	return ConnectWith(t, b.ClientOptions(fmt.Sprintf("mqtttest-%d", clientSeq.Add(1))))
}

// ConnectWith connects a client with the given options, disconnected at
// cleanup.
func ConnectWith(t testing.TB, opts *paho.ClientOptions) paho.Client {
	t.Helper()
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("mqtttest: connect timed out")
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("mqtttest: connect: %v", err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// Publish publishes payload on topic and waits (up to 10 s) until it was
// sent (QoS 0) or acknowledged (QoS 1, 2); it fails the test on error.
func Publish(t testing.TB, c paho.Client, topic string, qos byte, retained bool, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("mqtttest: publish to %s timed out", topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("mqtttest: publish to %s: %v", topic, err)
	}
}

// Message is a message a Subscriber received.
type Message struct {
	Topic     string
	Payload   []byte
	QoS       byte
	Retained  bool
	Duplicate bool
	Received  time.Time
}

// Subscriber collects the messages published on a topic filter.
type Subscriber struct {
	Client paho.Client
	filter string

	mu     sync.Mutex
	msgs   []Message
	notify chan struct{}
}

// Subscribe connects a client to b, subscribes it to filter at qos (again
// after every reconnection) and collects what arrives. It is disconnected
// at cleanup.
func Subscribe(t testing.TB, b *Broker, filter string, qos byte) *Subscriber {
	t.Helper()
	s := &Subscriber{filter: filter, notify: make(chan struct{}, 1)}
	opts := b.ClientOptions(fmt.Sprintf("mqtttest-sub-%d", clientSeq.Add(1)))
	ready := make(chan error, 1)
	opts.SetOnConnectHandler(func(c paho.Client) {
		tok := c.Subscribe(filter, qos, s.add)
		var err error
		if !tok.WaitTimeout(10 * time.Second) {
			err = fmt.Errorf("subscribe to %s timed out", filter)
		} else {
			err = tok.Error()
		}
		select {
		case ready <- err:
		default:
		}
	})
	s.Client = ConnectWith(t, opts)
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("mqtttest: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("mqtttest: subscribing to %s timed out", filter)
	}
	return s
}

func (s *Subscriber) add(_ paho.Client, m paho.Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, Message{
		Topic: m.Topic(), Payload: slices.Clone(m.Payload()), QoS: m.Qos(),
		Retained: m.Retained(), Duplicate: m.Duplicate(), Received: time.Now(),
	})
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Messages returns a copy of the messages received so far.
func (s *Subscriber) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// Len returns how many messages were received so far.
func (s *Subscriber) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// Reset forgets the messages received so far.
func (s *Subscriber) Reset() {
	s.mu.Lock()
	s.msgs = nil
	s.mu.Unlock()
}

// WaitN waits until at least n messages were received and returns them
// all; it fails the test after timeout.
func (s *Subscriber) WaitN(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if msgs := s.Messages(); len(msgs) >= n {
			return msgs
		}
		select {
		case <-s.notify:
		case <-timer.C:
			t.Fatalf("mqtttest: got %d messages on %s, want %d within %v", s.Len(), s.filter, n, timeout)
			return nil
		}
	}
}
