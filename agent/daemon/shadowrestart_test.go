package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/models"
)

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
	b := mqtttest.Start(t, mqtttest.Options{})
	pub, priv, _ := models.GenerateKey()
	cfgPath, dataDir := shadowConfig(t, fmt.Sprintf("mqtt: {broker: %q, keepalive: 5s}\n", b.URL()), 200, pub)
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
	b := mqtttest.Start(t, mqtttest.Options{})
	pub, priv, _ := models.GenerateKey()
	cfgPath, dataDir := shadowConfig(t, fmt.Sprintf("mqtt: {broker: %q, keepalive: 5s}\n", b.URL()), 200, pub)
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
