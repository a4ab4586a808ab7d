package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the testdata/*.bad.txt golden files")

const examplePath = "../vigil.example.yaml"

// envMap returns an env lookup over a map.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// TestBadConfigs checks the problems reported for each testdata/NAME.bad.yaml
// against NAME.bad.txt: errors first, then warnings prefixed "warning: ".
// Run with -update to rewrite the golden files.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.bad.yaml")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".bad.yaml")
		t.Run(name, func(t *testing.T) {
			errs, warns := check(file, nil, nil)
			if len(errs)+len(warns) == 0 {
				t.Fatalf("%s: no problems found", file)
			}
			got := errs.String() + warns.String()
			golden := strings.TrimSuffix(file, ".yaml") + ".txt"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s problems differ\n--- got\n%s--- want\n%s", file, got, want)
			}
		})
	}
}

// modelsDir returns the repository's models directory when the default
// models are there, else a directory of stub files (validation checks only
// that the files exist).
// writeFile writes content to the file name in dir, with mode perm, and
// returns its path.
func writeFile(t testing.TB, dir, name, content string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	return path
}

func modelsDir(t *testing.T) string {
	t.Helper()
	real := filepath.Join("..", "..", "models")
	if _, err := os.Stat(filepath.Join(real, "pump8.json")); err == nil {
		return real
	}
	t.Logf("no default models in %s yet: checking against stubs", real)
	return "testdata/models"
}

func TestExampleIsValid(t *testing.T) {
	c, err := Load(examplePath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set("models_dir", modelsDir(t)); err != nil {
		t.Fatal(err)
	}
	errs, warns := c.Validate()
	if len(errs)+len(warns) > 0 {
		t.Errorf("example config has problems:\n%s%s", errs, warns)
	}
	if c.BrokerURL() != "tcp://127.0.0.1:1883" {
		t.Errorf("BrokerURL = %q, want the embedded broker", c.BrokerURL())
	}
	if c.Amplitude.On() || c.Dify.On() {
		t.Error("forwarders are on without API keys")
	}
	// The example sets every key to its default except where the demo
	// differs, so it doubles as a check of Default().
	d := Default()
	for _, k := range Keys() {
		if k.Env == "" || k.Path == "device_id" || k.Path == "data_dir" || k.Path == "models_dir" || k.Path == "mqtt.embedded_broker.listen" {
			continue
		}
		got, _ := c.Get(k.Path)
		want, _ := d.Get(k.Path)
		if got != want {
			t.Errorf("example %s = %q, default is %q", k.Path, got, want)
		}
	}
}

// TestExampleSwitchesOnForwarders is issue 7's "two environment variables
// and nothing else".
func TestExampleSwitchesOnForwarders(t *testing.T) {
	c, err := Load(examplePath, envMap(map[string]string{
		"VIGIL_AMPLITUDE_API_KEY":  "amp-key-123",
		"VIGIL_AMPLITUDE_ENDPOINT": "http://127.0.0.1:9/2/httpapi",
		"VIGIL_DIFY_API_KEY":       "app-dify-123",
		"VIGIL_DIFY_BASE_URL":      "http://127.0.0.1:9/v1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set("models_dir", modelsDir(t)); err != nil {
		t.Fatal(err)
	}
	if errs, warns := c.Validate(); len(errs)+len(warns) > 0 {
		t.Fatalf("problems:\n%s%s", errs, warns)
	}
	if !c.Amplitude.On() || !c.Dify.On() {
		t.Fatal("forwarders not on with their API keys set")
	}
	if got := c.Amplitude.URL(); got != "http://127.0.0.1:9/2/httpapi" {
		t.Errorf("Amplitude.URL = %q", got)
	}
	if k, _ := c.Dify.ReadAPIKey(); k.Reveal() != "app-dify-123" {
		t.Errorf("Dify key = %q", k.Reveal())
	}
}

// TestExampleDocumentsEveryKey checks that every key, and the environment
// variable of every scalar key, appears in the annotated example.
func TestExampleDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, k := range Keys() {
		leaf := k.Path[strings.LastIndexAny(k.Path, ".]")+1:]
		if !regexp.MustCompile(`(?m)^[\s#-]*(\{.*)?\b` + regexp.QuoteMeta(leaf) + `:`).MatchString(text) {
			t.Errorf("example does not show key %s", k.Path)
		}
		if k.Env != "" && !strings.Contains(text, k.Env) {
			t.Errorf("example does not name %s for %s", k.Env, k.Path)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte("device_id: pump-01\n"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if errs, _ := c.Validate(); len(errs) > 0 {
		t.Fatalf("defaults plus a device id are not valid:\n%s", errs)
	}
	want := map[string]string{
		"http.listen":          "127.0.0.1:8787",
		"http.max_body_bytes":  "1MiB",
		"buffer.max_bytes":     "256MiB",
		"mqtt.keepalive":       "15s",
		"mqtt.qos.alert":       "1",
		"amplitude.enabled":    "auto",
		"dify.rate_limit":      "6/min",
		"dify.base_url":        "https://api.dify.ai/v1",
		"inference.batch_wait": "5ms",
	}
	for path, w := range want {
		if got, err := c.Get(path); err != nil || got != w {
			t.Errorf("%s = %q, %v; want %q", path, got, err, w)
		}
	}
	if c.ClientID() != "vigil-pump-01" || c.DifyUser() != "vigil-pump-01" {
		t.Errorf("derived ids: %q %q", c.ClientID(), c.DifyUser())
	}
	if c.BrokerURL() != "" {
		t.Errorf("MQTT on by default: %q", c.BrokerURL())
	}
	if got := c.Amplitude.URL(); got != "https://api2.amplitude.com/2/httpapi" {
		t.Errorf("Amplitude.URL = %q", got)
	}
	c.Amplitude.Region, c.Amplitude.API = "eu", "batch"
	if got := c.Amplitude.URL(); got != "https://api.eu.amplitude.com/batch" {
		t.Errorf("Amplitude.URL eu batch = %q", got)
	}
}

// TestListItemDefaults checks that unset keys of list items get their
// defaults and that set ones, zero values included, are kept.
func TestListItemDefaults(t *testing.T) {
	c, err := Parse([]byte(`
device_id: pump-01
sources:
  - {name: a, type: simulator}
  - {name: b, type: simulator, simulator: {faults: false, seed: 0}}
  - {name: c, type: mqtt, mqtt: {topics: [x]}}
streams:
  - {name: s, source: a, model: m, hysteresis: {k: 1}, severity: {critical: 9}}
`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b, m := c.Sources[0].Simulator, c.Sources[1].Simulator, c.Sources[2].MQTT
	if a == nil || a.Rate != 100 || !a.Faults || a.Seed != 1 || a.Users != 20 {
		t.Errorf("simulator without a block: %+v", a)
	}
	if b.Faults || b.Seed != 0 || b.Rate != 100 {
		t.Errorf("explicit zero values lost: %+v", b)
	}
	if c.Sources[0].MQTT != nil || c.Sources[0].Replay != nil {
		t.Error("blocks of other types allocated")
	}
	if m.Format != "json" || m.StreamFrom != "topic" || m.Fields.TimestampFormat != "auto" {
		t.Errorf("mqtt block defaults: %+v", m)
	}
	s := c.Streams[0]
	if s.Kind != KindSensor || s.Hysteresis != (Hysteresis{K: 1, N: 3}) || s.Severity != (Severity{1, 1.5, 9}) || s.Cooldown != 0 || s.Episode.CloseAfter != 5*time.Second {
		t.Errorf("stream defaults: %+v", s)
	}
}

// TestListsAndMapsReplace checks that a list or map in the file replaces the
// default rather than merging with it.
func TestListsAndMapsReplace(t *testing.T) {
	c, err := Parse([]byte(`
device_id: pump-01
mqtt: {commands: {allow: [status]}}
dify: {inputs: {id: "{{.ID}}"}}
`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.MQTT.Commands.Allow, ","); got != "status" {
		t.Errorf("allow = %q", got)
	}
	if len(c.Dify.Inputs) != 1 {
		t.Errorf("inputs merged with the default: %v", c.Dify.Inputs)
	}
	if len(Default().Dify.Inputs) != 2 {
		t.Error("Default changed")
	}
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	_, err := Parse([]byte(`
device_id: pump-01
sources: [{name: p, type: simulator}]
x-stream: &base {source: p, model: pump8, cooldown: 1m}
streams:
  - <<: *base
    name: s1
  - <<: *base
    name: s2
    cooldown: 2m
`), "", nil)
	if err == nil {
		t.Fatal("an unknown top-level key (x-stream) was accepted")
	}
	c, err := Parse([]byte(`
device_id: pump-01
sources: [{name: p, type: simulator}]
streams:
  - &base {name: s1, source: p, model: pump8, cooldown: 1m}
  - <<: *base
    name: s2
    top_features: 0
`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	s2 := c.Streams[1]
	if s2.Name != "s2" || s2.Source != "p" || s2.Cooldown != time.Minute || s2.TopFeatures != 0 || s2.Hysteresis.N != 3 {
		t.Errorf("merged stream: %+v", s2)
	}
}

func TestRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "vigil.yaml", "device_id: pump-01\ndata_dir: data\nmqtt: {password_file: /abs/pw}\n", 0o644)
	c, err := Load(path, envMap(map[string]string{"VIGIL_HTTP_TOKEN_FILE": "rel/token"}))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "data"); c.DataDir != want {
		t.Errorf("data_dir = %q, want %q", c.DataDir, want)
	}
	if want := filepath.Join(dir, "models"); c.ModelsDir != want {
		t.Errorf("default models_dir = %q, want %q", c.ModelsDir, want)
	}
	if c.MQTT.PasswordFile != "/abs/pw" {
		t.Errorf("absolute path changed: %q", c.MQTT.PasswordFile)
	}
	if c.HTTP.TokenFile != "rel/token" {
		t.Errorf("a path from the environment was resolved against the file: %q", c.HTTP.TokenFile)
	}
}

// TestEnv checks the variables the issues name, and that each scalar key's
// variable sets it.
func TestEnv(t *testing.T) {
	tests := []struct {
		env, path, value, want string
	}{
		{"VIGIL_DEVICE_ID", "device_id", "gw-0042", "gw-0042"},
		{"VIGIL_DATA_DIR", "data_dir", "/data/vigil", "/data/vigil"},
		{"VIGIL_MQTT_BROKER", "mqtt.broker", "ssl://broker:8883", "ssl://broker:8883"},
		{"VIGIL_MQTT_PASSWORD", "mqtt.password", "pw-123456", "[redacted]"},
		{"VIGIL_AMPLITUDE_ENDPOINT", "amplitude.endpoint", "http://127.0.0.1:9/2/httpapi", "http://127.0.0.1:9/2/httpapi"},
		{"VIGIL_AMPLITUDE_API_KEY", "amplitude.api_key", "amp-123", "[redacted]"},
		{"VIGIL_DIFY_BASE_URL", "dify.base_url", "http://dify.local/v1", "http://dify.local/v1"},
		{"VIGIL_DIFY_API_KEY", "dify.api_key", "app-123", "[redacted]"},
		{"VIGIL_HTTP_LISTEN", "http.listen", "0.0.0.0:9000", "0.0.0.0:9000"},
		{"VIGIL_LOG_LEVEL", "log.level", "debug", "debug"},
		{"VIGIL_HTTP_TOKEN", "http.token", "tok-123", "[redacted]"},
		{"VIGIL_MQTT_QOS_SCORE", "mqtt.qos.score", "1", "1"},
		{"VIGIL_MQTT_TLS_INSECURE_SKIP_VERIFY", "mqtt.tls.insecure_skip_verify", "true", "true"},
		{"VIGIL_BUFFER_MAX_BYTES", "buffer.max_bytes", "1GB", "1000000000"},
		{"VIGIL_BUFFER_LANES_SCORE_MAX_BYTES", "buffer.lanes.score.max_bytes", "64MiB", "64MiB"},
		{"VIGIL_HEALTH_INTERVAL", "health.interval", "1m30s", "1m30s"},
		{"VIGIL_HTTP_CORS_ORIGINS", "http.cors_origins", "https://a.example, https://b.example", "https://a.example,https://b.example"},
		{"VIGIL_AMPLITUDE_ENABLED", "amplitude.enabled", "false", "false"},
		{"VIGIL_DIFY_RATE_LIMIT", "dify.rate_limit", "10/h", "10/h"},
		{"VIGIL_STREAMS", "", "x", ""}, // file only: ignored (and reported by UnknownEnv)
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			c, err := Parse([]byte("device_id: pump-01\n"), "", envMap(map[string]string{tt.env: tt.value}))
			if err != nil {
				t.Fatal(err)
			}
			if tt.path == "" {
				return
			}
			if EnvName(tt.path) != tt.env {
				t.Errorf("EnvName(%q) = %q", tt.path, EnvName(tt.path))
			}
			got, err := c.Get(tt.path)
			if err != nil || got != tt.want {
				t.Errorf("%s=%q: %s = %q, %v; want %q", tt.env, tt.value, tt.path, got, err, tt.want)
			}
		})
	}
	c, _ := Parse(nil, "", envMap(map[string]string{"VIGIL_MQTT_PASSWORD": "pw-123456"}))
	if c.MQTT.Password.Reveal() != "pw-123456" {
		t.Errorf("password = %q", c.MQTT.Password.Reveal())
	}
}

func TestEnvErrors(t *testing.T) {
	_, err := Parse([]byte("device_id: pump-01\n"), "", envMap(map[string]string{
		"VIGIL_MQTT_KEEPALIVE":    "15",
		"VIGIL_MQTT_QOS_ALERT":    "one",
		"VIGIL_BUFFER_MAX_BYTES":  "lots",
		"VIGIL_AMPLITUDE_ENABLED": "maybe",
		"VIGIL_LOG_LEVEL":         "", // empty: ignored
	}))
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v, want *Error", err)
	}
	want := `buffer.max_bytes: invalid size "lots": want a number of bytes or a number with a unit such as 256MiB or 1GB (from VIGIL_BUFFER_MAX_BYTES)
mqtt.keepalive: invalid duration "15": missing unit (want e.g. 10s, 500ms, 1m30s) (from VIGIL_MQTT_KEEPALIVE)
mqtt.qos.alert: invalid integer "one" (from VIGIL_MQTT_QOS_ALERT)
amplitude.enabled: invalid value "maybe": want auto, true or false (from VIGIL_AMPLITUDE_ENABLED)
`
	if got := cerr.Problems.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestValidateNamesEnvOrigin checks that a problem with a value from the
// environment says so.
func TestValidateNamesEnvOrigin(t *testing.T) {
	c, err := Parse([]byte("device_id: pump-01\nmqtt:\n  broker: tcp://a:1883\n"), "", envMap(map[string]string{"VIGIL_MQTT_BROKER": "http://b:1883"}))
	if err != nil {
		t.Fatal(err)
	}
	errs, _ := c.Validate()
	want := `mqtt.broker: unsupported scheme "http" in "http://b:1883" (want tcp, ssl, tls, mqtt, mqtts, ws or wss) (from VIGIL_MQTT_BROKER)` + "\n"
	if errs.String() != want {
		t.Errorf("got %s want %s", errs, want)
	}
}

// TestPrecedence checks defaults < file < environment < Set (flags).
func TestPrecedence(t *testing.T) {
	file := []byte("device_id: from-file\nlog: {level: warn}\nmqtt: {prefix: fileprefix}\n")
	env := envMap(map[string]string{"VIGIL_LOG_LEVEL": "error", "VIGIL_DEVICE_ID": "from-env"})

	c, err := Parse(nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(stage, path, want string) {
		t.Helper()
		if got, _ := c.Get(path); got != want {
			t.Errorf("%s: %s = %q, want %q", stage, path, got, want)
		}
	}
	check("defaults", "log.level", "info")
	check("defaults", "mqtt.prefix", "vigil")

	if c, err = Parse(file, "", nil); err != nil {
		t.Fatal(err)
	}
	check("file", "log.level", "warn")
	check("file", "mqtt.prefix", "fileprefix")
	check("file", "mqtt.keepalive", "15s")

	if c, err = Parse(file, "", env); err != nil {
		t.Fatal(err)
	}
	check("env", "log.level", "error")
	check("env", "device_id", "from-env")
	check("env", "mqtt.prefix", "fileprefix")

	if err := c.Set("log.level", "debug"); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(map[string]string{"mqtt.prefix": "flagprefix", "health.interval": "3s"}); err != nil {
		t.Fatal(err)
	}
	check("flags", "log.level", "debug")
	check("flags", "mqtt.prefix", "flagprefix")
	check("flags", "health.interval", "3s")
	check("flags", "device_id", "from-env")
}

func TestSetErrors(t *testing.T) {
	c := Default()
	tests := []struct{ path, value, want string }{
		{"mqtt.brokr", "x", `set mqtt.brokr: unknown key "mqtt.brokr" (did you mean "broker"?)`},
		{"nosuch", "x", `set nosuch: unknown key "nosuch"`},
		{"mqtt", "x", `set mqtt: "mqtt" is a block, not a key: set its keys, e.g. mqtt.broker`},
		{"streams", "x", `set streams: "streams" can only be set in the config file`},
		{"sources.name", "x", `set sources.name: "sources" can only be set in the config file`},
		{"dify.inputs", "x", `set dify.inputs: "dify.inputs" can only be set in the config file`},
		{"log.level.x", "x", `set log.level.x: unknown key "log.level.x"`},
		{"inference.workers", "2.5", `set inference.workers: invalid integer "2.5"`},
		{"inference.xnnpack", "yes", `set inference.xnnpack: invalid boolean "yes": want true or false`},
		{"streams[0].threshold", "1", `set streams[0].threshold: "streams" can only be set in the config file`},
	}
	for _, tt := range tests {
		err := c.Set(tt.path, tt.value)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Set(%q, %q) = %v, want %s", tt.path, tt.value, err, tt.want)
		}
	}
	err := c.Apply(map[string]string{"a.b": "1", "log.level": "debug", "mqtt.qos.alert": "x"})
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Problems) != 2 || c.Log.Level != "debug" {
		t.Errorf("Apply = %v", err)
	}
}

func TestKeysAndEnvNames(t *testing.T) {
	seen := map[string]string{}
	n := 0
	for _, k := range Keys() {
		if k.Env == "" {
			continue
		}
		n++
		if other, dup := seen[k.Env]; dup {
			t.Errorf("%s and %s share %s", k.Path, other, k.Env)
		}
		seen[k.Env] = k.Path
		if k.Doc == "" {
			t.Errorf("%s has no doc", k.Path)
		}
		// Every key with a variable can be set and read back.
		c := Default()
		if _, err := c.Get(k.Path); err != nil {
			t.Errorf("Get(%s): %v", k.Path, err)
		}
		if err := c.Set(k.Path, k.Default); err != nil && !k.Secret && k.Default != "" {
			t.Errorf("Set(%s, default %q): %v", k.Path, k.Default, err)
		}
	}
	if n < 60 {
		t.Errorf("only %d keys have environment variables", n)
	}
	for _, want := range []string{"VIGIL_DEVICE_ID", "VIGIL_DATA_DIR", "VIGIL_MQTT_BROKER", "VIGIL_MQTT_PASSWORD", "VIGIL_AMPLITUDE_ENDPOINT", "VIGIL_AMPLITUDE_API_KEY", "VIGIL_DIFY_BASE_URL", "VIGIL_DIFY_API_KEY", "VIGIL_HTTP_LISTEN", "VIGIL_LOG_LEVEL"} {
		if seen[want] == "" {
			t.Errorf("no key for %s", want)
		}
	}
}

func TestUnknownEnv(t *testing.T) {
	got := UnknownEnv([]string{"VIGIL_MQTT_BROKER=x", "VIGIL_MQTT_BROKR=x", "HOME=/root", "VIGIL_SOURCES=y", "VIGIL_LOG_LEVEL="})
	if strings.Join(got, " ") != "VIGIL_MQTT_BROKR VIGIL_SOURCES" {
		t.Errorf("UnknownEnv = %v", got)
	}
	errs, warns := check("testdata/http_open.bad.yaml", nil, []string{"VIGIL_MQTT_BROKR=x"})
	if len(errs) != 0 || !strings.Contains(warns.String(), "warning: environment variable VIGIL_MQTT_BROKR sets no config key") {
		t.Errorf("check: %s%s", errs, warns)
	}
}

func TestCheckUnreadableFile(t *testing.T) {
	errs, _ := check("testdata/nosuch.yaml", nil, nil)
	if len(errs) != 1 || !strings.Contains(errs[0].Msg, "no such file") {
		t.Errorf("errs = %v", errs)
	}
	_, err := Load("testdata/nosuch.yaml", nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load err = %v, want one wrapping os.ErrNotExist", err)
	}
}

func TestErrorMessage(t *testing.T) {
	_, err := Load("testdata/duplicate_keys.bad.yaml", nil)
	want := `config testdata/duplicate_keys.bad.yaml: log.level: duplicate key (first at line 5) (line 6)`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant  %s", err, want)
	}
	_, err = Load("testdata/unknown_keys.bad.yaml", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "config testdata/unknown_keys.bad.yaml: 6 problems:\n\tmqtt.brokr: unknown key") {
		t.Errorf("err = %v", err)
	}
}

// TestSecretsNeverPrinted sets every secret, from the file, the environment
// and a file, and looks for them in every way a config gets printed.
func TestSecretsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "dify.key", "s3cret-dify-from-file\n", 0o600)
	cfgFile := writeFile(t, dir, "vigil.yaml", `
device_id: pump-01
http: {token: s3cret-http-token}
mqtt: {username: u, password: s3cret-mqtt-pw}
dify: {api_key_file: dify.key}
`, 0o644)
	c, err := Load(cfgFile, envMap(map[string]string{"VIGIL_AMPLITUDE_API_KEY": "s3cret-amp-key"}))
	if err != nil {
		t.Fatal(err)
	}
	difyKey, err := c.Dify.ReadAPIKey()
	if err != nil || difyKey.Reveal() != "s3cret-dify-from-file" {
		t.Fatalf("dify key from file = %q, %v", difyKey.Reveal(), err)
	}
	pw, _ := c.MQTT.ReadPassword()

	var out bytes.Buffer
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(y)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "config", c, "key", difyKey, "pw", pw)
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "config", c, "amplitude", c.Amplitude, "key", difyKey)
	fmt.Fprintf(&out, "%v %+v %#v %s %q %x %X %10s\n", c, c, c, difyKey, difyKey, difyKey, difyKey, difyKey)
	fmt.Fprint(&out, *c, difyKey, c.MQTT)
	for _, k := range []string{"http.token", "mqtt.password", "amplitude.api_key"} {
		v, _ := c.Get(k)
		out.WriteString(v)
	}
	out.WriteString(Reference())

	s := out.String()
	for _, secret := range []string{"s3cret", "73336372657"} {
		if strings.Contains(s, secret) {
			i := strings.Index(s, secret)
			t.Fatalf("secret printed: ...%s...", s[max(0, i-80):min(len(s), i+40)])
		}
	}
	if !strings.Contains(s, "[redacted]") {
		t.Error("no [redacted] in the output")
	}
	if Secret("").String() != "" {
		t.Error("an empty secret prints as set")
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		err  string
	}{
		{"0", 0, ""},
		{"4096", 4096, ""},
		{"256MiB", 256 << 20, ""},
		{"256mib", 256 << 20, ""},
		{"1GB", 1e9, ""},
		{"1.5GiB", 3 << 29, ""},
		{"10 KB", 10000, ""},
		{"2TiB", 2 << 40, ""},
		{"7B", 7, ""},
		{"", 0, "empty size"},
		{"-1", 0, `size "-1" is negative`},
		{"1.5B", 0, `invalid size "1.5B": not a whole number of bytes`},
		{"12QB", 0, `invalid size "12QB": unknown unit "QB" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)`},
		{"1M", 0, `invalid size "1M": unknown unit "M" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)`},
		{"MiB", 0, `invalid size "MiB": want a number of bytes or a number with a unit such as 256MiB or 1GB`},
		{"99999999999999999999", 0, `invalid size "99999999999999999999": too large`},
		{"9000000TiB", 0, `invalid size "9000000TiB": too large`},
		{"1e3", 0, `invalid size "1e3": unknown unit "e3" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)`},
		{"1..5MB", 0, `invalid size "1..5MB": bad number "1..5"`},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseByteSize(%q) = %v, %v; want error %s", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %v, %v; want %d", tt.in, got, err, tt.want)
		}
		if back, err := ParseByteSize(got.String()); err != nil || back != got {
			t.Errorf("round trip of %q via %q = %v, %v", tt.in, got.String(), back, err)
		}
	}
}

func TestRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		err  bool
	}{
		{"6/min", Rate{6, time.Minute}, false},
		{"10/s", Rate{10, time.Second}, false},
		{"100/hour", Rate{100, time.Hour}, false},
		{"3/30s", Rate{3, 30 * time.Second}, false},
		{"0", Rate{}, false},
		{"", Rate{}, false},
		{"0/min", Rate{}, false},
		{"6", Rate{}, true},
		{"-1/s", Rate{}, true},
		{"6/fortnight", Rate{}, true},
		{"6/-1s", Rate{}, true},
		{"x/s", Rate{}, true},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseRate(%q) = %v, %v", tt.in, got, err)
		}
		if err == nil {
			if back, err := ParseRate(got.String()); err != nil || back != got {
				t.Errorf("round trip of %q via %q = %v, %v", tt.in, got, back, err)
			}
		}
	}
	if got := (Rate{6, time.Minute}).Interval(); got != 10*time.Second {
		t.Errorf("Interval = %v", got)
	}
}

func TestSwitch(t *testing.T) {
	for in, want := range map[string]Switch{"auto": Auto, "AUTO": Auto, "true": On, "1": On, "false": Off, "0": Off} {
		if got, err := ParseSwitch(in); err != nil || got != want {
			t.Errorf("ParseSwitch(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseSwitch("sometimes"); err == nil {
		t.Error("ParseSwitch accepted sometimes")
	}
	if !Auto.Resolve(true) || Auto.Resolve(false) || !On.Resolve(false) || Off.Resolve(true) {
		t.Error("Resolve")
	}
	c, err := Parse([]byte("dify: {enabled: false, api_key: k}\namplitude: {enabled: true}\n"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Dify.On() || !c.Amplitude.On() {
		t.Error("explicit switches not honoured")
	}
}

func TestDifyTemplates(t *testing.T) {
	ts, err := Default().Dify.ParseInputs()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	err = ts["summary"].Execute(&b, TemplateData{
		ID: "x", Device: "pump-01", Stream: "pump1", Severity: "critical", Score: 2.71828, Threshold: 1,
		Time: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC), TopFeatures: []string{"a1", "p1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "critical anomaly on pump-01/pump1 at 2024-05-06T07:08:09Z: score 2.72, threshold 1; top features: a1, p1"
	if b.String() != want {
		t.Errorf("summary = %q\nwant      %q", b.String(), want)
	}
}

func TestBrokerURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:1883": "tcp://127.0.0.1:1883",
		":1884":          "tcp://127.0.0.1:1884",
		"0.0.0.0:1885":   "tcp://127.0.0.1:1885",
		"[::]:1886":      "tcp://127.0.0.1:1886",
		"[::1]:1887":     "tcp://[::1]:1887",
	} {
		c := Default()
		c.MQTT.EmbeddedBroker.Listen = listen
		if got := c.BrokerURL(); got != want {
			t.Errorf("listen %q: BrokerURL = %q, want %q", listen, got, want)
		}
		src := &MQTTSource{}
		if got := c.SourceBrokerURL(src); got != want {
			t.Errorf("SourceBrokerURL = %q", got)
		}
	}
}

func TestReference(t *testing.T) {
	ref := Reference()
	for _, k := range Keys() {
		if !strings.Contains(ref, "| `"+k.Path+"` |") {
			t.Errorf("reference lacks %s", k.Path)
		}
	}
}

// TestCheckUsesEnvironment checks that Check reads the process environment,
// as `vigil run` would.
func TestCheckUsesEnvironment(t *testing.T) {
	t.Setenv("VIGIL_DEVICE_ID", "pump-env-01")
	if errs, _ := Check("testdata/missing_device_id.bad.yaml"); len(errs) != 0 {
		t.Errorf("errors with VIGIL_DEVICE_ID set:\n%s", errs)
	}
	t.Setenv("VIGIL_DEVICE_ID", "")
	if errs, _ := Check("testdata/missing_device_id.bad.yaml"); len(errs) != 1 {
		t.Errorf("errs = %v, want device_id required", errs)
	}
}

// TestWorldWritableSecretFile: a secret file anyone can write is a warning
// naming the key; one only its owner can write is not.
func TestWorldWritableSecretFile(t *testing.T) {
	dir := t.TempDir()
	key := writeFile(t, dir, "amplitude.key", "amp-key-123\n", 0o600)
	cfgPath := writeFile(t, dir, "vigil.yaml",
		fmt.Sprintf("device_id: pump-01\ndata_dir: %s\namplitude: {api_key_file: %s}\nmqtt: {password_file: %s}\n", dir, key, key), 0o644)
	warned := func() []string {
		_, warns := check(cfgPath, func(string) (string, bool) { return "", false }, nil)
		var out []string
		for _, w := range warns {
			if strings.Contains(w.Msg, "writable by every user") {
				out = append(out, w.Path)
			}
		}
		return out
	}
	if w := warned(); len(w) != 0 {
		t.Fatalf("mode 0600: warnings for %v", w)
	}
	if err := os.Chmod(key, 0o666); err != nil {
		t.Fatal(err)
	}
	if w := warned(); strings.Join(w, " ") != "mqtt.password_file amplitude.api_key_file" {
		t.Fatalf("mode 0666: warnings for %v, want mqtt.password_file and amplitude.api_key_file", w)
	}
}
