package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/forward/amplitude/amplitudetest"
	"github.com/vigil-edge/vigil/agent/forward/dify/difytest"
	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/record"
)

// TestAlertsReachMQTTAmplitudeAndDifyAndAdviceComesBack runs the whole loop
// the product exists for: a replayed pump recording with faults is scored,
// its alerts are published over a real mosquitto, sent to the Amplitude
// double exactly once each, the major ones run the Dify workflow double once
// each, and the advice is published on advice/<alert id> and sent to
// Amplitude as vigil_ai_advice. No secret appears in the logs, in health or
// in any published message.
func TestAlertsReachMQTTAmplitudeAndDifyAndAdviceComesBack(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto and two HTTP doubles: not in -short")
	}
	const ampKey, difyKey, mqttPass = "amp-secret-key-123456", "app-dify-secret-98765", "mqtt-secret-pw"
	broker := mqtttest.Start(t, mqtttest.Options{Users: map[string]string{"vigil": mqttPass, "watcher": "watcher-pw"}})
	amp := amplitudetest.NewServer(amplitudetest.Options{APIKey: ampKey})
	defer amp.Close()
	df := difytest.NewServer(difytest.Options{APIKey: difyKey, Outputs: func(in map[string]any) map[string]any {
		return map[string]any{"advice": fmt.Sprintf("advice for %v", in["alert_id"]), "summary": in["summary"]}
	}})
	defer df.Close()

	extra := fmt.Sprintf(`
mqtt: {broker: %q, username: vigil, password: %q, keepalive: 5s}
health: {interval: 500ms}
amplitude: {endpoint: %q, api_key: %q, flush_interval: 200ms, min_severity: warning}
dify: {base_url: %q, api_key: %q, min_severity: major, rate_limit: 0, cooldown: 0s, response_mode: streaming}
`, broker.URL(), mqttPass, amp.HTTPURL(), ampKey, df.BaseURL(), difyKey)
	cfgPath, _ := testConfig(t, 3000, extra)

	sub := mqtttest.Subscribe(t, broker, "vigil/test-device-01/#", 1)
	d, stop := startDaemon(t, cfgPath)

	// Wait until the replay is scored and every alert went out.
	// The global counters move after the records reach the buffer, so the
	// alert count is final once every score is in and it matches the
	// stream's own count.
	waitFor(t, 90*time.Second, func() bool {
		st := d.Stats()
		return st.Scores >= (3000-60)/10+1 && st.Alerts == st.Streams["pump1"].Alerts
	})
	var alerts []record.Alert
	waitFor(t, 60*time.Second, func() bool {
		alerts = alertsOn(sub.Messages())
		return len(alerts) > 0 && len(alerts) == int(d.Stats().Alerts)
	})
	var major []record.Alert
	for _, a := range alerts {
		if record.SeverityRank(a.Severity) >= record.SeverityRank(record.SeverityMajor) {
			major = append(major, a)
		}
	}
	if len(major) == 0 {
		t.Fatalf("no major alert among %d: the fault injection should cause some", len(alerts))
	}
	// Amplitude: every alert exactly once, by insert_id.
	waitFor(t, 60*time.Second, func() bool { return len(amp.InsertIDs()) >= len(alerts)+len(major) })
	ids := amp.InsertIDs()
	for _, a := range alerts {
		if ids[a.ID] != 1 {
			t.Fatalf("alert %s reached Amplitude %d times", a.ID, ids[a.ID])
		}
	}
	// Dify: one successful run per major alert; advice published and sent on.
	waitFor(t, 60*time.Second, func() bool { return len(adviceOn(sub.Messages())) >= len(major) })
	runs := df.Succeeded()
	for _, a := range major {
		if runs[a.ID] != 1 {
			t.Fatalf("alert %s: %d successful Dify runs, want 1", a.ID, runs[a.ID])
		}
	}
	advice := adviceOn(sub.Messages())
	for _, a := range major {
		adv, ok := advice[a.ID]
		summary, _ := adv.Outputs["summary"].(string)
		if !ok || adv.Status != "succeeded" || adv.Outputs["advice"] != "advice for "+a.ID || adv.WorkflowRunID == "" ||
			!strings.Contains(summary, "test-device-01/pump1") {
			t.Fatalf("advice for %s: %+v", a.ID, adv)
		}
	}
	var adviceEvents int
	for _, e := range amp.Events() {
		if e.EventType == "vigil_ai_advice" {
			adviceEvents++
		}
	}
	if adviceEvents < len(major) {
		t.Fatalf("%d vigil_ai_advice events at Amplitude, want %d", adviceEvents, len(major))
	}
	// Status and health were published (health is QoS 0, which a busy
	// broker may drop, so wait for one); no secret anywhere.
	waitFor(t, 30*time.Second, func() bool {
		for _, m := range sub.Messages() {
			if strings.HasSuffix(m.Topic, "/health") {
				return true
			}
		}
		return false
	})
	var sawStatus, sawHealth bool
	for _, m := range sub.Messages() {
		sawStatus = sawStatus || strings.HasSuffix(m.Topic, "/status")
		sawHealth = sawHealth || strings.HasSuffix(m.Topic, "/health")
		for _, secret := range []string{ampKey, difyKey, mqttPass} {
			if strings.Contains(string(m.Payload), secret) {
				t.Fatalf("secret published on %s", m.Topic)
			}
		}
	}
	if !sawStatus || !sawHealth {
		t.Fatalf("status seen %v, health seen %v", sawStatus, sawHealth)
	}
	// The command subscription is in place and says so in /metrics.
	if code, body := get(t, "http://"+d.Addr()+"/metrics"); code != 200 || !strings.Contains(body, "vigil_mqtt_commands_subscribed 1\n") ||
		!strings.Contains(body, "vigil_mqtt_command_subscribe_failures_total 0\n") {
		t.Fatalf("/metrics (%d) lacks the command subscription's gauge at 1 and failures at 0", code)
	}
	snap, _ := json.Marshal(d.Health())
	stop()
	for _, secret := range []string{ampKey, difyKey, mqttPass} {
		if strings.Contains(string(snap), secret) {
			t.Fatal("a secret is in the health snapshot")
		}
	}
	cfgText, _ := os.ReadFile(cfgPath)
	if !strings.Contains(string(cfgText), ampKey) {
		t.Fatal("test setup: the key should be in the config file")
	}
}

func alertsOn(msgs []mqtttest.Message) []record.Alert {
	seen := map[string]bool{}
	var out []record.Alert
	for _, m := range msgs {
		if !strings.Contains(m.Topic, "/alerts/") {
			continue
		}
		var a record.Alert
		if json.Unmarshal(m.Payload, &a) == nil && !seen[a.ID] {
			seen[a.ID] = true
			out = append(out, a)
		}
	}
	return out
}

func adviceOn(msgs []mqtttest.Message) map[string]record.Advice {
	out := map[string]record.Advice{}
	for _, m := range msgs {
		if !strings.Contains(m.Topic, "/advice/") {
			continue
		}
		var a record.Advice
		if json.Unmarshal(m.Payload, &a) == nil {
			out[a.AlertID] = a
		}
	}
	return out
}
