package daemon

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/models"
)

// shadowConfig is testConfig with a simulated pump (live, 400 samples/s)
// for stream pump1 and shadow runs of `windows` windows.
func shadowConfig(t *testing.T, extra string, windows int, pub []byte) (cfgPath, dataDir string) {
	t.Helper()
	cfgPath, dataDir = testConfig(t, 100, fmt.Sprintf("%smodels: {trusted_keys: [%q], shadow: {windows: %d, max_alert_rate: 0.2}}\n", extra, models.EncodePublicKey(pub), windows))
	rewrite(t, cfgPath, "  - name: events\n", "  - {name: sim, type: simulator, simulator: {rate: 400, seed: 5}}\n  - name: events\n")
	rewrite(t, cfgPath, "{name: pump1, source: pump,", "{name: pump1, source: sim,")
	return cfgPath, dataDir
}

// alwaysOver writes pump8 version v with a threshold every window is over.
func alwaysOver(t *testing.T, v string, key []byte) string {
	t.Helper()
	m, tfl, err := models.ReadFiles(filepath.Join(repoModels, "pump8"))
	if err != nil {
		t.Fatal(err)
	}
	m.Version, m.Threshold.Value = v, 1e-12
	dir := t.TempDir()
	if err := models.Save(dir, "pump8", tfl, m); err != nil {
		t.Fatal(err)
	}
	if _, err := models.SignFiles(filepath.Join(dir, "pump8"), key); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "pump8")
}

var verdictWindows = regexp.MustCompile(`automatic: (\d+) windows`)

// outcomeWindows is the window count an automatic verdict names.
func outcomeWindows(t *testing.T, outcome string) int {
	t.Helper()
	m := verdictWindows.FindStringSubmatch(outcome)
	if m == nil {
		t.Fatalf("the outcome names no window count: %q", outcome)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestShadowScoresOnTheShadowTopic (issue 18 item 2): during a shadow run,
// every window the shadow model scores is published on
// vigil/<device>/shadow/<stream> through a real mosquitto, one message per
// window counted towards the verdict, each naming both models, the window
// and both scores; after the verdict (a promotion, then a rollback) none
// comes while the serving model's scores go on. The test logs the time from
// the start of the deployment over MQTT to each verdict.
func TestShadowScoresOnTheShadowTopic(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto: not in -short")
	}
	b := mqtttest.Start(t, mqtttest.Options{})
	pub, priv, _ := models.GenerateKey()
	cfgPath, _ := shadowConfig(t, fmt.Sprintf("mqtt: {broker: %q, keepalive: 5s}\n", b.URL()), 60, pub)
	shadowSub := mqtttest.Subscribe(t, b, "vigil/test-device-01/shadow/#", 1)
	scoreSub := mqtttest.Subscribe(t, b, "vigil/test-device-01/scores/pump1", 1)
	d, _ := startDaemon(t, cfgPath)
	commandsReady(t, b)
	s := sender(t, b, priv)

	for _, c := range []struct {
		version, path, outcome string
		over                   bool // the shadow model is over its threshold on every window
	}{
		{"5", newVersion(t, "5", priv, "pump8", 0), "serving pump1 (promoted, automatic", false},
		{"6", alwaysOver(t, "6", priv), "rolled-back on pump1 (automatic", true},
	} {
		ref := "pump8@" + c.version
		serving := d.effective()["pump1"].Model
		shadowSub.Reset()
		t0 := time.Now()
		if _, err := deploy(t, s, c.path); err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		waitFor(t, 60*time.Second, func() bool { return strings.HasPrefix(d.deploy.deployments()[ref], c.outcome) })
		t.Logf("%s: deployment over MQTT to verdict %v: %s", ref, time.Since(t0).Round(time.Millisecond), d.deploy.deployments()[ref])
		n := outcomeWindows(t, d.deploy.deployments()[ref])
		if n < 60 {
			t.Fatalf("%s: verdict after %d windows, want at least 60", ref, n)
		}
		msgs := shadowSub.WaitN(t, n, 30*time.Second)
		// The serving model's scores go on; no shadow score comes.
		scored := scoreSub.Len()
		waitFor(t, 30*time.Second, func() bool { return scoreSub.Len() >= scored+40 })
		if got := shadowSub.Len(); got != n {
			t.Fatalf("%s: %d shadow messages for %d windows scored in shadow", ref, got, n)
		}
		ids, ends := map[string]bool{}, map[time.Time]bool{}
		for _, m := range msgs {
			var r record.Shadow
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				t.Fatal(err)
			}
			if m.Topic != "vigil/test-device-01/shadow/pump1" || m.Retained || r.Stream != "pump1" || r.Model != ref || r.Serving != serving {
				t.Fatalf("%s: message on %s: %s", ref, m.Topic, m.Payload)
			}
			if !r.Window.Start.Before(r.Window.End) || !r.TS.Equal(r.Window.End) || r.Threshold <= 0 || r.ServingThreshold <= 0 ||
				r.Over != (r.Score > r.Threshold) || r.ServingOver != (r.ServingScore > r.ServingThreshold) || (c.over && !r.Over) ||
				!strings.HasPrefix(r.ID, "h-") || r.Seq == 0 {
				t.Fatalf("%s: record %s", ref, m.Payload)
			}
			if ids[r.ID] || ends[r.Window.End] {
				t.Fatalf("%s: window %v twice: %s", ref, r.Window.End, m.Payload)
			}
			ids[r.ID], ends[r.Window.End] = true, true
		}
	}
}

