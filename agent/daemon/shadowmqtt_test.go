package daemon

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/models"
)

// The shadow run through a real mosquitto: its records on the shadow topic,
// across a broker outage, and its counts across a restart and a SIGKILL.

// simConfig is testConfig with a simulated pump (live, 400 samples/s) for
// stream pump1.
func simConfig(t *testing.T, extra string) (cfgPath, dataDir string) {
	t.Helper()
	cfgPath, dataDir = testConfig(t, 100, extra)
	rewrite(t, cfgPath, "  - name: events\n", "  - {name: sim, type: simulator, simulator: {rate: 400, seed: 5}}\n  - name: events\n")
	rewrite(t, cfgPath, "{name: pump1, source: pump,", "{name: pump1, source: sim,")
	return cfgPath, dataDir
}

// shadowConfig is simConfig with pub trusted and shadow runs of `windows`
// windows.
func shadowConfig(t *testing.T, extra string, windows int, pub []byte) (cfgPath, dataDir string) {
	t.Helper()
	return simConfig(t, fmt.Sprintf("%smodels: {trusted_keys: [%q], shadow: {windows: %d, max_alert_rate: 0.2}}\n", extra, models.EncodePublicKey(pub), windows))
}

// shadowOverMQTT starts a mosquitto with opts and writes shadowConfig's
// config for a daemon publishing to it (mqtt: more settings of the mqtt
// section, e.g. ", qos: {score: 1}"); priv signs the models to deploy.
func shadowOverMQTT(t *testing.T, opts mqtttest.Options, mqtt string, windows int) (b *mqtttest.Broker, priv ed25519.PrivateKey, cfgPath, dataDir string) {
	t.Helper()
	b = mqtttest.Start(t, opts)
	pub, priv, _ := models.GenerateKey()
	cfgPath, dataDir = shadowConfig(t, fmt.Sprintf("mqtt: {broker: %q, keepalive: 5s%s}\n", b.URL(), mqtt), windows, pub)
	return b, priv, cfgPath, dataDir
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
	b, priv, cfgPath, _ := shadowOverMQTT(t, mqtttest.Options{}, "", 60)
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
	b, priv, cfgPath, _ := shadowOverMQTT(t, mqtttest.Options{Persistence: true}, ", reconnect_max: 1s, qos: {score: 1}", 150)
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

// liveShadow counts the shadow records of model among msgs that were
// published live (not replayed from the buffer after a restart).
func liveShadow(t *testing.T, msgs []mqtttest.Message, model string) int {
	t.Helper()
	n := 0
	for _, m := range msgs {
		var r record.Shadow
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			t.Fatal(err)
		}
		if r.Model == model && !r.Replayed {
			n++
		}
	}
	return n
}

