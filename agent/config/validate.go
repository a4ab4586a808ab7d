package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
	"github.com/vigil-edge/vigil/agent/publish"
	"github.com/vigil-edge/vigil/agent/source"
)

// validator collects problems. Each problem names its key path and, when
// known, where the value came from.
type validator struct {
	c     *Config
	errs  Problems
	warns Problems
}

// where says where the value at path came from. A key the file does not set
// gets the line of the nearest enclosing key that it does, where it belongs.
func (v *validator) where(path string) string {
	if w, ok := v.c.where[path]; ok {
		return w
	}
	for {
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			return ""
		}
		path = path[:i]
		if w, ok := v.c.where[path]; ok && strings.HasPrefix(w, "line ") {
			return w
		}
	}
}

func (v *validator) errf(path, format string, args ...any) {
	v.errs = append(v.errs, Problem{Path: path, Where: v.where(path), Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) warnf(path, format string, args ...any) {
	v.warns = append(v.warns, Problem{Path: path, Where: v.where(path), Msg: fmt.Sprintf(format, args...), Warning: true})
}

// Validate checks the configuration and returns every error and every
// warning. Vigil must not run with errors; warnings are worth a log line. It
// reads the file system: model files, secret files, TLS files and replay
// files must exist and be readable.
func (c *Config) Validate() (errs, warns Problems) {
	v := &validator{c: c}
	v.top()
	v.http()
	v.inference()
	v.buffer()
	v.mqtt()
	v.sources()
	v.streams()
	v.amplitude()
	v.dify()
	v.models()
	return v.errs, v.warns
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// placeholderIDs are ids Amplitude rejects.
var placeholderIDs = []string{"null", "none", "nil", "undefined", "unknown", "n/a", "na", "empty", "00000000-0000-0000-0000-000000000000"}

func (v *validator) top() {
	c := v.c
	switch id := c.DeviceID; {
	case id == "":
		v.errf("device_id", "required (set it in the file or with VIGIL_DEVICE_ID)")
	case utf8.RuneCountInString(id) < 5:
		v.errf("device_id", "%q is shorter than 5 characters, Amplitude's minimum id length", id)
	case !nameRE.MatchString(id):
		v.errf("device_id", "%q may only have letters, digits, '.', '_' and '-'", id)
	case slices.Contains(placeholderIDs, strings.ToLower(id)):
		v.errf("device_id", "%q is a placeholder id that Amplitude rejects", id)
	case len(id) > 64:
		v.errf("device_id", "longer than 64 characters")
	}
	v.dir("data_dir", c.DataDir, false)
	if len(c.Streams) > 0 {
		v.dir("models_dir", c.ModelsDir, true)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		v.errf("log.level", "%q is not a level (want debug, info, warn or error)", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		v.errf("log.format", "%q is not a format (want text or json)", c.Log.Format)
	}
	if c.Health.Interval <= 0 {
		v.errf("health.interval", "must be positive, got %s", formatDuration(c.Health.Interval))
	} else if c.Health.Interval < time.Second {
		v.warnf("health.interval", "%s is very often for a heartbeat", formatDuration(c.Health.Interval))
	}
}

// dir checks a directory key; must says whether it has to exist already.
func (v *validator) dir(path, dir string, must bool) {
	if dir == "" {
		v.errf(path, "required")
		return
	}
	fi, err := os.Stat(dir)
	switch {
	case err == nil && !fi.IsDir():
		v.errf(path, "%q is not a directory", dir)
	case os.IsNotExist(err) && must:
		v.errf(path, "directory %q not found", dir)
	case err != nil && !os.IsNotExist(err):
		v.errf(path, "%v", err)
	}
}

// file checks that a file key names a readable regular file.
func (v *validator) file(path, name string) bool {
	f, err := os.Open(name)
	if err != nil {
		if os.IsNotExist(err) {
			v.errf(path, "file %q not found", name)
		} else {
			v.errf(path, "%v", err)
		}
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		v.errf(path, "%v", err)
		return false
	}
	if !fi.Mode().IsRegular() {
		v.errf(path, "%q is not a regular file", name)
		return false
	}
	return true
}

// secret checks a secret and its *_file twin.
func (v *validator) secret(path string, s Secret, filePath, file string) {
	if s != "" && file != "" {
		v.errf(filePath, "set together with %s; set only one", path)
		return
	}
	if file == "" {
		return
	}
	if !v.file(filePath, file) {
		return
	}
	if got, err := readSecretFile(file); err != nil {
		v.errf(filePath, "%v", err)
	} else if got == "" {
		v.errf(filePath, "file %q is empty", file)
	}
	if fi, err := os.Stat(file); err == nil && fi.Mode().Perm()&0o002 != 0 {
		v.warnf(filePath, "file %q is writable by every user (mode %04o): anyone on the device can replace the secret; chmod o-w (0600 is usual)", file, fi.Mode().Perm())
	}
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.errf(path, "must be positive, got %s", formatDuration(d))
	}
}

func (v *validator) nonNegative(path string, d time.Duration) {
	if d < 0 {
		v.errf(path, "must not be negative, got %s", formatDuration(d))
	}
}

func (v *validator) atLeast(path string, n, lo int) {
	if n < lo {
		v.errf(path, "must be at least %d, got %d", lo, n)
	}
}

func (v *validator) oneOf(path, got string, want ...string) bool {
	if slices.Contains(want, got) {
		return true
	}
	switch {
	case got == "":
		v.errf(path, "required (want %s)", orList(want))
	case len(want) == 1:
		v.errf(path, "%q is not supported (want %s)", got, want[0])
	default:
		v.errf(path, "%q is not one of %s", got, orList(want))
	}
	return false
}

func (v *validator) finite(path string, f float64) bool {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		v.errf(path, "must be a finite number, got %v", f)
		return false
	}
	return true
}

func (v *validator) probability(path string, f float64) {
	if v.finite(path, f) && (f < 0 || f > 1) {
		v.errf(path, "must be in [0, 1], got %v", f)
	}
}

func orList(ws []string) string {
	if len(ws) == 1 {
		return ws[0]
	}
	return strings.Join(ws[:len(ws)-1], ", ") + " or " + ws[len(ws)-1]
}

// hostPort checks a host:port listen address and reports whether it is
// loopback only.
func (v *validator) hostPort(path, addr string) (loopback, ok bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errf(path, "%q is not host:port (e.g. 127.0.0.1:8787)", addr)
		return false, false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.errf(path, "%q has an invalid port %q", addr, port)
		return false, false
	}
	return isLoopback(host), true
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// url checks a URL against the allowed schemes; needPort lists the schemes
// that need an explicit port.
func (v *validator) url(path, raw string, schemes, needPort []string) (*url.URL, bool) {
	if !strings.Contains(raw, "://") {
		v.errf(path, "%q has no scheme (e.g. %s://%s)", raw, schemes[0], raw)
		return nil, false
	}
	u, err := url.Parse(raw)
	if err != nil {
		v.errf(path, "%q is not a URL: %v", raw, unwrapURLError(err))
		return nil, false
	}
	if u.Scheme == "" {
		v.errf(path, "%q has no scheme (e.g. %s://%s)", raw, schemes[0], raw)
		return nil, false
	}
	if !slices.Contains(schemes, strings.ToLower(u.Scheme)) {
		v.errf(path, "unsupported scheme %q in %q (want %s)", u.Scheme, raw, orList(schemes))
		return nil, false
	}
	if u.Hostname() == "" {
		v.errf(path, "%q has no host", raw)
		return nil, false
	}
	if u.User != nil {
		v.errf(path, "%q has credentials in it; URLs are logged, so set them in their own keys", u.Redacted())
		return nil, false
	}
	if u.Port() == "" && slices.Contains(needPort, strings.ToLower(u.Scheme)) {
		v.errf(path, "%q has no port (e.g. %s://%s:1883)", raw, u.Scheme, u.Hostname())
		return nil, false
	}
	return u, true
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func (v *validator) http() {
	h := v.c.HTTP
	if h.Listen != "" {
		if loopback, ok := v.hostPort("http.listen", h.Listen); ok && !loopback && h.Token == "" && h.TokenFile == "" {
			v.warnf("http.listen", "%q is reachable from the network and http.token is not set: anyone there can post events", h.Listen)
		}
	}
	for i, o := range h.CORSOrigins {
		p := fmt.Sprintf("http.cors_origins[%d]", i)
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			v.errf(p, "%q is not an origin (want scheme://host[:port], e.g. https://kiosk.example.com, or *)", o)
		}
	}
	if h.MaxBodyBytes <= 0 {
		v.errf("http.max_body_bytes", "must be positive")
	}
	v.nonNegative("http.max_clock_skew", h.MaxClockSkew)
	if h.Durable {
		v.positive("http.journal_retention", h.JournalRetention)
	}
	v.positive("http.read_header_timeout", h.ReadHeaderTimeout)
	v.positive("http.read_timeout", h.ReadTimeout)
	v.positive("http.write_timeout", h.WriteTimeout)
	v.positive("http.idle_timeout", h.IdleTimeout)
	v.atLeast("http.max_connections", h.MaxConnections, 1)
	if h.ReadHeaderTimeout > 0 && h.ReadTimeout > 0 && h.ReadHeaderTimeout > h.ReadTimeout {
		v.warnf("http.read_header_timeout", "%s is longer than http.read_timeout (%s), which bounds the header too", formatDuration(h.ReadHeaderTimeout), formatDuration(h.ReadTimeout))
	}
	v.secret("http.token", h.Token, "http.token_file", h.TokenFile)
	if h.AllowQueryToken && h.Token == "" && h.TokenFile == "" {
		v.warnf("http.allow_query_token", "set, but there is no http.token to accept")
	}
}

func (v *validator) inference() {
	in := v.c.Inference
	v.atLeast("inference.workers", in.Workers, 0)
	v.atLeast("inference.threads", in.Threads, 1)
	v.atLeast("inference.max_batch", in.MaxBatch, 1)
	v.nonNegative("inference.batch_wait", in.BatchWait)
}

func (v *validator) buffer() {
	b := v.c.Buffer
	if v.oneOf("buffer.kind", b.Kind, "badger", "memory") && b.Kind == "memory" {
		v.warnf("buffer.kind", "memory: scores and alerts not yet delivered are lost on restart")
	}
	if b.MemoryBudget <= 0 {
		v.errf("buffer.memory_budget", "must be positive")
	}
	if b.MaxBytes <= 0 {
		v.errf("buffer.max_bytes", "must be positive")
	}
	if b.MaxRecordBytes <= 0 {
		v.errf("buffer.max_record_bytes", "must be positive")
	} else if b.MaxBytes > 0 && b.MaxRecordBytes > b.MaxBytes {
		v.errf("buffer.max_record_bytes", "%s is more than buffer.max_bytes %s", b.MaxRecordBytes, b.MaxBytes)
	}
	v.positive("buffer.gc_interval", b.GCInterval)
	batched := false
	for _, l := range []struct {
		name string
		lane Lane
	}{{"score", b.Lanes.Score}, {"alert", b.Lanes.Alert}, {"advice", b.Lanes.Advice}} {
		p := "buffer.lanes." + l.name
		v.atLeast(p+".priority", l.lane.Priority, 0)
		v.oneOf(p+".durability", l.lane.Durability, "sync", "batched")
		batched = batched || l.lane.Durability == "batched"
		if l.lane.MaxBytes < 0 {
			v.errf(p+".max_bytes", "must not be negative")
		} else if b.MaxBytes > 0 && l.lane.MaxBytes > b.MaxBytes {
			v.errf(p+".max_bytes", "lane cap %s is more than the total cap buffer.max_bytes %s", l.lane.MaxBytes, b.MaxBytes)
		}
		v.oneOf(p+".on_full", l.lane.OnFull, "evict", "reject")
		v.nonNegative(p+".ttl", l.lane.TTL)
	}
	if batched {
		v.positive("buffer.sync_interval", b.SyncInterval)
	}
	if b.Lanes.Alert.Priority <= b.Lanes.Score.Priority {
		v.warnf("buffer.lanes.alert.priority", "not above buffer.lanes.score.priority: after an outage alerts wait behind the score backlog")
	}
}

// publishReconnectMin is the publisher's first retry delay;
// mqtt.reconnect_max may not be below it.
const publishReconnectMin = publish.DefaultReconnectMin

// The broker URL schemes are mqttconn's, the clients' own.
var (
	mqttSchemes = mqttconn.Schemes()
	portSchemes = mqttconn.PortSchemes()
)

func (v *validator) mqtt() {
	m := v.c.MQTT
	tlsBroker, brokerOK := false, m.Broker == "" && len(m.Brokers) == 0
	if m.Broker != "" && len(m.Brokers) > 0 {
		v.errf("mqtt.brokers", "set together with mqtt.broker: set one or the other")
	}
	if m.Broker != "" {
		if u, ok := v.url("mqtt.broker", m.Broker, mqttSchemes, portSchemes); ok {
			tlsBroker, brokerOK = mqttconn.IsTLS(u.Scheme), true
		}
	}
	for i, b := range m.Brokers {
		if u, ok := v.url(fmt.Sprintf("mqtt.brokers[%d]", i), b, mqttSchemes, portSchemes); ok {
			tlsBroker, brokerOK = tlsBroker || mqttconn.IsTLS(u.Scheme), true
		}
	}
	if m.PersistentSession && len(m.Brokers) == 0 && m.Broker == "" {
		v.warnf("mqtt.persistent_session", "set without mqtt.broker or mqtt.brokers: the embedded broker keeps no session across restarts")
	}
	if id := v.c.ClientID(); len(id) > 23 {
		v.warnf("mqtt.client_id", "%q is longer than 23 characters, which MQTT 3.1.1 brokers may refuse", id)
	}
	v.secret("mqtt.password", m.Password, "mqtt.password_file", m.PasswordFile)
	if (m.Password != "" || m.PasswordFile != "") && m.Username == "" {
		v.errf("mqtt.password", "set but mqtt.username is empty (MQTT sends a password only with a user name)")
	}
	v.tls(m.TLS, strings.Join(append(slices.DeleteFunc([]string{m.Broker}, func(b string) bool { return b == "" }), m.Brokers...), ", "), tlsBroker || !brokerOK)
	switch p := m.Prefix; {
	case p == "":
		v.errf("mqtt.prefix", "required")
	case strings.ContainsAny(p, "+#\x00"):
		v.errf("mqtt.prefix", "%q has a wildcard (+ or #) or NUL in it", p)
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//"):
		v.errf("mqtt.prefix", "%q has an empty topic level", p)
	case strings.HasPrefix(p, "$"):
		v.errf("mqtt.prefix", "%q starts with $, which brokers reserve", p)
	}
	if m.KeepAlive < time.Second {
		v.errf("mqtt.keepalive", "must be at least 1s, got %s (a dead connection must be detected)", formatDuration(m.KeepAlive))
	}
	v.positive("mqtt.connect_timeout", m.ConnectTimeout)
	for _, q := range []struct {
		lane string
		qos  int
	}{{"score", m.QoS.Score}, {"alert", m.QoS.Alert}, {"advice", m.QoS.Advice}} {
		if q.qos < 0 || q.qos > 2 {
			v.errf("mqtt.qos."+q.lane, "must be 0, 1 or 2, got %d", q.qos)
		}
	}
	if m.QoS.Alert == 0 {
		v.warnf("mqtt.qos.alert", "0: alerts are acknowledged when written, not on PUBACK, and can be lost")
	}
	v.atLeast("mqtt.max_inflight", m.MaxInflight, 1)
	v.atLeast("mqtt.replay_rate", m.ReplayRate, 0)
	if m.StatusInterval < 0 {
		v.errf("mqtt.status_interval", "must not be negative, got %s (0 publishes the status once per connection)", formatDuration(m.StatusInterval))
	}
	if m.ReconnectMax < publishReconnectMin {
		v.errf("mqtt.reconnect_max", "%v is below the first retry delay of %v", m.ReconnectMax, publishReconnectMin)
	}
	if l := m.EmbeddedBroker.Listen; l != "" {
		if loopback, ok := v.hostPort("mqtt.embedded_broker.listen", l); ok && !loopback {
			v.warnf("mqtt.embedded_broker.listen", "%q is reachable from the network and the embedded broker has no authentication", l)
		}
	}
	seen := map[string]bool{}
	for i, name := range m.Commands.Allow {
		p := fmt.Sprintf("mqtt.commands.allow[%d]", i)
		switch {
		case !slices.Contains(commandNames, name):
			v.errf(p, "unknown command %q (known: %s)", name, strings.Join(commandNames, ", "))
		case seen[name]:
			v.warnf(p, "%q is listed twice", name)
		}
		seen[name] = true
	}
	for i, name := range m.Commands.RequireSignature {
		if !slices.Contains(commandNames, name) {
			v.errf(fmt.Sprintf("mqtt.commands.require_signature[%d]", i), "unknown command %q (known: %s)", name, strings.Join(commandNames, ", "))
		}
	}
}

func (v *validator) tls(t TLS, broker string, tlsBroker bool) {
	if t.CertFile != "" && t.KeyFile == "" {
		v.errf("mqtt.tls.cert_file", "set but mqtt.tls.key_file is empty")
	}
	if t.KeyFile != "" && t.CertFile == "" {
		v.errf("mqtt.tls.key_file", "set but mqtt.tls.cert_file is empty")
	}
	if t.CAFile != "" && v.file("mqtt.tls.ca_file", t.CAFile) {
		if pem, err := os.ReadFile(t.CAFile); err != nil {
			v.errf("mqtt.tls.ca_file", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			v.errf("mqtt.tls.ca_file", "no PEM certificate in %q", t.CAFile)
		}
	}
	if t.CertFile != "" && t.KeyFile != "" {
		okCert := v.file("mqtt.tls.cert_file", t.CertFile)
		okKey := v.file("mqtt.tls.key_file", t.KeyFile)
		if okCert && okKey {
			if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
				v.errf("mqtt.tls.cert_file", "cannot load the key pair: %v", err)
			}
		}
	}
	if t.InsecureSkipVerify {
		v.warnf("mqtt.tls.insecure_skip_verify", "the broker's certificate is not verified")
	}
	if (t.CAFile != "" || t.CertFile != "" || t.ServerName != "" || t.InsecureSkipVerify) && broker != "" && !tlsBroker {
		v.warnf("mqtt.tls", "set but mqtt.broker %q is not a TLS URL (ssl://, tls://, mqtts:// or wss://), so it is not used", broker)
	}
}

var sourceTypes = []string{SourceSimulator, SourceMQTT, SourceHTTP, SourceReplay}

// distinctNames checks the list at p of what's names: none empty, none
// twice.
func (v *validator) distinctNames(p, what string, names []string) {
	seen := map[string]bool{}
	for i, n := range names {
		switch {
		case n == "":
			v.errf(fmt.Sprintf("%s[%d]", p, i), "empty %s name", what)
		case seen[n]:
			v.errf(fmt.Sprintf("%s[%d]", p, i), "%s %q is listed twice", what, n)
		}
		seen[n] = true
	}
}

// uniqueName checks the name of list item p (kind's list, at index i):
// required, of letters, digits, '.', '_' and '-', and not in names, where
// it goes.
func (v *validator) uniqueName(p, kind, name string, i int, names map[string]int) {
	switch {
	case name == "":
		v.errf(p+".name", "required")
	case !nameRE.MatchString(name):
		v.errf(p+".name", "%q may only have letters, digits, '.', '_' and '-'", name)
	default:
		if j, dup := names[name]; dup {
			v.errf(p+".name", "duplicate %s name %q (also %ss[%d])", kind, name, kind, j)
		} else {
			names[name] = i
		}
	}
}

func (v *validator) sources() {
	c := v.c
	names := map[string]int{}
	httpAt := -1
	for i := range c.Sources {
		s := &c.Sources[i]
		p := fmt.Sprintf("sources[%d]", i)
		v.uniqueName(p, "source", s.Name, i, names)
		if s.Type == "" {
			v.errf(p+".type", "required (want %s)", orList(sourceTypes))
		} else if !slices.Contains(sourceTypes, s.Type) {
			v.errf(p+".type", "unknown source type %q (want %s)", s.Type, orList(sourceTypes))
		}
		blocks := []struct {
			name  string
			given bool
		}{{SourceSimulator, s.Simulator != nil}, {SourceMQTT, s.MQTT != nil}, {SourceReplay, s.Replay != nil}}
		for _, b := range blocks {
			if b.given && b.name != s.Type {
				v.errf(p+"."+b.name, "block given but the type is %q", s.Type)
			}
		}
		if !slices.Contains(sourceTypes, s.Type) {
			continue
		}
		if reading := c.streamsOf(s.Name); len(reading) == 0 && s.Name != "" {
			v.warnf(p, "no stream reads source %q", s.Name)
		}
		switch s.Type {
		case SourceSimulator:
			v.simulator(p+".simulator", s.Simulator)
		case SourceMQTT:
			if s.MQTT == nil {
				v.errf(p+".mqtt", "missing: a source of type mqtt needs an mqtt block with topics")
				continue
			}
			v.mqttSource(p+".mqtt", s)
		case SourceHTTP:
			if httpAt >= 0 {
				v.errf(p+".type", "a second http source (sources[%d] is one): all events arrive on one endpoint", httpAt)
			}
			httpAt = i
			if c.HTTP.Listen == "" {
				v.errf(p+".type", "http sources need http.listen")
			}
		case SourceReplay:
			if s.Replay == nil {
				v.errf(p+".replay", "missing: a source of type replay needs a replay block with a path")
				continue
			}
			v.replay(p+".replay", s)
		}
	}
}

func (v *validator) simulator(p string, s *SimulatorSource) {
	if s == nil {
		return
	}
	if v.finite(p+".rate", s.Rate) && s.Rate <= 0 {
		v.errf(p+".rate", "must be positive, got %v", s.Rate)
	}
	v.atLeast(p+".users", s.Users, 0)
	if s.Faults {
		v.positive(p+".fault_interval", s.FaultInterval)
	}
}

func (v *validator) mqttSource(p string, s *Source) {
	m := s.MQTT
	if m.Broker != "" && len(m.Brokers) > 0 {
		v.errf(p+".brokers", "set together with %s.broker: set one or the other", p)
	}
	for i, b := range m.Brokers {
		v.url(fmt.Sprintf("%s.brokers[%d]", p, i), b, mqttSchemes, portSchemes)
	}
	if m.Broker != "" {
		v.url(p+".broker", m.Broker, mqttSchemes, portSchemes)
	} else if len(m.Brokers) == 0 && v.c.BrokerURL() == "" {
		v.errf(p+".broker", "empty, and so are mqtt.broker, mqtt.brokers and mqtt.embedded_broker.listen: there is no broker to subscribe to")
	}
	if len(m.Topics) == 0 {
		v.errf(p+".topics", "required: at least one topic filter")
	}
	for i, t := range m.Topics {
		if err := checkTopicFilter(t); err != nil {
			v.errf(fmt.Sprintf("%s.topics[%d]", p, i), "%v", err)
		}
	}
	if m.QoS < 0 || m.QoS > 2 {
		v.errf(p+".qos", "must be 0, 1 or 2, got %d", m.QoS)
	}
	v.oneOf(p+".format", m.Format, "json", "events")
	v.oneOf(p+".retained", m.Retained, "ignore", "take")
	v.nonNegative(p+".max_clock_skew", m.MaxClockSkew)
	v.timeFormat(p+".fields.timestamp_format", m.Fields.TimestampFormat)
	for _, ch := range sortedKeys(m.Fields.Values) {
		if ch == "" || m.Fields.Values[ch] == "" {
			v.errf(p+".fields.values", "channel %q → field %q: neither may be empty", ch, m.Fields.Values[ch])
		}
	}
	switch f := m.StreamFrom; {
	case f == "topic":
	case strings.HasPrefix(f, "field:") && len(f) > len("field:"):
	default:
		v.errf(p+".stream_from", "%q is not topic or field:<name>", f)
	}
	if m.StreamFrom == "topic" {
		v.topicsReachStreams(p, s)
	}
	for _, k := range sortedKeys(m.StreamMap) {
		target := m.StreamMap[k]
		kp := p + ".stream_map." + k
		st := v.c.Stream(target)
		switch {
		case k == "":
			v.errf(p+".stream_map", "empty key")
		case st == nil:
			v.errf(kp, "unknown stream %q", target)
		case st.Source != s.Name:
			v.errf(kp, "stream %q reads source %q, not %q", target, st.Source, s.Name)
		}
	}
}

// topicsReachStreams warns about a subscription whose messages can reach
// no stream: with several streams reading the source, a topic goes to the
// stream_map entry that matches it, else to the stream named by its last
// level, and a filter that can match neither loses every message as
// unknown_stream. (With one stream, every topic reaches it.)
func (v *validator) topicsReachStreams(p string, s *Source) {
	reading := v.c.streamsOf(s.Name)
	if len(reading) < 2 {
		return
	}
	for i, t := range s.MQTT.Topics {
		if checkTopicFilter(t) != nil || filterReaches(t, s.MQTT.StreamMap, reading) {
			continue
		}
		last := t[strings.LastIndexByte(t, '/')+1:]
		v.warnf(fmt.Sprintf("%s.topics[%d]", p, i), "%q reaches no stream: no stream_map entry matches it and its last level %q names none of the streams reading source %q (%s), so every message on it is dropped as unknown_stream; add a stream_map entry", t, last, s.Name, strings.Join(reading, ", "))
	}
}

// filterReaches reports whether some topic matching filter routes to one of
// streams, by streamMap or by its last level.
func filterReaches(filter string, streamMap map[string]string, streams []string) bool {
	for k, st := range streamMap {
		if slices.Contains(streams, st) && filtersOverlap(filter, k) {
			return true
		}
	}
	last := filter[strings.LastIndexByte(filter, '/')+1:]
	return last == "+" || last == "#" || slices.Contains(streams, last)
}

// filtersOverlap reports whether some topic matches both MQTT topic
// filters.
func filtersOverlap(a, b string) bool {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; ; i++ {
		switch {
		case i < len(as) && as[i] == "#", i < len(bs) && bs[i] == "#":
			return true
		case i == len(as) && i == len(bs):
			return true
		case i == len(as):
			return len(bs) == i+1 && bs[i] == "#" // "a" and "a/#"
		case i == len(bs):
			return len(as) == i+1 && as[i] == "#"
		case as[i] != "+" && bs[i] != "+" && as[i] != bs[i]:
			return false
		}
	}
}

// checkTopicFilter checks an MQTT topic filter.
func checkTopicFilter(t string) error {
	if t == "" {
		return fmt.Errorf("empty topic filter")
	}
	if strings.ContainsRune(t, 0) || !utf8.ValidString(t) {
		return fmt.Errorf("topic filter %q is not valid UTF-8 without NUL", t)
	}
	levels := strings.Split(t, "/")
	for i, l := range levels {
		switch {
		case strings.Contains(l, "#") && (l != "#" || i != len(levels)-1):
			return fmt.Errorf("topic filter %q: # must be a whole level and the last", t)
		case strings.Contains(l, "+") && l != "+":
			return fmt.Errorf("topic filter %q: + must be a whole level", t)
		}
	}
	return nil
}

var timeFormats = []string{"auto", "unix", "unix_ms", "unix_us", "unix_ns", "rfc3339"}

// timeFormat accepts the named formats (and "" and unix_s, which the
// decoders read as auto and unix) or a Go time layout.
func (v *validator) timeFormat(p, f string) {
	if f == "" || f == "unix_s" || slices.Contains(timeFormats, strings.ToLower(f)) {
		return
	}
	if err := source.CheckTimeLayout(f); err != nil {
		v.errf(p, "%q is neither one of %s nor a Go time layout such as \"2006-01-02 15:04:05\" (as a layout: %v)", f, strings.Join(timeFormats, ", "), err)
	}
}

func (v *validator) replay(p string, s *Source) {
	r := s.Replay
	if r.Path == "" {
		v.errf(p+".path", "required")
	} else {
		v.file(p+".path", r.Path)
	}
	format := r.Format
	if format == "" {
		switch strings.ToLower(filepath.Ext(r.Path)) {
		case ".csv":
			format = "csv"
		case ".jsonl", ".ndjson":
			format = "jsonl"
		default:
			if r.Path != "" {
				v.errf(p+".format", "empty, and the extension of %q says neither csv nor jsonl", r.Path)
			}
		}
	} else {
		v.oneOf(p+".format", format, "csv", "jsonl")
	}
	if r.Delimiter != "" && (format != "csv" || utf8.RuneCountInString(r.Delimiter) != 1 || r.Delimiter == "\"" || r.Delimiter == "\n" || r.Delimiter == "\r") {
		v.errf(p+".delimiter", "%q: want one character other than a quote or newline, for csv", r.Delimiter)
	}
	if v.finite(p+".speed", r.Speed) && r.Speed < 0 {
		v.errf(p+".speed", "must not be negative, got %v", r.Speed)
	}
	v.timeFormat(p+".timestamp_format", r.TimestampFormat)
	v.distinctNames(p+".columns", "column", r.Columns)
	reading := v.c.streamsOf(s.Name)
	switch {
	case r.Stream != "":
		st := v.c.Stream(r.Stream)
		if st == nil {
			v.errf(p+".stream", "unknown stream %q", r.Stream)
		} else if st.Source != s.Name {
			v.errf(p+".stream", "stream %q reads source %q, not %q", r.Stream, st.Source, s.Name)
		}
	case len(reading) > 1:
		v.errf(p+".stream", "empty, but %d streams read source %q: name the one that gets the samples", len(reading), s.Name)
	}
}

func (v *validator) streams() {
	c := v.c
	names := map[string]int{}
	sourceNames := make([]string, 0, len(c.Sources))
	for _, s := range c.Sources {
		sourceNames = append(sourceNames, s.Name)
	}
	_, modelsErr := os.Stat(c.ModelsDir)
	for i := range c.Streams {
		st := &c.Streams[i]
		p := fmt.Sprintf("streams[%d]", i)
		v.uniqueName(p, "stream", st.Name, i, names)
		kindOK := v.oneOf(p+".kind", st.Kind, KindSensor, KindBehaviour)
		src := c.Source(st.Source)
		switch {
		case st.Source == "":
			v.errf(p+".source", "required")
		case src == nil:
			v.errf(p+".source", "unknown source %q (sources: %s)", st.Source, strings.Join(sourceNames, ", "))
		case kindOK:
			v.streamOnSource(p, st, src)
		}
		switch {
		case st.Kind == KindBehaviour && st.Key == "":
			v.errf(p+".key", "required for behaviour streams (e.g. user_id)")
		case st.Kind == KindSensor && st.Key != "":
			v.errf(p+".key", "only behaviour streams have a key")
		}
		if st.Kind == KindBehaviour && len(st.Channels) > 0 {
			v.errf(p+".channels", "only sensor streams have channels; behaviour features come from the manifest")
		}
		v.distinctNames(p+".channels", "channel", st.Channels)
		switch {
		case st.Model == "":
			v.errf(p+".model", "required: a model name in models_dir")
		case !nameRE.MatchString(st.Model):
			v.errf(p+".model", "%q is not a model name (letters, digits, '.', '_' and '-'; no path)", st.Model)
		case modelsErr == nil:
			tflite, manifest := c.ModelFiles(st.Model)
			if _, err := os.Stat(manifest); err != nil {
				v.errf(p+".model", "file %q not found", manifest)
			} else if _, err := os.Stat(tflite); err != nil && st.Learn.Samples == 0 {
				v.errf(p+".model", "file %q not found (set learn.samples to learn it on the device)", tflite)
			}
		}
		if v.finite(p+".threshold", st.Threshold) && st.Threshold < 0 {
			v.errf(p+".threshold", "must not be negative, got %v", st.Threshold)
		}
		h := st.Hysteresis
		switch {
		case h.K <= 0:
			v.errf(p+".hysteresis.k", "must be at least 1, got %d", h.K)
		case h.N <= 0:
			v.errf(p+".hysteresis.n", "must be at least 1, got %d", h.N)
		case h.K > h.N:
			v.errf(p+".hysteresis.k", "%d is more than n (%d): k of the last n windows", h.K, h.N)
		}
		v.nonNegative(p+".cooldown", st.Cooldown)
		v.nonNegative(p+".episode.close_after", st.Episode.CloseAfter)
		v.nonNegative(p+".episode.orphan_after", st.Episode.OrphanAfter)
		sv := st.Severity
		if v.finite(p+".severity.warning", sv.Warning) && v.finite(p+".severity.major", sv.Major) && v.finite(p+".severity.critical", sv.Critical) {
			switch {
			case sv.Warning <= 0:
				v.errf(p+".severity.warning", "must be positive, got %v", sv.Warning)
			case !(sv.Warning < sv.Major && sv.Major < sv.Critical):
				v.errf(p+".severity", "bands must increase: warning %v < major %v < critical %v", sv.Warning, sv.Major, sv.Critical)
			}
		}
		v.atLeast(p+".top_features", st.TopFeatures, 0)
		v.atLeast(p+".stuck_factor", st.StuckFactor, 0)
		if v.finite(p+".shift_factor", st.ShiftFactor) && st.ShiftFactor < 0 {
			v.errf(p+".shift_factor", "must be ≥ 0 (0 turns the check off), got %v", st.ShiftFactor)
		}
		v.atLeast(p+".learn.samples", st.Learn.Samples, 0)
		if st.Learn.Samples > 0 {
			v.positive(p+".learn.budget", st.Learn.Budget)
			v.oneOf(p+".learn.arch", st.Learn.Arch, learnArchs...)
			v.atLeast(p+".learn.drift_horizon", st.Learn.DriftHorizon, 0)
			v.oneOf(p+".learn.calibrate_on", st.Learn.CalibrateOn, "validation", "train", "train+validation")
			if q := st.Learn.Quantize; q != "" {
				v.oneOf(p+".learn.quantize", q, "int8")
			}
			if f := st.Learn.ThresholdFactor; v.finite(p+".learn.threshold_factor", f) && f <= 0 {
				v.errf(p+".learn.threshold_factor", "must be positive, got %v", f)
			}
		}
		v.nonNegative(p+".max_lateness", st.MaxLateness)
	}
}

// streamOnSource checks that the source can feed a stream of this kind.
func (v *validator) streamOnSource(p string, st *Stream, src *Source) {
	switch {
	case src.Type == SourceHTTP && st.Kind != KindBehaviour:
		v.errf(p+".kind", "%s, but source %q (http) carries behaviour events", st.Kind, src.Name)
	case src.Type == SourceMQTT && src.MQTT != nil && st.Kind == KindSensor && src.MQTT.Format == "events":
		v.errf(p+".kind", "sensor, but source %q (mqtt, format events) carries behaviour events", src.Name)
	case src.Type == SourceMQTT && src.MQTT != nil && st.Kind == KindBehaviour && src.MQTT.Format == "json":
		v.errf(p+".kind", "behaviour, but source %q (mqtt, format json) carries sensor samples; set its format to events", src.Name)
	case src.Type == SourceSimulator && st.Kind == KindBehaviour && src.Simulator != nil && src.Simulator.Users == 0:
		v.errf(p+".source", "source %q simulates no users (simulator.users: 0), so there are no behaviour events", src.Name)
	}
}

func (v *validator) forwarderCommon(p string, minSeverity string, timeout, backoff time.Duration) {
	v.oneOf(p+".min_severity", minSeverity, severityNames...)
	v.positive(p+".timeout", timeout)
	v.positive(p+".max_retry_backoff", backoff)
}

func (v *validator) amplitude() {
	a := v.c.Amplitude
	v.oneOf("amplitude.region", a.Region, "us", "eu")
	v.oneOf("amplitude.api", a.API, "http", "batch")
	if a.Endpoint != "" {
		if u, ok := v.url("amplitude.endpoint", a.Endpoint, []string{"http", "https"}, nil); ok && u.Scheme == "http" && !isLoopback(u.Hostname()) {
			v.warnf("amplitude.endpoint", "plain http to %s sends the API key in clear", u.Hostname())
		}
	}
	v.secret("amplitude.api_key", a.APIKey, "amplitude.api_key_file", a.APIKeyFile)
	v.forwarderCommon("amplitude", a.MinSeverity, a.Timeout, a.MaxRetryBackoff)
	v.probability("amplitude.min_confidence", a.MinConfidence)
	v.positive("amplitude.flush_interval", a.FlushInterval)
	switch {
	case a.MaxBatch < 1:
		v.errf("amplitude.max_batch", "must be at least 1, got %d", a.MaxBatch)
	case a.MaxBatch > 2000:
		v.errf("amplitude.max_batch", "%d is above Amplitude's limit of 2000 events per request", a.MaxBatch)
	}
	if a.Enabled == On && a.APIKey == "" && a.APIKeyFile == "" {
		v.warnf("amplitude", "enabled but no api key (set amplitude.api_key, amplitude.api_key_file or VIGIL_AMPLITUDE_API_KEY)")
	}
}

func (v *validator) dify() {
	d := v.c.Dify
	if u, ok := v.url("dify.base_url", d.BaseURL, []string{"http", "https"}, nil); ok {
		switch {
		case strings.Contains(strings.TrimSuffix(u.Path, "/"), "/workflows"):
			v.errf("dify.base_url", "%q includes an endpoint; give the base, e.g. https://api.dify.ai/v1", d.BaseURL)
		case u.Scheme == "http" && !isLoopback(u.Hostname()):
			v.warnf("dify.base_url", "plain http to %s sends the API key in clear", u.Hostname())
		}
		if d.ResponseMode == "blocking" && d.Timeout > 100*time.Second && strings.EqualFold(u.Hostname(), "api.dify.ai") {
			v.warnf("dify.timeout", "Dify Cloud cuts blocking requests after 100s; use response_mode: streaming for longer runs")
		}
	}
	v.secret("dify.api_key", d.APIKey, "dify.api_key_file", d.APIKeyFile)
	v.forwarderCommon("dify", d.MinSeverity, d.Timeout, d.MaxRetryBackoff)
	v.probability("dify.min_confidence", d.MinConfidence)
	v.oneOf("dify.response_mode", d.ResponseMode, "blocking", "streaming")
	v.nonNegative("dify.cooldown", d.Cooldown)
	v.atLeast("dify.max_concurrency", d.MaxConcurrency, 1)
	if d.User != "" && !printable(d.User) {
		v.errf("dify.user", "has control characters")
	}
	hasID := false
	for _, k := range sortedKeys(d.Inputs) {
		p := "dify.inputs." + k
		if k == "" {
			v.errf("dify.inputs", "an input with an empty name")
			continue
		}
		got, err := renderInput(k, d.Inputs[k])
		if err != nil {
			v.errf(p, "%v", err)
			continue
		}
		hasID = hasID || strings.Contains(got, sampleAlertID)
	}
	if !hasID {
		v.errf("dify.inputs", "no input contains the alert id {{.ID}}; Vigil needs it to find an earlier run before retrying")
	}
	if d.Enabled == On && d.APIKey == "" && d.APIKeyFile == "" {
		v.warnf("dify", "enabled but no api key (set dify.api_key, dify.api_key_file or VIGIL_DIFY_API_KEY)")
	}
}
