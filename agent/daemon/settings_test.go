package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/publish"
)

// command runs one of the daemon's own commands (relearn, reset) as the
// publisher would.
func command(t *testing.T, d *Daemon, name, payload string) publish.Reply {
	t.Helper()
	h := d.handlers()[name]
	if h == nil {
		t.Fatalf("no handler for %s", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return h(ctx, []byte(payload))
}

// TestThresholdSetByCommandSurvivesReloadAndRestart (issue 18 item 3): a
// threshold set by command is stored in the data directory, is in force
// after a reload and after a restart over the same data_dir, and is shown
// as coming from a command; reset returns to the config's value, which a
// restart keeps.
func TestThresholdSetByCommandSurvivesReloadAndRestart(t *testing.T) {
	cfgPath, dataDir := testConfig(t, 300, "")
	d, stop := startDaemon(t, cfgPath)
	configured := d.Stats().Streams["pump1"].Threshold
	if e := d.effective()["pump1"]; e.ThresholdFrom != "config" || e.ModelFrom != "config" || !strings.HasPrefix(e.Model, "pump8@") {
		t.Fatalf("before: %+v", e)
	}
	msg, err := remoteCommands{d}.SetThreshold(context.Background(), "pump1", 7.5)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "stored") {
		t.Errorf("reply %q", msg)
	}
	check := func(when string, d *Daemon, want float64, from string) {
		t.Helper()
		if th := d.Stats().Streams["pump1"].Threshold; th != want {
			t.Fatalf("%s: threshold %g, want %g", when, th, want)
		}
		e := d.effective()["pump1"]
		if e.Threshold != want || e.ThresholdFrom != from {
			t.Fatalf("%s: effective %+v, want %g from %s", when, e, want, from)
		}
		if got := d.Health().Extra["streams"].(map[string]Effective)["pump1"].ThresholdFrom; got != from {
			t.Fatalf("%s: health says the threshold came from %q", when, got)
		}
		st, _ := remoteCommands{d}.Status(context.Background())
		if !strings.Contains(st, "("+from+")") {
			t.Fatalf("%s: status %q does not say %s", when, st, from)
		}
	}
	check("after set-threshold", d, 7.5, "command")
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	check("after reload", d, 7.5, "command")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dataDir, settingsFile)); err != nil || !strings.Contains(string(b), `"threshold": 7.5`) {
		t.Fatalf("settings file: %s, %v", b, err)
	}
	d2, stop2 := startDaemon(t, cfgPath)
	check("after restart", d2, 7.5, "command")
	rep := command(t, d2, cmdReset, `{"id":"r1","stream":"pump1"}`)
	if !rep.OK || rep.ID != "r1" || !strings.Contains(rep.Message, "back to the config's values") {
		t.Fatalf("reset: %+v", rep)
	}
	check("after reset", d2, configured, "config")
	if rep := command(t, d2, cmdReset, `{"id":"r2","stream":"nope"}`); rep.OK || !strings.Contains(rep.Message, `unknown stream "nope"`) {
		t.Fatalf("reset of an unknown stream: %+v", rep)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	d3, _ := startDaemon(t, cfgPath)
	check("after reset and restart", d3, configured, "config")
}

// TestRelearnSurvivesRestartAndResetReturnsToTheConfigModel (issue 18 item
// 3): relearn makes a stream that scores with its configured model learn a
// new baseline on the device; the learnt model serves after a restart;
// reset returns to the configured model, also after a restart.
func TestRelearnSurvivesRestartAndResetReturnsToTheConfigModel(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model: not in -short")
	}
	cfgPath, dataDir := testConfig(t, 1500, "")
	rewrite(t, cfgPath, "model: pump8, max_lateness: 0s}", "model: pump8, max_lateness: 0s, learn: {budget: 10s}}")
	d, stop := startDaemon(t, cfgPath)
	if rep := command(t, d, cmdRelearn, `{"id":"l0","stream":"pump1"}`); rep.OK || !strings.Contains(rep.Message, "no learn.samples") {
		t.Fatalf("relearn without samples: %+v", rep)
	}
	rep := command(t, d, cmdRelearn, `{"id":"l1","stream":"pump1","samples":400}`)
	if !rep.OK || rep.ID != "l1" || !strings.Contains(rep.Message, "learning anew from its next 400 samples") {
		t.Fatalf("relearn: %+v", rep)
	}
	waitFor(t, 90*time.Second, func() bool {
		st := d.Stats().Streams["pump1"]
		return st.State == "scoring" && strings.HasPrefix(st.Model, "pump1@learned-")
	})
	if e := d.effective()["pump1"]; e.ModelFrom != "learnt" || e.ThresholdFrom != "learnt" || e.SetAt == "" {
		t.Fatalf("after relearn: %+v", e)
	}
	learnt := d.Stats().Streams["pump1"].Model
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	d2, stop2 := startDaemon(t, cfgPath)
	if st := d2.Stats().Streams["pump1"]; st.State != "scoring" || st.Model != learnt {
		t.Fatalf("after restart: %+v, want scoring with %s", st, learnt)
	}
	rep = command(t, d2, cmdReset, `{"id":"r1","stream":"pump1"}`)
	if !rep.OK {
		t.Fatalf("reset: %+v", rep)
	}
	if st := d2.Stats().Streams["pump1"]; !strings.HasPrefix(st.Model, "pump8@") {
		t.Fatalf("after reset: model %s, want the configured pump8", st.Model)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	d3, _ := startDaemon(t, cfgPath)
	if e := d3.effective()["pump1"]; !strings.HasPrefix(e.Model, "pump8@") || e.ModelFrom != "config" {
		t.Fatalf("after reset and restart: %+v", e)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "learned", "pump1.json")); err != nil {
		t.Fatalf("the learnt model is not kept on disk after reset: %v", err)
	}
}

// TestUnreadableSettingsAreSetAside: a settings file that does not decode
// is moved aside and the streams run on the config's values.
func TestUnreadableSettingsAreSetAside(t *testing.T) {
	cfgPath, dataDir := testConfig(t, 100, "")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, settingsFile), []byte(`{"version":1,"streams":{"pump1":{"threshold":"x"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	d, _ := startDaemon(t, cfgPath)
	if e := d.effective()["pump1"]; e.ThresholdFrom != "config" {
		t.Fatalf("%+v", e)
	}
	m, _ := filepath.Glob(filepath.Join(dataDir, settingsFile+".bad-*"))
	if len(m) != 1 {
		t.Fatalf("set aside: %v", m)
	}
}
