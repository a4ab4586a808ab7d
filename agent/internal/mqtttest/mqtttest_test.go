package mqtttest

import (
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func TestPublishSubscribe(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{})
	if !strings.HasPrefix(b.URL(), "tcp://127.0.0.1:") {
		t.Fatalf("URL = %q", b.URL())
	}
	sub := Subscribe(t, b, "a/+/c", 1)
	c := Connect(t, b)
	Publish(t, c, "a/b/c", 1, false, []byte("one"))
	Publish(t, c, "a/x/y", 1, false, []byte("not matched"))
	Publish(t, c, "a/d/c", 0, false, []byte("two"))
	msgs := sub.WaitN(t, 2, 5*time.Second)
	if string(msgs[0].Payload) != "one" || msgs[0].Topic != "a/b/c" || string(msgs[1].Payload) != "two" {
		t.Fatalf("messages = %+v", msgs)
	}
}

func TestStopStartSamePortWithPersistence(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{Persistence: true})
	port := b.Port()
	c := Connect(t, b)
	Publish(t, c, "state/x", 1, true, []byte("retained"))
	b.Stop()
	if b.Running() {
		t.Fatal("Running after Stop")
	}
	b.Stop() // idempotent
	b.Start()
	if b.Port() != port || !b.Running() {
		t.Fatalf("port %d → %d, running %v", port, b.Port(), b.Running())
	}
	sub := Subscribe(t, b, "state/#", 1)
	msgs := sub.WaitN(t, 1, 5*time.Second)
	if string(msgs[0].Payload) != "retained" || !msgs[0].Retained {
		t.Fatalf("after restart got %+v, want the retained message", msgs[0])
	}
	// The first client reconnects by itself.
	WaitFor(t, 10*time.Second, "the client to reconnect", c.IsConnectionOpen)
}

func TestKill(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{})
	b.Kill()
	if b.Running() {
		t.Fatal("Running after Kill")
	}
	b.Start()
	Connect(t, b)
}

func TestTLSClientCert(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{RequireClientCert: true})
	if !strings.HasPrefix(b.URL(), "ssl://") {
		t.Fatalf("URL = %q", b.URL())
	}
	sub := Subscribe(t, b, "t", 0)
	Publish(t, Connect(t, b), "t", 0, false, []byte("x"))
	sub.WaitN(t, 1, 5*time.Second)

	// Without a client certificate the handshake fails.
	cfg, err := b.Certs().ClientTLS(false)
	if err != nil {
		t.Fatal(err)
	}
	o := b.ClientOptions("no-cert").SetTLSConfig(cfg).SetAutoReconnect(false)
	cl := paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
		t.Fatal("connected without a client certificate")
	}
}

func TestUsers(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{Users: map[string]string{"alice": "s3cret", "bob": "hunter2"}})
	if u, p := b.Credentials(); u != "alice" || p != "s3cret" {
		t.Fatalf("Credentials = %q, %q", u, p)
	}
	Connect(t, b)
	o := b.ClientOptions("wrong").SetPassword("nope").SetAutoReconnect(false)
	cl := paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
		t.Fatal("connected with a wrong password")
	}
	anon := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("anon").SetConnectTimeout(5 * time.Second))
	tok = anon.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
		t.Fatal("connected anonymously")
	}
}

func TestExtraConfigAndLogs(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{ExtraConfig: "max_queued_messages 5"})
	Connect(t, b)
	WaitFor(t, 5*time.Second, "a connection in the log", func() bool {
		return strings.Contains(b.Logs(), "New client connected")
	})
}
