package watch

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/natstest"
)

// TestWatchThroughCluster runs the watcher against a real three-node NATS
// cluster given as a list of nodes: it sees what devices publish on other
// nodes, and when the node it is on is killed it moves to the next one,
// subscribes again and goes on showing the fleet.
func TestWatchThroughCluster(t *testing.T) {
	c := natstest.Start(t, 3)
	dev := mqtttest.ConnectWith(t, c.Node(2).ClientOptions("device"))
	var out testkit.Buffer
	opts := DefaultOptions()
	opts.Broker, opts.JSON, opts.Out = strings.Join(c.URLs(), ","), true, &out
	defer func() {
		if t.Failed() {
			t.Log(c.Logs())
		}
	}()
	runWatch(t, opts)
	mqtttest.WaitFor(t, 30*time.Second, "the watcher on node 1", func() bool { return c.Node(0).Proxy().Conns() > 0 })

	seen := func(s string) func() bool { return func() bool { return strings.Contains(out.String(), s) } }
	// Subscriptions propagate through the cluster: publish until one lands.
	mqtttest.WaitFor(t, 30*time.Second, "an alert published on node 3", func() bool {
		mqtttest.Publish(t, dev, "vigil/pump-7/alerts/pump", 1, false, []byte(alert1))
		return seen(`"a-1"`)()
	})
	c.Node(0).Kill()
	c.WaitReady(60 * time.Second)
	mqtttest.WaitFor(t, 60*time.Second, "an alert after the watcher's node died", func() bool {
		mqtttest.Publish(t, dev, "vigil/pump-7/alerts/pump", 1, false, []byte(alert2))
		return seen(`"a-2"`)()
	})
	if c.Node(1).Proxy().Conns()+c.Node(2).Proxy().Conns() == 0 {
		t.Errorf("the watcher is on no node's proxy after the failover")
	}
}
