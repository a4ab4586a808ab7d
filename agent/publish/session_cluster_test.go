package publish

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/natstest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// nodeStatus connects a clean-session client to nd and returns the
// retained status it gets within wait (QoS 0: no JetStream consumer
// needed), and whether it got one.
func nodeStatus(t *testing.T, nd *natstest.Node, wait time.Duration) (Status, bool) {
	t.Helper()
	got := make(chan []byte, 1)
	o := nd.ClientOptions(fmt.Sprintf("status-probe-%d", time.Now().UnixNano())).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false)
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return Status{}, false
	}
	defer cl.Disconnect(0)
	tok := cl.Subscribe("vigil/dev1/status", 0, func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			select {
			case got <- m.Payload():
			default:
			}
		}
	})
	if !tok.WaitTimeout(5 * time.Second) {
		return Status{}, false
	}
	select {
	case b := <-got:
		var st Status
		return st, json.Unmarshal(b, &st) == nil
	case <-time.After(wait):
		return Status{}, false
	}
}

// TestClusterCommandsAndStatusAfterKill: the node the publisher is on is
// killed, so the publisher connects to another one while JetStream elects
// new leaders, when a NATS node may refuse the QoS 1 command subscription
// and lose the retained status. Whatever the cluster did, the publisher
// ends up subscribed to its commands (it runs one sent through another
// node) and its retained "online" status of the current connection is
// there for a newcomer. (NATS may also end the new connection during the
// election; the test does not require that it stays.)
func TestClusterCommandsAndStatusAfterKill(t *testing.T) {
	c := natstest.Start(t, 3)
	o := testOptions("")
	o.Brokers = c.URLs()
	o.ConnectTimeout, o.KeepAlive, o.PingTimeout = 3*time.Second, 2*time.Second, time.Second
	o.StatusInterval = time.Second
	p := startPublisher(t, newMemBuffer(t), o)
	testkit.WaitFor(t, 60*time.Second, "subscribed on node 1", func() bool {
		s := p.Stats()
		return s.Broker == c.Node(0).URL() && s.CommandsSubscribed
	})

	t0 := time.Now()
	c.Node(0).Kill()
	testkit.WaitFor(t, 60*time.Second, "connected to another node", func() bool {
		s := p.Stats()
		return s.Connected && s.Broker != c.Node(0).URL()
	})
	failedOver := time.Since(t0)
	connects := p.Stats().Connects
	testkit.WaitFor(t, 60*time.Second, "the command subscription on the new node", func() bool { return p.Stats().CommandsSubscribed })
	subscribed := time.Since(t0)

	// Ask through the node the publisher is not on.
	var other *natstest.Node
	for i := 1; i < c.Size(); i++ {
		if c.Node(i).URL() != p.Stats().Broker {
			other = c.Node(i)
		}
	}
	testkit.WaitFor(t, 60*time.Second, "the retained online status of the new connection on "+other.Name(), func() bool {
		st, ok := nodeStatus(t, other, 2*time.Second)
		return ok && st.State == "online" && st.BirthSeq == p.Stats().BirthSeq
	})
	restored := time.Since(t0)

	replies := make(chan Reply, 4)
	cl := paho.NewClient(other.ClientOptions("ops").SetCleanSession(true))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ops connect: %v", tok.Error())
	}
	defer cl.Disconnect(0)
	tok := cl.Subscribe("vigil/dev1/cmd/rebirth/reply", 0, func(_ paho.Client, m paho.Message) {
		var r Reply
		if json.Unmarshal(m.Payload(), &r) == nil {
			replies <- r
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ops subscribe: %v", tok.Error())
	}
	if tok := cl.Publish("vigil/dev1/cmd/rebirth", 1, false, `{"id":"after-kill"}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ops publish: %v", tok.Error())
	}
	select {
	case r := <-replies:
		if r.ID != "after-kill" || !r.OK {
			t.Fatalf("reply %+v", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no reply to a command sent after the failover")
	}
	s := p.Stats()
	t.Logf("failed over after %v, commands subscribed after %v, retained status seen after %v; "+
		"refused or unanswered subscriptions %d, unacknowledged statuses %d, connections %d (%d at the failover)",
		failedOver.Round(time.Millisecond), subscribed.Round(time.Millisecond), restored.Round(time.Millisecond),
		s.CommandSubscribeFailures, s.StatusFailures, s.Connects, connects)
}
