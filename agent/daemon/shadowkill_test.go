package daemon

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/publish"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/models"
)

// mqttCommand sends a command over the broker and returns its reply.
func mqttCommand(t *testing.T, b *mqtttest.Broker, name, payload string) publish.Reply {
	t.Helper()
	var req struct{ ID string }
	if err := json.Unmarshal([]byte(payload), &req); err != nil {
		t.Fatal(err)
	}
	// The command is not retained: sent before the daemon's command
	// subscription is in place (its publisher subscribes beside publishing,
	// so records flowing prove nothing), it would be lost.
	commandsReady(t, b)
	sub := mqtttest.Subscribe(t, b, "vigil/test-device-01/cmd/"+name+"/reply", 1)
	c := mqtttest.Connect(t, b)
	mqtttest.Publish(t, c, "vigil/test-device-01/cmd/"+name, 1, false, []byte(payload))
	var rep publish.Reply
	waitFor(t, 60*time.Second, func() bool {
		for _, m := range sub.Messages() {
			if json.Unmarshal(m.Payload, &rep) == nil && rep.ID == req.ID {
				return true
			}
		}
		return false
	})
	return rep
}

// liveScores returns the models of the scores of msgs published live.
func liveScores(t *testing.T, msgs []mqtttest.Message) []string {
	t.Helper()
	var out []string
	for _, m := range msgs {
		var s record.Score
		if err := json.Unmarshal(m.Payload, &s); err != nil {
			t.Fatal(err)
		}
		if !s.Replayed {
			out = append(out, s.Model)
		}
	}
	return out
}

// leftovers lists the temporary files of atomic writes and landings in
// the data directory (the buffer's own files aside).
func leftovers(t *testing.T, dataDir string) []string {
	t.Helper()
	var out []string
	for _, dir := range []string{dataDir, filepath.Join(dataDir, "shadow"), filepath.Join(dataDir, "models")} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if n := e.Name(); strings.Contains(n, ".tmp-") || strings.HasPrefix(n, ".landing-") {
				out = append(out, filepath.Join(filepath.Base(dir), n))
			}
		}
	}
	return out
}

