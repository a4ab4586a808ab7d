package natstest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
)

func connect(t *testing.T, url, id string, clean bool, onMsg paho.MessageHandler) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	if onMsg != nil {
		o.SetDefaultPublishHandler(onMsg)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// TestClusterKeepsSessions is what Vigil relies on in a cluster: a
// persistent session's QoS 1 subscription, made on one node, receives on
// another node what was published while it was away, and survives the node
// it was made on being killed.
func TestClusterKeepsSessions(t *testing.T) {
	c := Start(t, 3)
	var mu sync.Mutex
	got := map[string]bool{}
	onMsg := func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got[string(m.Payload())] = true
		mu.Unlock()
	}
	sub := connect(t, c.Node(0).URL(), "fleet-consumer", false, onMsg)
	if tok := sub.Subscribe("vigil/+/alerts/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	sub.Disconnect(50)
	c.Node(0).Kill()
	c.WaitReady(30 * time.Second) // a new JetStream leader, if n1 was it

	defer func() {
		if t.Failed() {
			t.Log(c.Logs())
		}
	}()
	pub := connect(t, c.Node(1).URL(), "device-1", true, nil)
	for i := range 20 {
		if tok := pub.Publish("vigil/d1/alerts/s", 1, false, fmt.Sprint(i)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	connect(t, c.Node(2).URL(), "fleet-consumer", false, onMsg)
	mqtttest.WaitFor(t, 20*time.Second, "the 20 messages queued for the session on node 3", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 20
	})
	c.Node(0).Start()
	c.WaitReady(30 * time.Second)
}
