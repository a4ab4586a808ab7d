package watch

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// TestWatchSubscribesAgainAfterARefusal: the broker refuses the watcher's
// subscriptions (SUBACK 0x80, as a NATS node does while JetStream elects
// its leaders; here mosquitto's dynamic security denies them). paho
// completes such a subscription without an error; the watcher must see the
// refusal, stay connected and ask again, and show alerts once the broker
// takes the subscription, without reconnecting.
func TestWatchSubscribesAgainAfterARefusal(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{DynamicSecurity: true})
	allow := b.RefuseSubscriptions("watcher", "watcher-pw", "#")
	dev := mqtttest.Connect(t, b) // anonymous: may publish
	var out, logs testkit.Buffer
	opts := DefaultOptions()
	opts.Broker, opts.JSON, opts.Out = b.URL(), true, &out
	opts.Username, opts.Password = "watcher", "watcher-pw"
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	runWatch(t, opts)
	testkit.WaitFor(t, 20*time.Second, "the refused subscription in the log", func() bool {
		return strings.Contains(logs.String(), "SUBACK code 0x80")
	})

	allow() // disconnects nobody
	testkit.WaitFor(t, 30*time.Second, "an alert once the broker takes the subscription", func() bool {
		mqtttest.Publish(t, dev, "vigil/pump-7/alerts/pump", 1, false, []byte(alert1))
		return strings.Contains(out.String(), `"a-1"`)
	})
	if strings.Contains(logs.String(), "connection lost") {
		t.Errorf("the watcher lost its connection; it should subscribe again on it:\n%s", logs.String())
	}
}
