package publish

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/natstest"
	"github.com/vigil-edge/vigil/agent/record"
)

// clusterSub is a persistent-session QoS 1 subscriber on one node of a
// cluster, collecting the alerts it receives.
type clusterSub struct {
	mu   sync.Mutex
	got  []wire
	errs []error
}

func (s *clusterSub) add(_ paho.Client, m paho.Message) {
	w, err := decodeWire(m.Topic(), m.Payload())
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs = append(s.errs, err)
		return
	}
	s.got = append(s.got, w)
}

func (s *clusterSub) ids() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := map[string]int{}
	for _, w := range s.got {
		n[w.ID]++
	}
	return n
}

// TestClusterFailover runs the publisher against a real three-node NATS
// cluster (MQTT gateway, clustered JetStream) under a steady load of
// alerts, and breaks the node it is connected to in each way a cluster
// node goes away: killed (then the next one too, which also costs the
// cluster its JetStream quorum, then both back), and partitioned from the
// publisher by a blackholing proxy. The invariants are the chaos suite's:
// no accepted alert lost, duplicates only with the same id, order within
// the lane (live in sequence, the backlog behind it in sequence); and the
// publisher names the broker it uses and counts its failovers.
func TestClusterFailover(t *testing.T) {
	c := natstest.Start(t, 3)
	buf := newMemBuffer(t)

	sub := &clusterSub{}
	so := paho.NewClientOptions().AddBroker(c.Node(2).DirectURL()).SetClientID("fleet-sub").
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetOrderMatters(true).SetDefaultPublishHandler(sub.add).
		SetOnConnectHandler(func(cl paho.Client) {
			go cl.Subscribe("vigil/dev1/alerts/#", 1, nil) // resubscribe on every connection; never block paho
		})
	sc := mqtttest.ConnectWith(t, so)
	if tok := sc.Subscribe("vigil/dev1/alerts/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	o := testOptions("")
	o.Brokers, o.PersistentSession = c.URLs(), true
	o.ConnectTimeout, o.KeepAlive, o.PingTimeout = 3*time.Second, 2*time.Second, time.Second
	p := startPublisher(t, buf, o)

	// The load: alerts appended at about 100/s until the faults are over.
	ctx, stopLoad := context.WithCancel(context.Background())
	var appended int
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if _, err := buf.Append(context.Background(), record.LaneAlert, alertJSON("pump", appended)); err != nil {
					t.Errorf("append: %v", err)
					return
				}
				appended++
			}
		}
	}()
	defer func() { stopLoad(); <-loadDone }()

	broker := func() string { return p.Stats().Broker }
	connectedTo := func(want string) func() bool {
		return func() bool { s := p.Stats(); return s.Connected && s.Broker == want }
	}
	delivered := func(n int) func() bool { return func() bool { return len(sub.ids()) >= n } }

	testkit.WaitFor(t, 60*time.Second, "the publisher on node 1", connectedTo(c.Node(0).URL()))
	testkit.WaitFor(t, 60*time.Second, "alerts flowing", delivered(50))

	type row struct {
		scenario  string
		reconnect time.Duration
	}
	var rows []row
	// 1. Kill the node the publisher is connected to: it fails over to the
	// next one in the list.
	t0 := time.Now()
	c.Node(0).Kill()
	// The next node in the list, or the one after it when the next one
	// still refuses sessions while JetStream elects new leaders.
	testkit.WaitFor(t, 60*time.Second, "a failover to another node", func() bool {
		s := p.Stats()
		return s.Connected && s.Broker != c.Node(0).URL()
	})
	rows = append(rows, row{"kill n1", time.Since(t0)})
	n := len(sub.ids())
	testkit.WaitFor(t, 60*time.Second, "alerts flowing through another node", delivered(n+50))

	// 2. Kill that one too: the last node has no JetStream quorum, so no
	// node takes the session until the others are back; the publisher
	// keeps trying and the buffer keeps the alerts.
	t0 = time.Now()
	c.Node(1).Kill()
	c.Node(0).Start()
	c.Node(1).Start()
	c.WaitReady(90 * time.Second)
	elected := time.Since(t0)
	testkit.WaitFor(t, 90*time.Second, "the publisher back on the cluster", func() bool { return p.Stats().Connected })
	rows = append(rows, row{fmt.Sprintf("kill n2 too, both back (quorum back after %v)", elected.Round(time.Millisecond)), time.Since(t0)})

	// 3. Partition the node in use from the publisher: its proxy stops
	// moving bytes; only the keep-alive can tell, then it fails over.
	cur := broker()
	var part *natstest.Node
	for i := range c.Size() {
		if c.Node(i).URL() == cur {
			part = c.Node(i)
		}
	}
	if part == nil {
		t.Fatalf("the publisher's broker %q is none of the cluster's", cur)
	}
	n = len(sub.ids())
	t0 = time.Now()
	part.Proxy().Blackhole()
	testkit.WaitFor(t, 60*time.Second, "a failover away from the partitioned node", func() bool {
		s := p.Stats()
		return s.Connected && s.Broker != cur
	})
	rows = append(rows, row{"partition " + part.Name(), time.Since(t0)})
	testkit.WaitFor(t, 60*time.Second, "alerts flowing after the partition", delivered(n+50))
	part.Proxy().Restore()

	stopLoad()
	<-loadDone
	testkit.WaitFor(t, 90*time.Second, fmt.Sprintf("all %d accepted alerts at the subscriber", appended), delivered(appended))

	// Invariants.
	ids := sub.ids()
	lost := 0
	for i := range appended {
		if ids[fmt.Sprintf("a-pump-%06d", i)] == 0 {
			lost++
		}
	}
	dups := 0
	for _, k := range ids {
		dups += k - 1
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.errs) > 0 {
		t.Errorf("undecodable messages: %v", sub.errs)
	}
	bySeq := map[uint64]string{}
	var lastLive, lastReplay uint64
	for _, w := range sub.got {
		if id, ok := bySeq[w.Seq]; ok && id != w.ID {
			t.Errorf("seq %d delivered with ids %s and %s: a duplicate with a new id", w.Seq, id, w.ID)
		}
		bySeq[w.Seq] = w.ID
		last := &lastLive
		if w.Replayed {
			last = &lastReplay
		}
		if w.Seq < *last && ids[w.ID] == 1 { // a redelivered duplicate may come late
			t.Errorf("order: seq %d (replayed %v) after %d", w.Seq, w.Replayed, *last)
		}
		*last = max(*last, w.Seq)
	}
	if lost > 0 {
		t.Errorf("%d of %d accepted alerts lost", lost, appended)
	}
	s := p.Stats()
	if s.Failovers < 2 {
		t.Errorf("failovers = %d; want at least 2 (kill, partition)", s.Failovers)
	}
	t.Logf("%d alerts appended, %d delivered, %d duplicates (same id), %d lost, %d failovers", appended, len(ids), dups, lost, s.Failovers)
	for _, r := range rows {
		t.Logf("%-60s reconnected after %v", r.scenario, r.reconnect.Round(time.Millisecond))
	}
}
