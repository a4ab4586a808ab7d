package source

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/natstest"
)

// TestMQTTClusterFailover subscribes through a real three-node NATS
// cluster with a persistent QoS 1 session, kills the node the source is
// on while samples are published on another node, and checks that every
// sample published is received (QoS 1 may deliver one twice) or counted
// as dropped: nothing is lost silently across the failover.
func TestMQTTClusterFailover(t *testing.T) {
	c := natstest.Start(t, 3)
	m, sink, counter := newTestMQTT(t, func(o *MQTTOptions) {
		o.Broker, o.Brokers = "", c.URLs()
		o.QoS, o.CleanSession, o.Topics = 1, false, []string{"plant/#"}
		o.ConnectTimeout, o.KeepAlive = 3*time.Second, 2*time.Second
	})
	runMQTT(t, m)
	mqtttest.WaitFor(t, 60*time.Second, "the source on node 1", func() bool {
		b, _ := m.Broker()
		return m.Connected() && b == c.Node(0).URL()
	})

	pub := mqtttest.ConnectWith(t, paho.NewClientOptions().AddBroker(c.Node(2).DirectURL()).SetClientID("sensor").
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200*time.Millisecond))
	const total = 300
	ts := time.UnixMilli(1718000000000)
	publish := func(i int) {
		payload := fmt.Appendf(nil, `{"ts":%d,"a1":%d,"a2":0,"cur":0,"pres":0,"temp":0,"thermo":0,"volt":0,"flow":0}`, ts.Add(time.Duration(i)*time.Millisecond).UnixMilli(), i)
		for { // QoS 1 at the publisher too: retry until the cluster takes it
			tok := pub.Publish("plant/p1/pump", 1, false, payload)
			if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				return
			}
		}
	}
	for i := range total / 3 {
		publish(i)
	}
	c.Node(0).Kill()
	for i := total / 3; i < total; i++ {
		publish(i)
	}
	mqtttest.WaitFor(t, 90*time.Second, "the source failed over to another node", func() bool {
		b, n := m.Broker()
		return m.Connected() && b != c.Node(0).URL() && n >= 1
	})
	got := func() map[int]int {
		n := map[int]int{}
		for _, in := range sink.Inputs() {
			n[int(in.Values[0])]++
		}
		return n
	}
	mqtttest.WaitFor(t, 60*time.Second, fmt.Sprintf("all %d samples received or counted", total), func() bool {
		return len(got())+int(counter.Total()) >= total
	})
	n := got()
	for i := range total {
		if n[i] == 0 && counter.Total() == 0 {
			t.Errorf("sample %d lost silently", i)
		}
	}
	dups := 0
	for _, k := range n {
		dups += k - 1
	}
	t.Logf("%d samples published, %d received (%d twice), %d counted as dropped", total, len(n), dups, counter.Total())
}
