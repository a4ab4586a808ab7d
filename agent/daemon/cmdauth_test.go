package daemon

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/fleet"
	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/models"
)

// TestSignedCommands (issue 18 item 5): with set-threshold and reset in
// mqtt.commands.require_signature, through a real mosquitto: an unsigned
// set-threshold is refused, a signed one is applied, the same message sent
// again is refused as replayed (also after a restart), a stale one and one
// signed by a key not trusted are refused; an unsigned status still works.
func TestSignedCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto: not in -short")
	}
	b := mqtttest.Start(t, mqtttest.Options{})
	pub, priv, _ := models.GenerateKey()
	_, other, _ := models.GenerateKey()
	cfgPath, _ := testConfig(t, 200, fmt.Sprintf("mqtt: {broker: %q, keepalive: 5s, commands: {require_signature: [set-threshold, reset, deploy-model]}}\nmodels: {trusted_keys: [%q]}\n",
		b.URL(), models.EncodePublicKey(pub)))
	d, stop := startDaemon(t, cfgPath)
	commandsReady(t, b)
	const topic = "vigil/test-device-01/cmd/set-threshold"
	replies := mqtttest.Subscribe(t, b, topic+"/reply", 1)
	c := mqtttest.Connect(t, b)
	send := func(payload []byte) fleet.Reply {
		t.Helper()
		n := replies.Len()
		mqtttest.Publish(t, c, topic, 1, false, payload)
		msgs := replies.WaitN(t, n+1, 30*time.Second)
		var r fleet.Reply
		if err := json.Unmarshal(msgs[n].Payload, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	inner := []byte(`{"id":"t1","stream":"pump1","threshold":4.25}`)
	if r := send(inner); r.OK || r.ID != "t1" || !strings.Contains(r.Message, "must be signed") {
		t.Fatalf("unsigned: %+v", r)
	}
	signed := fleet.SignCommand(priv, "test-device-01", "set-threshold", inner, time.Now())
	if r := send(signed); !r.OK || r.ID != "t1" {
		t.Fatalf("signed: %+v", r)
	}
	if th := d.Stats().Streams["pump1"].Threshold; th != 4.25 {
		t.Fatalf("threshold %g after the signed command", th)
	}
	if r := send(signed); r.OK || r.ID != "t1" || !strings.Contains(r.Message, "replayed") {
		t.Fatalf("replay: %+v", r)
	}
	if r := send(fleet.SignCommand(priv, "test-device-01", "set-threshold", inner, time.Now().Add(-time.Hour))); r.OK || !strings.Contains(r.Message, "stale") {
		t.Fatalf("stale: %+v", r)
	}
	if r := send(fleet.SignCommand(other, "test-device-01", "set-threshold", inner, time.Now())); r.OK || !strings.Contains(r.Message, "not trusted") {
		t.Fatalf("other key: %+v", r)
	}
	if r := send(fleet.SignCommand(priv, "other-device", "set-threshold", inner, time.Now())); r.OK || !strings.Contains(r.Message, "does not verify") {
		t.Fatalf("for another device: %+v", r)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, cfgPath)
	commandsReady(t, b) // status is not in require_signature: unsigned works
	if r := send(signed); r.OK || !strings.Contains(r.Message, "replayed") {
		t.Fatalf("replay after restart: %+v", r)
	}
}