// TestPromotionSIGKILL (issue 18 item 1, "SIGKILL of a device ...
// mid-promotion"): a real vigil process (built with its failpoints) with a
// deployed model in its shadow run kills itself with SIGKILL at a point of
// the promotion (by the promote command or the automatic verdict) or of a
// rollback: before settings.json records it, with the new settings.json
// written but not yet renamed, after it is recorded, after the new pipeline
// runs, after the run's state is removed. After the kill, settings.json is
// whole and says either "shadow run on" or "promoted" ("rolled back"),
// the model on disk is whole and verifies; after a restart, the process
// serves exactly the model settings.json names, the status command says
// so, no temporary file or stale shadow state is left, a promotion cut
// short before it was recorded can be sent again, and every alert the
// process stored (before and after the kill) reaches the broker, with no
// alert under two ids.
func TestPromotionSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto and vigil processes killed with SIGKILL: not in -short")
	}
	configured := configuredModel(t)
	pub, priv, _ := models.GenerateKey()
	man, _, err := models.ReadFiles(filepath.Join(repoModels, "pump8"))
	if err != nil {
		t.Fatal(err)
	}
	v5 := newVersion(t, "5", priv, "pump8", 0)
	_, want5, err := models.ReadFiles(v5)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, failpoint string
		cmd             string // promote, rollback, or "" for the automatic verdict
		want            string // after the kill: shadow, promoted, rolled-back
	}{
		{"promote/before settings", "promote:before-settings", cmdPromote, "shadow"},
		{"promote/settings written not renamed", "write:settings.json:before-rename#2", cmdPromote, "shadow"},
		{"promote/after settings", "promote:after-settings", cmdPromote, "promoted"},
		{"promote/after rebuild", "promote:after-rebuild", cmdPromote, "promoted"},
		{"promote/after the run's state removed", "promote:after-forget", cmdPromote, "promoted"},
		{"verdict/after settings", "promote:after-settings", "", "promoted"},
		{"verdict/after rebuild", "promote:after-rebuild", "", "promoted"},
		{"rollback/after settings", "rollback:after-settings", cmdRollback, "rolled-back"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := mqtttest.Start(t, mqtttest.Options{})
			windows := 100000000
			if tt.cmd == "" {
				windows = 100 // the verdict comes by itself, a few seconds after the deployment
			}
			cfgPath, dataDir := shadowConfig(t, fmt.Sprintf("mqtt: {broker: %q, keepalive: 5s}\n", b.URL()), windows, pub)
			rewrite(t, cfgPath, "simulator: {rate: 400, seed: 5}", "simulator: {rate: 400, seed: 5, faults: true, fault_interval: 1s}")
			// A threshold near the median score (both models share the
			// stream's threshold): episodes open and close every few
			// seconds, so that alerts flow across the kill.
			rewrite(t, cfgPath, "{name: pump1, source: sim,", fmt.Sprintf("{name: pump1, source: sim, threshold: %g,", 0.75*man.Threshold.Value))
			logPath := filepath.Join(t.TempDir(), "vigil.log")
			alerts := mqtttest.Subscribe(t, b, "vigil/test-device-01/alerts/pump1", 1)
			shadow := mqtttest.Subscribe(t, b, "vigil/test-device-01/shadow/pump1", 1)
			scores := mqtttest.Subscribe(t, b, "vigil/test-device-01/scores/pump1", 1)

			first := startVigil(t, "vigil_failpoints", cfgPath, logPath, "VIGIL_TEST_FAILPOINT="+tt.failpoint)
			commandsReady(t, b)
			if res, err := deploy(t, sender(t, b, priv), v5); err != nil || !strings.Contains(res.Message, "shadow run on stream pump1") {
				t.Fatalf("deploy: %+v, %v", res, err)
			}
			if tt.cmd != "" {
				// The run has counted windows and saved its state.
				waitFor(t, 60*time.Second, func() bool {
					return liveShadow(t, shadow.Messages(), "pump8@5") >= 2*shadowSaveEvery && alerts.Len() >= 2
				})
				c := mqtttest.Connect(t, b)
				mqtttest.Publish(t, c, "vigil/test-device-01/cmd/"+tt.cmd, 1, false, []byte(`{"id":"x","stream":"pump1"}`))
			}
			select {
			case <-first.exited:
			case <-time.After(90 * time.Second):
				t.Fatal("the process did not reach the failpoint")
			}
			if ws, ok := first.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("the process ended with %v, not SIGKILL at the failpoint", first.cmd.ProcessState)
			}

			// On disk after the kill: whole settings naming one state, a whole model.
			raw, err := os.ReadFile(filepath.Join(dataDir, settingsFile))
			if err != nil {
				t.Fatal(err)
			}
			doc, err := decodeSettings(raw)
			if err != nil {
				t.Fatalf("settings.json after the kill: %v\n%s", err, raw)
			}
			st := doc.Streams["pump1"]
			wantSt := map[string]streamSettings{
				"shadow":      {Shadow: "pump8@5", ShadowAt: st.ShadowAt},
				"promoted":    {Model: "pump8@5", ModelAt: st.ModelAt},
				"rolled-back": {},
			}[tt.want]
			if st != wantSt || (tt.want != "rolled-back" && st.ShadowAt.IsZero() == (tt.want == "shadow")) {
				t.Fatalf("settings after the kill: %+v, want %s", st, tt.want)
			}
			got5, err := os.ReadFile(filepath.Join(dataDir, "models", "pump8@5", "pump8.tflite"))
			if err != nil || sha256.Sum256(got5) != sha256.Sum256(want5) {
				t.Fatalf("the landed model after the kill differs from the one sent (%v)", err)
			}
			if _, err := models.VerifyFiles(filepath.Join(dataDir, "models", "pump8@5", "pump8"), models.Trust{Keys: []ed25519.PublicKey{pub}}); err != nil {
				t.Fatalf("the landed model does not verify: %v", err)
			}
			before := leftovers(t, dataDir)
			_, stateBefore := savedShadow(t, dataDir, "pump1")

			// Restarted (failpoints inert): serving again.
			alertsBefore := alerts.Len()
			scores.Reset()
			startVigil(t, "vigil_failpoints", cfgPath, logPath)
			waitFor(t, 60*time.Second, func() bool { return len(liveScores(t, scores.Messages())) > 0 })
			serving := time.Since(first.at)
			serves := configured
			if tt.want == "promoted" {
				serves = "pump8@5"
			}
			waitFor(t, 60*time.Second, func() bool { return len(liveScores(t, scores.Messages())) >= 20 })
			for i, m := range liveScores(t, scores.Messages()) {
				if m != serves {
					t.Fatalf("score %d after the restart by %s, want %s only", i, m, serves)
				}
			}
			_, stateAfter := savedShadow(t, dataDir, "pump1")
			// What the crash left is gone (the running process may be
			// writing its shadow state: a temporary file of its own).
			now := leftovers(t, dataDir)
			t.Logf("kill at %s: settings say %s; left before the restart: %v, shadow state %v; after: %v, shadow state %v; kill to the first score %v",
				tt.failpoint, tt.want, before, stateBefore, now, stateAfter, serving.Round(time.Millisecond))
			for _, l := range before {
				if slices.Contains(now, l) {
					t.Errorf("%s left by the kill is still there after the restart", l)
				}
			}
			if stateAfter != (tt.want == "shadow") {
				t.Errorf("shadow state on disk after the restart: %v, want it only during a run", stateAfter)
			}
			rep := mqttCommand(t, b, "status", `{"id":"s1"}`)
			inForce := "pump1 model " + serves + " ("
			if !rep.OK || !strings.Contains(rep.Message, inForce) || strings.Contains(rep.Message, "shadow: pump1") != (tt.want == "shadow") {
				t.Fatalf("status after the restart: %+v; want %q, shadow run: %v", rep, inForce, tt.want == "shadow")
			}
			if tt.want == "shadow" {
				// The promotion cut short before it was recorded: send it again.
				if rep := mqttCommand(t, b, cmdPromote, `{"id":"again","stream":"pump1"}`); !rep.OK {
					t.Fatalf("promote after the restart: %+v", rep)
				}
				scores.Reset()
				waitFor(t, 60*time.Second, func() bool { return len(liveScores(t, scores.Messages())) >= 10 })
				for _, m := range liveScores(t, scores.Messages()) {
					if m != "pump8@5" {
						t.Fatalf("a score by %s after the promotion sent again", m)
					}
				}
			}

			waitFor(t, 60*time.Second, func() bool { return alerts.Len() >= alertsBefore+2 })
			// No alert lost or under two ids: each episode's alerts arrive
			// with updates 0, 1, ... and no gap (a lost escalation or close
			// leaves one), each alert under one id.
			got := map[string]record.Alert{}
			for _, m := range alerts.Messages() {
				var a record.Alert
				if err := json.Unmarshal(m.Payload, &a); err != nil {
					t.Fatal(err)
				}
				got[a.ID] = a
			}
			byContent := map[string]string{}
			updates := map[string][]int{}
			closedBySwitch := 0
			for id, a := range got {
				k := fmt.Sprintf("%s|%s|%d|%s", a.Model, a.Episode, a.Update, a.State)
				if other, dup := byContent[k]; dup {
					t.Errorf("one alert under two ids: %s and %s (%s)", id, other, k)
				}
				byContent[k] = id
				updates[a.Episode] = append(updates[a.Episode], a.Update)
				if strings.HasPrefix(a.Reason, "model switched") {
					closedBySwitch++
				}
			}
			for ep, u := range updates {
				slices.Sort(u)
				for i, n := range u {
					if n != i {
						t.Errorf("episode %s: updates %v received, one is missing", ep, u)
						break
					}
				}
			}
			t.Logf("%d alerts (%d messages) in %d episodes, %d closed by a model switch", len(got), alerts.Len(), len(updates), closedBySwitch)
		})
	}
}