// savedShadow reads a stream's saved shadow state; ok is false while there
// is none.
func savedShadow(t *testing.T, dataDir, stream string) (shadowState, bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "shadow", stream+".json"))
	if os.IsNotExist(err) {
		return shadowState{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := decodeShadowState(b)
	if err != nil {
		t.Fatal(err)
	}
	return st, true
}

// continuesAfterRestart starts the daemon again over a shadow run that had
// counted `saved` windows (of 200 for the verdict) and checks that the
// counts carry on from there: health shows them at once, and the verdict
// comes after 200 windows in all, of which the restarted daemon scored
// (and published live) only the rest.
func continuesAfterRestart(t *testing.T, b *mqtttest.Broker, cfgPath, dataDir string, saved shadowState) {
	t.Helper()
	sub := mqtttest.Subscribe(t, b, "vigil/test-device-01/shadow/#", 1)
	d, _ := startDaemon(t, cfgPath)
	s := d.shadowState()["pump1"]
	if s == nil || s.Model != "pump8@5" || s.Restored != saved.Windows || s.Windows < saved.Windows ||
		s.Distribution.Shadow.Windows < saved.Windows || s.ShadowOver < saved.ShadowOver {
		t.Fatalf("after the restart, health shows %+v; saved %d windows", s, saved.Windows)
	}
	// The status page's data carries the run, with its distributions.
	if code, body := get(t, "http://"+d.Addr()+"/status.json"); code != 200 || !strings.Contains(body, `"restored_windows":`) ||
		!strings.Contains(body, `"ks":`) || !strings.Contains(body, `"p99":`) {
		t.Fatalf("/status.json: %d %.2000s", code, body)
	}
	if msg, _ := (remoteCommands{d}).Status(context.Background()); !strings.Contains(msg, "; shadow: pump1 pump8@5 beside ") ||
		!strings.Contains(msg, fmt.Sprintf("(%d before a restart)", saved.Windows)) {
		t.Fatalf("status: %s", msg)
	}
	restarted := time.Now()
	waitFor(t, 60*time.Second, func() bool { return strings.HasPrefix(d.deploy.deployments()["pump8@5"], "serving pump1 (promoted") })
	n := outcomeWindows(t, d.deploy.deployments()["pump8@5"])
	after := uint64(n) - saved.Windows
	t.Logf("verdict %v after the restart: %d windows in all, %d before the restart, %d after", time.Since(restarted).Round(time.Millisecond), n, saved.Windows, after)
	if n < 200 || after >= 200 {
		t.Fatalf("verdict after %d windows in all, %d since the restart: the count started again", n, after)
	}
	waitFor(t, 30*time.Second, func() bool { return uint64(liveShadow(t, sub.Messages(), "pump8@5")) >= after })
	if got := liveShadow(t, sub.Messages(), "pump8@5"); uint64(got) != after {
		t.Fatalf("%d shadow windows published live after the restart, the verdict counts %d", got, after)
	}
	if _, ok := savedShadow(t, dataDir, "pump1"); ok {
		t.Error("the run's state is still on disk after its verdict")
	}
}

// TestShadowRunSurvivesARestart (issue 18 item 2, "shadow state survives a
// restart"): a shadow run stopped after some windows carries on after the
// restart with its window counts and score sketches; the verdict comes at
// models.shadow.windows in all, not after a fresh count.
func TestShadowRunSurvivesARestart(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto: not in -short")
	}
	b, priv, cfgPath, dataDir := shadowOverMQTT(t, mqtttest.Options{}, "", 200)
	d, stop := startDaemon(t, cfgPath)
	deployDirect(t, d, newVersion(t, "5", priv, "pump8", 0), "5")
	waitFor(t, 60*time.Second, func() bool { s := d.shadowState()["pump1"]; return s != nil && s.Windows >= 80 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	saved, ok := savedShadow(t, dataDir, "pump1")
	if !ok || saved.Model != "pump8@5" || saved.Windows < 80 || saved.Windows >= 200 {
		t.Fatalf("saved at shutdown: %+v (%v)", saved, ok)
	}
	continuesAfterRestart(t, b, cfgPath, dataDir, saved)
}

const (
	shadowChildConfig = "VIGIL_SHADOW_CHILD_CONFIG"
	shadowChildModel  = "VIGIL_SHADOW_CHILD_MODEL"
)

// TestShadowChild is not a test of its own: run by
// TestShadowRunSurvivesSIGKILL in a child process, it runs the daemon,
// deploys the model into a shadow run and waits to be killed.
func TestShadowChild(t *testing.T) {
	cfgPath := os.Getenv(shadowChildConfig)
	if cfgPath == "" {
		t.Skip("run by TestShadowRunSurvivesSIGKILL in a child process")
	}
	d, _ := startDaemon(t, cfgPath)
	deployDirect(t, d, os.Getenv(shadowChildModel), "5")
	fmt.Println("SHADOW")
	<-make(chan struct{}) // until SIGKILL
}

// TestShadowRunSurvivesSIGKILL: the same as TestShadowRunSurvivesARestart
// with a daemon process killed by SIGKILL mid-run: the counts carry on
// from the last saved point (every shadowSaveEvery windows).
func TestShadowRunSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto and a child process killed with SIGKILL: not in -short")
	}
	b, priv, cfgPath, dataDir := shadowOverMQTT(t, mqtttest.Options{}, "", 200)
	child, sc := startChild(t, "TestShadowChild", shadowChildConfig+"="+cfgPath, shadowChildModel+"="+newVersion(t, "5", priv, "pump8", 0))
	for sc.Scan() && sc.Text() != "SHADOW" {
	}
	waitFor(t, 60*time.Second, func() bool { st, ok := savedShadow(t, dataDir, "pump1"); return ok && st.Windows >= 60 })
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	saved, _ := savedShadow(t, dataDir, "pump1")
	if saved.Windows >= 200 {
		t.Fatalf("the run was over before the kill: %+v", saved)
	}
	continuesAfterRestart(t, b, cfgPath, dataDir, saved)
}
