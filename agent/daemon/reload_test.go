package daemon

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/record"
)

// TestRestartOnlyNamesTheChangedKeys: the settings of the parts that live
// as long as the process are named by their key paths, secrets included;
// the generation's settings are not.
func TestRestartOnlyNamesTheChangedKeys(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(*config.Config)
		want   []string
	}{
		{"nothing", func(*config.Config) {}, nil},
		{"device id", func(c *config.Config) { c.DeviceID = "other-device" }, []string{"device_id"}},
		{"prefix and broker", func(c *config.Config) { c.MQTT.Prefix, c.MQTT.Broker = "fleet", "tcp://x:1883" },
			[]string{"mqtt.broker", "mqtt.prefix"}},
		{"a secret", func(c *config.Config) { c.MQTT.Password = "new" }, []string{"mqtt.password"}},
		{"embedded broker", func(c *config.Config) { c.MQTT.EmbeddedBroker.Listen = "127.0.0.1:1884" }, []string{"mqtt.embedded_broker.listen"}},
		{"a lane", func(c *config.Config) { c.Buffer.Lanes.Alert.Priority++ }, []string{"buffer.lanes.alert.priority"}},
		{"listen", func(c *config.Config) { c.HTTP.Listen = "127.0.0.1:9" }, []string{"http.listen"}},
		{"dify", func(c *config.Config) { c.Dify.Inputs = map[string]string{"a": "b"} }, []string{"dify.inputs"}},
		{"streams, sources, models and http's event settings reload", func(c *config.Config) {
			c.ModelsDir, c.HTTP.CORSOrigins = "/elsewhere", []string{"https://kiosk"}
			c.Streams = append(c.Streams, config.Stream{Name: "new"})
			c.Sources = nil
		}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old := config.Default()
			old.DeviceID = "device-01"
			cur := config.Default()
			cur.DeviceID = "device-01"
			tt.change(cur)
			if got := restartOnly(old, cur); !slices.Equal(got, tt.want) {
				t.Fatalf("restartOnly = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReloadKeepsTheOldGenerationWhenTheNewConfigIsBroken(t *testing.T) {
	cfgPath, _ := testConfig(t, 100, "")
	d, _ := startDaemon(t, cfgPath)
	old := d.current()
	if err := rewriteAndReload(t, d, cfgPath, "model: pump8", "model: no-such-model"); err == nil || !strings.Contains(err.Error(), "no-such-model") {
		t.Fatalf("reload with a missing model: %v, want an error naming it", err)
	}
	if d.current() != old {
		t.Fatal("a failed reload replaced the running generation")
	}
	if err := rewriteAndReload(t, d, cfgPath, "model: no-such-model", "model: pump8"); err != nil {
		t.Fatalf("reload with the good config: %v", err)
	}
	if d.current() == old {
		t.Fatal("a good reload kept the old generation")
	}
}

// TestReloadAppliesNothingThatNeedsARestart (issue 14, item 9): a reload
// whose config changes device_id (and, beside it, a stream) applies none of
// it and says which keys need a restart; once the restart-only key is back,
// the stream's change reloads.
func TestReloadAppliesNothingThatNeedsARestart(t *testing.T) {
	cfgPath, _ := testConfig(t, 100, "")
	d, _ := startDaemon(t, cfgPath)
	old := d.current()
	rewrite(t, cfgPath, "device_id: test-device-01", "device_id: test-device-02")
	err := rewriteAndReload(t, d, cfgPath, "max_lateness: 0s}", "max_lateness: 0s, threshold: 123}")
	var re *RestartError
	if !errors.As(err, &re) || !slices.Equal(re.Keys, []string{"device_id"}) || !strings.Contains(err.Error(), "device_id") {
		t.Fatalf("reload: %v, want a RestartError naming device_id", err)
	}
	if d.current() != old {
		t.Fatal("a reload that needs a restart replaced the running generation")
	}
	if th := d.Stats().Streams["pump1"].Threshold; th == 123 {
		t.Fatal("the stream's threshold of the refused config was applied")
	}
	if dev := d.Health().Device; dev != "test-device-01" {
		t.Fatalf("device %q after a refused reload", dev)
	}

	// device_id as it runs: the threshold reloads.
	if err := rewriteAndReload(t, d, cfgPath, "device_id: test-device-02", "device_id: test-device-01"); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if th := d.Stats().Streams["pump1"].Threshold; th != 123 {
		t.Fatalf("threshold %v after the reload, want 123", th)
	}
}

// TestReloadKeepsStreamState (issue 14, item 8): a reload whose streams did
// not change keeps a learning stream's warm-up samples, and the counters
// only grow.
func TestReloadKeepsStreamState(t *testing.T) {
	cfgPath, _ := testConfig(t, 300, "")
	// A simulator feeds a stream that learns (and never has enough samples
	// to train): its samples go on after the reload, on the same timeline.
	withSimulator(t, cfgPath, "  - {name: learner, source: sim, model: pump8, learn: {samples: 100000000}}")
	d, _ := startDaemon(t, cfgPath)
	waitFor(t, 60*time.Second, func() bool { return d.Stats().Streams["learner"].Learned >= 100 })
	before := d.Stats()
	if err := d.Reload(context.Background()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	// The new generation starts with what the old one had: the learner's
	// samples, every counter (read before the reload, they can only have
	// grown since).
	after := d.Stats()
	if l := after.Streams["learner"]; l.Learned < before.Streams["learner"].Learned || l.State != "learning" {
		t.Fatalf("learner after the reload: %+v, before %+v: want its samples kept", l, before.Streams["learner"])
	}
	if after.Inputs < before.Inputs || after.Scores < before.Scores || after.Alerts < before.Alerts ||
		after.DropTotal() < before.DropTotal() || after.Streams["pump1"].Windows < before.Streams["pump1"].Windows {
		t.Fatalf("counters went back: before %+v, after %+v", before, after)
	}
	// And it goes on learning.
	waitFor(t, 60*time.Second, func() bool { return d.Stats().Streams["learner"].Learned >= after.Streams["learner"].Learned+100 })
}

// TestReloadDuringAnEpisodeOpensNoSecondOne (issue 14, item 8): a stream
// in an ongoing anomaly (a threshold every window exceeds) goes on with the
// same episode after a reload: one "open" alert, not two.
func TestReloadDuringAnEpisodeOpensNoSecondOne(t *testing.T) {
	cfgPath, dataDir := testConfig(t, 100, "")
	withSimulator(t, cfgPath, "  - {name: hot, source: sim, model: pump8, threshold: 0.000001}")
	d, stop := startDaemon(t, cfgPath)
	waitFor(t, 60*time.Second, func() bool { return d.Stats().Streams["hot"].Alerts >= 1 })
	if err := d.Reload(context.Background()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	// Well past the hysteresis (2 of 3 windows) after the reload.
	w := d.Stats().Streams["hot"].Windows
	waitFor(t, 60*time.Second, func() bool { return d.Stats().Streams["hot"].Windows >= w+10 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var opens []record.Alert
	for _, a := range readAll[record.Alert](t, reopen(t, dataDir), record.LaneAlert) {
		if a.Stream == "hot" && a.State == "open" {
			opens = append(opens, a)
		}
	}
	if len(opens) != 1 {
		t.Fatalf("%d open alerts for one ongoing anomaly across a reload: %+v", len(opens), opens)
	}
}