// persistentSub subscribes to filter at QoS 1 with a persistent session,
// so that a broker with persistence keeps what arrives for it while it is
// away; it returns the payloads received so far.
func persistentSub(t *testing.T, b *mqtttest.Broker, filter string) func() [][]byte {
	t.Helper()
	var mu sync.Mutex
	var got [][]byte
	opts := b.ClientOptions("shadow-outage-sub").SetCleanSession(false)
	opts.SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
			mu.Lock()
			got = append(got, slices.Clone(m.Payload()))
			mu.Unlock()
		}).WaitTimeout(10 * time.Second)
	})
	mqtttest.ConnectWith(t, opts)
	return func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// TestShadowScoresSurviveABrokerOutage: shadow records go through the
// buffer like the scores, so those of the windows scored while the broker
// was down are published once it is back (marked replayed): with
// mqtt.qos.score 1, the shadow topic has every window the run counted.
func TestShadowScoresSurviveABrokerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto: not in -short")
	}
	b := mqtttest.Start(t, mqtttest.Options{Persistence: true})
	pub, priv, _ := models.GenerateKey()
	cfgPath, _ := shadowConfig(t, fmt.Sprintf("mqtt: {broker: %q, keepalive: 5s, reconnect_max: 1s, qos: {score: 1}}\n", b.URL()), 150, pub)
	received := persistentSub(t, b, "vigil/test-device-01/shadow/#")
	d, _ := startDaemon(t, cfgPath)
	commandsReady(t, b)
	deployDirect(t, d, newVersion(t, "5", priv, "pump8", 0), "5")
	waitFor(t, 30*time.Second, func() bool { return len(received()) >= 20 })
	b.Stop()
	at := d.shadowState()["pump1"].Windows
	waitFor(t, 30*time.Second, func() bool { s := d.shadowState()["pump1"]; return s == nil || s.Windows >= at+40 })
	b.Start()
	waitFor(t, 60*time.Second, func() bool { return strings.HasPrefix(d.deploy.deployments()["pump8@5"], "serving pump1 (promoted") })
	n := outcomeWindows(t, d.deploy.deployments()["pump8@5"])
	unique := func() (ids map[string]bool, replayed int) {
		ids = map[string]bool{}
		for _, p := range received() {
			var r record.Shadow
			if err := json.Unmarshal(p, &r); err != nil {
				t.Fatal(err)
			}
			ids[r.ID] = true
			if r.Replayed {
				replayed++
			}
		}
		return ids, replayed
	}
	waitFor(t, 30*time.Second, func() bool { ids, _ := unique(); return len(ids) >= n })
	ids, replayed := unique()
	t.Logf("%d windows in shadow, %d shadow records replayed by the publisher after the outage; %d messages received, %d marked replayed", n, d.publisher.Stats().Lanes[record.LaneShadow].Replayed, len(received()), replayed)
	if len(ids) != n || replayed == 0 {
		t.Fatalf("%d distinct shadow records for %d windows, %d replayed", len(ids), n, replayed)
	}
}
