package publish

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// TestCommandSubscriptionRefusedThenAllowed: a broker refuses the command
// subscription (SUBACK 0x80, as a NATS node does while JetStream elects
// its leaders; here mosquitto's dynamic security denies it); the publisher
// stays connected, retries with its backoff, counts the failures and shows
// the subscription missing in its stats; once the broker allows it, the
// publisher subscribes without reconnecting, publishes its status again and
// runs commands.
func TestCommandSubscriptionRefusedThenAllowed(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{DynamicSecurity: true})
	// The test's own clients (anonymous) may do anything; the device may
	// publish on its topics but subscribe to none of them.
	allow := b.RefuseSubscriptions("device", "device-pw", "vigil/dev1/#")
	status := mqtttest.Subscribe(t, b, "vigil/dev1/status", 1)
	var logs testkit.Buffer
	opts := testOptions(b.URL())
	opts.Username, opts.Password = "device", "device-pw"
	opts.StatusInterval = 0 // only the republish after the subscription
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := startConnected(t, newMemBuffer(t), opts)

	testkit.WaitFor(t, 10*time.Second, "two refused command subscriptions", func() bool {
		return p.Stats().CommandSubscribeFailures >= 2
	})
	st := p.Stats()
	if st.CommandsSubscribed || !st.Connected {
		t.Fatalf("stats while refused: subscribed %t connected %t, want false, true", st.CommandsSubscribed, st.Connected)
	}
	if !strings.Contains(logs.String(), "SUBACK code 0x80") {
		t.Fatalf("the log does not say the broker refused the subscription with 0x80:\n%s", logs.String())
	}
	status.WaitN(t, 1, 10*time.Second)
	before := status.Len()

	allow() // disconnects nobody: the point is that nothing reconnects
	testkit.WaitFor(t, 10*time.Second, "the command subscription", func() bool { return p.Stats().CommandsSubscribed })
	// The status comes again once the subscription is in place.
	status.WaitN(t, before+1, 10*time.Second)

	replies := mqtttest.Subscribe(t, b, "vigil/dev1/cmd/rebirth/reply", 1)
	mqtttest.Publish(t, replies.Client, "vigil/dev1/cmd/rebirth", 1, false, []byte(`{"id":"r1"}`))
	var rep Reply
	if err := json.Unmarshal(replies.WaitN(t, 1, 10*time.Second)[0].Payload, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.ID != "r1" || !rep.OK {
		t.Fatalf("reply %+v, want id r1 ok", rep)
	}
	if got := p.Stats().Connects; got != 1 {
		t.Fatalf("%d connections, want 1: the subscription must come back without reconnecting\n%s\n%s", got, logs.String(), b.Logs())
	}
}

// TestRetainedStatusComesBack: a retained status lost by the broker (here
// cleared by another client with an empty retained message) is published
// again within StatusInterval, retained.
func TestRetainedStatusComesBack(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	opts := testOptions(b.URL())
	opts.StatusInterval = 300 * time.Millisecond
	p := startConnected(t, newMemBuffer(t), opts)
	watch := mqtttest.Subscribe(t, b, "vigil/dev1/status", 1)
	watch.WaitN(t, 1, 10*time.Second)

	mqtttest.Publish(t, watch.Client, "vigil/dev1/status", 1, true, nil)
	cleared := time.Now()
	var back time.Time
	testkit.WaitFor(t, 10*time.Second, "an online status after the empty one", func() bool {
		msgs := watch.Messages()
		empty := -1
		for i, m := range msgs {
			if len(m.Payload) == 0 {
				empty = i
			}
		}
		if empty < 0 || empty == len(msgs)-1 {
			return false
		}
		back = msgs[len(msgs)-1].Received
		return true
	})
	// The bound tells the status check's interval from the other ways a
	// status goes out (reconnections, rebirths); it is no latency figure,
	// so it leaves a loaded machine 3 s of slack.
	if d := back.Sub(cleared); d > 2*opts.StatusInterval+3*time.Second {
		t.Fatalf("status back %v after it was cleared, want within about %v", d, opts.StatusInterval)
	}
	// It is retained again: a new subscriber gets it at once.
	late := mqtttest.Subscribe(t, b, "vigil/dev1/status", 1)
	m := late.WaitN(t, 1, 5*time.Second)[0]
	var st Status
	if err := json.Unmarshal(m.Payload, &st); err != nil {
		t.Fatal(err)
	}
	if !m.Retained || st.State != "online" || st.BirthSeq != p.Stats().BirthSeq {
		t.Fatalf("late subscriber got retained=%t %+v, want a retained online status of birth %d", m.Retained, st, p.Stats().BirthSeq)
	}
}

// TestStatusRepublishedWhenNotAcknowledged: a status whose PUBACK does not
// come within WriteTimeout (the link stalls, shorter than the keep-alive
// can tell) is counted and published again; once the link moves again the
// status is in place, on the same connection.
func TestStatusRepublishedWhenNotAcknowledged(t *testing.T) {
	b, proxy, opts := startBehindProxy(t)
	sub := mqtttest.Subscribe(t, b, "vigil/dev1/status", 1)
	opts.KeepAlive, opts.PingTimeout = 30*time.Second, 10*time.Second // the stall must not end the connection
	opts.WriteTimeout = 300 * time.Millisecond
	opts.StatusInterval = 200 * time.Millisecond
	p := startConnected(t, newMemBuffer(t), opts)
	sub.WaitN(t, 1, 10*time.Second)

	proxy.Blackhole()
	testkit.WaitFor(t, 10*time.Second, "a status not acknowledged", func() bool { return p.Stats().StatusFailures >= 1 })
	// Cleared meanwhile by someone else: only a status published after it
	// can put it back.
	mqtttest.Publish(t, sub.Client, "vigil/dev1/status", 1, true, nil)
	// The empty message comes back to sub, which subscribes to the topic,
	// possibly after its PUBACK (paho runs handlers on another goroutine):
	// wait for it, so that the message waited for below is a status
	// published after it and not this one. Nothing else arrives while the
	// link is blackholed.
	testkit.WaitFor(t, 10*time.Second, "the empty status back at the subscriber", func() bool {
		msgs := sub.Messages()
		return len(msgs) > 0 && len(msgs[len(msgs)-1].Payload) == 0
	})
	n := sub.Len()
	proxy.Restore()
	sub.WaitN(t, n+1, 10*time.Second)
	if st := retainedStatus(t, b); st.State != "online" {
		t.Fatalf("retained status %+v, want online", st)
	}
	if s := p.Stats(); s.Connects != 1 || !s.Connected {
		t.Fatalf("connects %d connected %t, want the one connection still up", s.Connects, s.Connected)
	}
}
