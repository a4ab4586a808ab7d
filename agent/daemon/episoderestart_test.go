package daemon

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/episodes"
	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/record"
)

// anomalousPump starts mosquitto and writes the config of a vigil whose
// stream pump1 reads a simulator and is anomalous at every window (a
// threshold far below its scores). alerts returns pump1's alerts on the
// broker so far, those in state alone unless it is empty.
func anomalousPump(t *testing.T) (b *mqtttest.Broker, cfgPath, logPath string, alerts func(state string) []record.Alert) {
	t.Helper()
	b = mqtttest.Start(t, mqtttest.Options{})
	cfgPath, _ = testConfig(t, 100, fmt.Sprintf("mqtt: {broker: %q, keepalive: 5s}\n", b.URL()))
	rewrite(t, cfgPath, "  - name: events\n", "  - {name: sim, type: simulator, simulator: {rate: 50, seed: 5}}\n  - name: events\n")
	rewrite(t, cfgPath, "{name: pump1, source: pump,", "{name: pump1, source: sim, threshold: 1e-9,")
	logPath = filepath.Join(t.TempDir(), "vigil.log")
	sub := mqtttest.Subscribe(t, b, "vigil/test-device-01/alerts/#", 1)
	return b, cfgPath, logPath, func(state string) []record.Alert {
		var out []record.Alert
		for _, a := range alertsOn(sub.Messages()) {
			if a.Stream == "pump1" && (state == "" || a.State == state) {
				out = append(out, a)
			}
		}
		return out
	}
}

// TestEpisodeClosedAfterRestart: a real vigil process whose stream is
// anomalous at every window (a threshold far below its scores) opens an
// episode that stays open; the process is stopped, with SIGKILL or with
// SIGTERM, and started again. The restarted process publishes a "closed"
// alert for that episode (its next update, the reason naming the restart)
// and the ongoing anomaly opens a new episode. A third start closes the
// second episode and does not close the first again.
func TestEpisodeClosedAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto and vigil processes stopped and started: not in -short")
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			_, cfgPath, logPath, alerts := anomalousPump(t)
			pump1 := func() []record.Alert { return alerts("") }
			// run starts vigil, waits for an episode other than the ones
			// in seen to open, and stops vigil with sig.
			run := func(seen map[string]bool) record.Alert {
				p := startVigil(t, "", cfgPath, logPath)
				var opened record.Alert
				waitFor(t, 60*time.Second, func() bool {
					for _, a := range pump1() {
						if a.State == "open" && !seen[a.Episode] {
							opened = a
							return true
						}
					}
					return false
				})
				if err := p.cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				<-p.exited
				seen[opened.Episode] = true
				return opened
			}
			seen := map[string]bool{}
			e1 := run(seen)
			e2 := run(seen)
			run(seen)
			closes := map[string][]record.Alert{}
			for _, a := range pump1() {
				if a.State == "closed" {
					closes[a.Episode] = append(closes[a.Episode], a)
				}
			}
			for _, e := range []record.Alert{e1, e2} {
				cs := closes[e.Episode]
				if len(cs) != 1 {
					t.Fatalf("episode %s: %d closes %+v, want one", e.Episode, len(cs), cs)
				}
				c := cs[0]
				if c.Reason != episodes.Reason || c.Update < 1 || c.Model != e.Model || c.Severity == "" || !strings.HasPrefix(c.ID, "a-") {
					t.Fatalf("episode %s closed by %+v", e.Episode, c)
				}
			}
			if e1.Episode == e2.Episode {
				t.Fatal("the anomaly that went on after the restart kept the closed episode's id")
			}
		})
	}
}

// TestSilentStreamsOrphanClosedAfterRestart: a real vigil process opens an
// episode and is killed; it comes back with the stream on a source that
// says nothing (an MQTT topic nobody publishes on, as a sensor that died
// with the process) and episode.orphan_after 2s. The episode is closed
// once that wait has passed, with the reason naming the silence.
func TestSilentStreamsOrphanClosedAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto and vigil processes stopped and started: not in -short")
	}
	b, cfgPath, logPath, pump1 := anomalousPump(t)

	p := startVigil(t, "", cfgPath, logPath)
	waitFor(t, 60*time.Second, func() bool { return len(pump1("open")) > 0 })
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	opened := pump1("open")[0]

	rewrite(t, cfgPath, "  - name: events\n", fmt.Sprintf("  - {name: quiet, type: mqtt, mqtt: {broker: %q, topics: [\"plant/quiet/#\"]}}\n  - name: events\n", b.URL()))
	rewrite(t, cfgPath, "{name: pump1, source: sim,", "{name: pump1, source: quiet, episode: {orphan_after: 2s},")
	start := time.Now()
	startVigil(t, "", cfgPath, logPath)
	var closed record.Alert
	waitFor(t, 60*time.Second, func() bool {
		for _, c := range pump1("closed") {
			if c.Episode == opened.Episode {
				closed = c
				return true
			}
		}
		return false
	})
	if closed.Reason != episodes.SilentReason || closed.Update < 1 || closed.Model != opened.Model || !strings.HasPrefix(closed.ID, "a-") {
		t.Fatalf("episode %s closed by %+v", opened.Episode, closed)
	}
	if d := closed.TS.Sub(start); d < 2*time.Second {
		t.Fatalf("closed %v after the restart, before its 2s wait", d)
	}
}
