package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/daemon"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = dispatch(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestDashDashVersionPrintsTheVersion(t *testing.T) {
	code, out, _ := runCLI(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "vigil "+version+" ") || !strings.Contains(out, "TensorFlow Lite") {
		t.Fatalf("vigil --version: code %d, %q", code, out)
	}
}

// withSystemConfig points systemConfig at path for the test.
func withSystemConfig(t *testing.T, path string) {
	old := systemConfig
	systemConfig = path
	t.Cleanup(func() { systemConfig = old })
}

func TestRunDefaultsToTheSystemConfigWhenItExists(t *testing.T) {
	t.Setenv("VIGIL_CONFIG", "")
	dir := t.TempDir()
	sys := filepath.Join(dir, "vigil.yaml")
	withSystemConfig(t, sys)
	if got := defaultConfigFile(); got != "" {
		t.Fatalf("without the file: default config %q, want none", got)
	}
	if err := os.WriteFile(sys, []byte("device_id: from-system-file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := defaultConfigFile(); got != sys {
		t.Fatalf("default config %q, want %q", got, sys)
	}
	f := runFlags{config: defaultConfigFile(), overrides: map[string]*string{}}
	cfg, err := loadConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DeviceID != "from-system-file" {
		t.Fatalf("vigil run without --config read device_id %q, want the system file's", cfg.DeviceID)
	}
	t.Setenv("VIGIL_CONFIG", filepath.Join(dir, "other.yaml"))
	if got := defaultConfigFile(); got != filepath.Join(dir, "other.yaml") {
		t.Fatalf("VIGIL_CONFIG set: default config %q", got)
	}
}

func TestConfigPrintRedactsSecrets(t *testing.T) {
	t.Setenv("VIGIL_CONFIG", "")
	withSystemConfig(t, filepath.Join(t.TempDir(), "absent.yaml"))
	dir := t.TempDir()
	path := filepath.Join(dir, "vigil.yaml")
	cfg := `device_id: print-test-01
http: {token: tok-SECRET-1}
mqtt: {broker: "tcp://user:pw-SECRET-2@127.0.0.1:1883", password: pw-SECRET-3, username: user}
amplitude: {api_key: key-SECRET-4}
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIGIL_DIFY_API_KEY", "dify-SECRET-5")
	code, out, errOut := runCLI(t, "config", "print", path)
	if code != 0 {
		t.Fatalf("config print: code %d: %s", code, errOut)
	}
	if strings.Contains(out, "SECRET") {
		t.Fatalf("config print leaked a secret:\n%s", out)
	}
	for _, want := range []string{"device_id: print-test-01", "token: '[redacted]'", "api_key: '[redacted]'",
		"broker: tcp://user:redacted@127.0.0.1:1883", "listen: 127.0.0.1:8787", "max_bytes: 256MiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("config print lacks %q:\n%s", want, out)
		}
	}
	// Without a file: the defaults.
	code, out, _ = runCLI(t, "config", "print")
	if code != 0 || !strings.Contains(out, "built-in defaults") {
		t.Fatalf("config print without a file: code %d\n%s", code, out)
	}
	if code, _, _ := runCLI(t, "config", "show"); code != 2 {
		t.Fatalf("config show: code %d, want 2 (usage)", code)
	}
}

func TestCompletionScriptsParse(t *testing.T) {
	for _, sh := range []string{"bash", "zsh"} {
		code, out, _ := runCLI(t, "completion", sh)
		if code != 0 || !strings.Contains(out, "check-config") || !strings.Contains(out, "completion") {
			t.Fatalf("completion %s: code %d\n%s", sh, code, out)
		}
		if _, err := exec.LookPath(sh); err != nil {
			continue
		}
		f := filepath.Join(t.TempDir(), "c."+sh)
		os.WriteFile(f, []byte(out), 0o644)
		if b, err := exec.Command(sh, "-n", f).CombinedOutput(); err != nil {
			t.Fatalf("%s -n: %v\n%s", sh, err, b)
		}
	}
	if code, _, _ := runCLI(t, "completion", "fish"); code != 2 {
		t.Fatalf("completion fish: code %d, want 2", code)
	}
}

// TestPackagedDeviceConfig: the config the packages install reads sensors/#
// from the broker on 127.0.0.1:1883, publishes there, embeds no broker, runs
// no simulator, and builds with the default models.
func TestPackagedDeviceConfig(t *testing.T) {
	models, _ := filepath.Abs("../models")
	t.Setenv("VIGIL_MODELS_DIR", models)
	t.Setenv("VIGIL_DATA_DIR", t.TempDir())
	cfg, err := loadConfig(runFlags{config: "../cross/dist/vigil.yaml", overrides: map[string]*string{}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MQTT.EmbeddedBroker.Listen != "" || cfg.BrokerURL() != "tcp://127.0.0.1:1883" {
		t.Fatalf("broker %q, embedded %q: want the local broker and none embedded", cfg.BrokerURL(), cfg.MQTT.EmbeddedBroker.Listen)
	}
	var bus *config.Source
	for i, s := range cfg.Sources {
		if s.Type == "simulator" {
			t.Fatalf("source %q is a simulator", s.Name)
		}
		if s.Type == "mqtt" {
			bus = &cfg.Sources[i]
		}
	}
	if bus == nil || len(bus.MQTT.Topics) != 1 || bus.MQTT.Topics[0] != "sensors/#" || cfg.SourceBrokerURL(bus.MQTT) != "tcp://127.0.0.1:1883" {
		t.Fatalf("mqtt source %+v: want sensors/# on the local broker", bus)
	}
	for _, st := range cfg.Streams {
		if st.Learn.Samples == 0 {
			t.Errorf("stream %s does not learn its baseline", st.Name)
		}
	}
	if ps := daemon.Check(cfg); len(ps) > 0 {
		t.Fatal(ps)
	}
}
