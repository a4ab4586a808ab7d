package publish

import (
	"fmt"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/record"
)

// TestSharedSubscriptionConsumers shows how a fleet's alert consumers scale
// out: two consumers in one shared subscription group
// ($share/<group>/vigil/+/alerts/#, on a broker that has them — mosquitto
// here) split the alerts between them, each alert going to exactly one.
func TestSharedSubscriptionConsumers(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	const filter = "$share/fleet/vigil/+/alerts/#"
	c1 := mqtttest.Subscribe(t, b, filter, 1)
	c2 := mqtttest.Subscribe(t, b, filter, 1)
	buf := newMemBuffer(t)
	startPublisher(t, buf, testOptions(b.URL()))
	const n = 200
	appendN(t, buf, record.LaneAlert, 0, n, func(i int) []byte { return alertJSON("pump", i) })
	testkit.WaitFor(t, 30*time.Second, "every alert at one of the consumers", func() bool { return c1.Len()+c2.Len() >= n })

	seen := map[string]int{}
	for _, sub := range []*mqtttest.Subscriber{c1, c2} {
		if sub.Len() == 0 {
			t.Errorf("a consumer of the group got no alert: the work is not shared")
		}
		for _, m := range sub.Messages() {
			w, err := decodeWire(m.Topic, m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			seen[w.ID]++
		}
	}
	for i := range n {
		if id := fmt.Sprintf("a-pump-%06d", i); seen[id] != 1 {
			t.Errorf("alert %s reached the group %d times; want once", id, seen[id])
		}
	}
	t.Logf("consumer 1 took %d alerts, consumer 2 took %d", c1.Len(), c2.Len())
}
