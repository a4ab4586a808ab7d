package fleet

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
)

// refusingBroker is a mosquitto whose dynamic security refuses every
// subscription of user "ops" (SUBACK 0x80, as a NATS node does while
// JetStream elects its leaders) and lets anonymous clients do anything.
// allow makes it take subscriptions from then on, without disconnecting
// anyone.
func refusingBroker(t *testing.T) (b *mqtttest.Broker, ops paho.Client, allow func()) {
	t.Helper()
	b = mqtttest.Start(t, mqtttest.Options{DynamicSecurity: true, ExtraConfig: "log_type debug"}) // debug: the SUBACKs
	allow = b.RefuseSubscriptions("ops", "ops-pw", "#")
	o := b.ClientOptions("fleet-ops")
	o.SetUsername("ops").SetPassword("ops-pw")
	ops = mqtttest.ConnectWith(t, o)
	return b, ops, allow
}

// answerStatus answers every deploy-model status op on topic with an
// outcome, as a device does (anonymous: allowed).
func answerStatus(t *testing.T, b *mqtttest.Broker, topic string) {
	t.Helper()
	dev := mqtttest.Connect(t, b)
	tok := dev.Subscribe(topic, 1, func(c paho.Client, msg paho.Message) {
		var d Deploy
		if json.Unmarshal(msg.Payload(), &d) != nil || d.Op != OpStatus {
			return
		}
		rep, _ := json.Marshal(Reply{ID: d.ID, OK: true, Message: d.Name + "@" + d.Version + ": outcome: serving"})
		c.Publish(topic+"/reply", 1, false, rep) // not waited for: a handler must not block
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device subscribe: %v", tok.Error())
	}
}

// TestSenderRefusedSubscription: a reply subscription the broker keeps
// refusing fails within Timeout with an error that says so, instead of
// waiting for replies that cannot come.
func TestSenderRefusedSubscription(t *testing.T) {
	b, ops, _ := refusingBroker(t)
	const topic = "vigil/dev1/cmd/deploy-model"
	answerStatus(t, b, topic)
	s := &Sender{Client: ops, Topic: topic, Timeout: 2 * time.Second}
	start := time.Now()
	_, err := s.Outcome(context.Background(), "m", "1")
	if err == nil || !strings.Contains(err.Error(), "refused it (SUBACK code 0x80)") {
		t.Fatalf("Outcome: %v, want a refused subscription", err)
	}
	if d := time.Since(start); d > s.Timeout+time.Second {
		t.Fatalf("Outcome failed after %v, want within Timeout %v", d, s.Timeout)
	}
}

// TestSenderSubscriptionAllowedWhileRetrying: a broker that refuses the
// reply subscription at first and takes it a moment later (a cluster done
// electing) costs a retry, not the deploy.
func TestSenderSubscriptionAllowedWhileRetrying(t *testing.T) {
	b, ops, allow := refusingBroker(t)
	const topic = "vigil/dev1/cmd/deploy-model"
	answerStatus(t, b, topic)
	s := &Sender{Client: ops, Topic: topic, Timeout: 10 * time.Second}
	res := make(chan error, 1)
	var outcome string
	go func() {
		var err error
		outcome, err = s.Outcome(context.Background(), "m", "1")
		res <- err
	}()
	// Let a subscription be refused first: the broker's log says so.
	mqtttest.WaitFor(t, 10*time.Second, "a refused subscription", func() bool {
		return strings.Contains(b.Logs(), "Sending SUBACK to fleet-ops")
	})
	allow()
	select {
	case err := <-res:
		if err != nil || outcome != "serving" {
			t.Fatalf("Outcome: %q, %v; want serving", outcome, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Outcome did not return")
	}
}
