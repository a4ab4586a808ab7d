package config

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/template"
	"time"

	"github.com/vigil-edge/vigil/agent/forward/amplitude"
	"github.com/vigil-edge/vigil/agent/forward/dify"
)

// The methods in this file give the values that follow from other keys
// (a client id from the device id, a URL from a region), so every part of
// Vigil derives them the same way. They read the config as it is after all
// layers have been applied.

// ClientID is mqtt.client_id, or vigil-<device_id> when it is empty.
func (c *Config) ClientID() string {
	if c.MQTT.ClientID != "" {
		return c.MQTT.ClientID
	}
	return "vigil-" + c.DeviceID
}

// BrokerURL is the broker Vigil publishes to: mqtt.broker, else the embedded
// broker (tcp://<listen>, a wildcard host replaced by 127.0.0.1), else "" —
// MQTT is off.
func (c *Config) BrokerURL() string {
	if c.MQTT.Broker != "" {
		return c.MQTT.Broker
	}
	if len(c.MQTT.Brokers) > 0 {
		return c.MQTT.Brokers[0]
	}
	l := c.MQTT.EmbeddedBroker.Listen
	if l == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(l)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "tcp://" + net.JoinHostPort(host, port)
}

// SourceBrokerURL is the broker an mqtt source subscribes to: its own broker,
// else BrokerURL.
// Brokers are the brokers Vigil publishes to, in the order they are tried:
// mqtt.brokers, else the one of BrokerURL, else none.
func (c *Config) Brokers() []string {
	if len(c.MQTT.Brokers) > 0 {
		return c.MQTT.Brokers
	}
	if u := c.BrokerURL(); u != "" {
		return []string{u}
	}
	return nil
}

// SourceBrokers are the brokers an MQTT source subscribes to, in order:
// its own, else those Vigil publishes to.
func (c *Config) SourceBrokers(s *MQTTSource) []string {
	if s != nil && len(s.Brokers) > 0 {
		return s.Brokers
	}
	if s != nil && s.Broker != "" {
		return []string{s.Broker}
	}
	return c.Brokers()
}

func (c *Config) SourceBrokerURL(s *MQTTSource) string {
	if s != nil && s.Broker != "" {
		return s.Broker
	}
	return c.BrokerURL()
}

// Source returns the source with the given name, or nil.
func (c *Config) Source(name string) *Source {
	for i := range c.Sources {
		if c.Sources[i].Name == name {
			return &c.Sources[i]
		}
	}
	return nil
}

// Stream returns the stream with the given name, or nil.
func (c *Config) Stream(name string) *Stream {
	for i := range c.Streams {
		if c.Streams[i].Name == name {
			return &c.Streams[i]
		}
	}
	return nil
}

// streamsOf returns the names of the streams that read a source.
func (c *Config) streamsOf(source string) []string {
	var out []string
	for _, st := range c.Streams {
		if st.Source == source {
			out = append(out, st.Name)
		}
	}
	return out
}

// ModelFiles returns the paths of a model's files in models_dir: the
// flatbuffer and the manifest.
func (c *Config) ModelFiles(model string) (tflite, manifest string) {
	base := filepath.Join(c.ModelsDir, model)
	return base + ".tflite", base + ".json"
}

// WorkerCount is inference.workers, or the number of CPUs when it is 0.
func (in Inference) WorkerCount() int {
	if in.Workers > 0 {
		return in.Workers
	}
	return runtime.NumCPU()
}

// readSecretFile reads a secret from a file, without surrounding white space
// (files usually end with a newline).
func readSecretFile(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return "", fmt.Errorf("read secret %s: %w", name, err)
	}
	if len(b) > maxSecretBytes {
		return "", fmt.Errorf("read secret %s: larger than %d bytes", name, maxSecretBytes)
	}
	return strings.TrimSpace(string(b)), nil
}

// maxSecretBytes bounds a secret file; a bigger one is the wrong file.
const maxSecretBytes = 64 << 10

func readSecret(s Secret, file string) (Secret, error) {
	if file == "" {
		return s, nil
	}
	v, err := readSecretFile(file)
	return Secret(v), err
}

// ReadPassword returns mqtt.password, or the contents of mqtt.password_file.
func (m MQTT) ReadPassword() (Secret, error) { return readSecret(m.Password, m.PasswordFile) }

// ReadToken returns http.token, or the contents of http.token_file.
func (h HTTP) ReadToken() (Secret, error) { return readSecret(h.Token, h.TokenFile) }

// ReadAPIKey returns amplitude.api_key, or the contents of api_key_file.
func (a Amplitude) ReadAPIKey() (Secret, error) { return readSecret(a.APIKey, a.APIKeyFile) }

// ReadAPIKey returns dify.api_key, or the contents of api_key_file.
func (d Dify) ReadAPIKey() (Secret, error) { return readSecret(d.APIKey, d.APIKeyFile) }

// On reports whether the Amplitude forwarder runs: enabled true, or auto
// with an API key (or key file) set.
func (a Amplitude) On() bool { return a.Enabled.Resolve(a.APIKey != "" || a.APIKeyFile != "") }

// URL is the endpoint to post to: amplitude.endpoint, else the host of the
// region with the path of the api (HTTP V2 /2/httpapi or Batch /batch), as
// the forwarder computes it.
func (a Amplitude) URL() string {
	return amplitude.Options{Endpoint: a.Endpoint, Region: a.Region, API: amplitude.API(a.API)}.URL()
}

// On reports whether the Dify forwarder runs: enabled true, or auto with an
// API key (or key file) set.
func (d Dify) On() bool { return d.Enabled.Resolve(d.APIKey != "" || d.APIKeyFile != "") }

// DifyUser is dify.user, or vigil-<device_id> when it is empty.
func (c *Config) DifyUser() string {
	if c.Dify.User != "" {
		return c.Dify.User
	}
	return "vigil-" + c.DeviceID
}

// TemplateData is what a dify.inputs template sees (see dify.TemplateData).
type TemplateData = dify.TemplateData

// TemplateFuncs are the functions dify.inputs templates may call besides
// text/template's own (see dify.TemplateFuncs).
func TemplateFuncs() template.FuncMap { return dify.TemplateFuncs() }

// ParseInputs parses dify.inputs into templates, as validation did. A missing
// field is an error at execution.
func (d Dify) ParseInputs() (map[string]*template.Template, error) { return dify.ParseInputs(d.Inputs) }

func parseInput(name, text string) (*template.Template, error) { return dify.ParseInput(name, text) }

// sampleAlertID is the id in the sample alert that validation renders each
// input with.
const sampleAlertID = "pump-01.pump1.1700000000000.pump8-3"

// renderInput parses a template and runs it on a sample alert, which catches
// misspelt fields and wrong argument types.
func renderInput(name, text string) (string, error) {
	t, err := parseInput(name, text)
	if err != nil {
		return "", err
	}
	end := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	data := TemplateData{
		ID: sampleAlertID, Seq: 42, Device: "pump-01", Stream: "pump1", Kind: KindSensor,
		Time: end, WindowStart: end.Add(-6 * time.Second), WindowEnd: end,
		Score: 0.91, Threshold: 0.5, Severity: "major", Episode: "ep-1",
		Model: "pump8", ModelVersion: "3", TopFeatures: []string{"a1", "p1", "t1"},
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}
