// Package mqtttest runs a real mosquitto broker for tests: on a free
// loopback port, in the test's temporary directory, stopped at cleanup. A
// test can stop and restart it on the same port (outages), kill it (crashes),
// give it persistence, a TLS listener that requires client certificates
// signed by a throwaway CA, username/password authentication, and access
// rules changed while it runs (the dynamic security plugin). It also
// has small MQTT client helpers: a connected client, a publisher and a
// Subscriber that collects messages for assertions.
//
// Tests are skipped, with a message saying why, in -short mode and when
// mosquitto is not installed (Debian: apt-get install mosquitto
// mosquitto-clients).
//
//	b := mqtttest.Start(t, mqtttest.Options{})
//	sub := mqtttest.Subscribe(t, b, "vigil/+/alerts/#", 1)
//	... run the code under test against b.URL() ...
//	msgs := sub.WaitN(t, 3, 5*time.Second)
package mqtttest

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/childproc"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// Paths where mosquitto's binaries are looked for (then $PATH).
var (
	mosquittoPaths      = []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"}
	mosquittoPasswdPath = []string{"/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd"}
	mosquittoCtrlPath   = []string{"/usr/bin/mosquitto_ctrl", "/usr/local/bin/mosquitto_ctrl"}
	dynsecPluginPath    = []string{"/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
		"/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so",
		"/usr/local/lib/mosquitto_dynamic_security.so"}
)

// Options configure the broker. The zero value is an anonymous,
// non-persistent, plain-TCP broker.
type Options struct {
	// Persistence keeps sessions and retained messages in the broker's
	// directory across Stop/Start (mosquitto writes them when it stops
	// cleanly; Kill loses what was not saved).
	Persistence bool
	// TLS serves MQTT over TLS (ssl://) with a server certificate from a
	// throwaway CA generated for the test; TLSConfig gives clients the CA.
	TLS bool
	// RequireClientCert, with TLS, makes the broker require a client
	// certificate signed by that CA (and use its CN as the username).
	RequireClientCert bool
	// Users, when not empty, turns anonymous access off and creates a
	// password file with these username → password pairs.
	Users map[string]string
	// DynamicSecurity loads mosquitto's dynamic security plugin, whose
	// access rules a test changes while the broker runs (DynSec): unlike
	// an acl_file, it checks subscriptions, and refuses a denied one with
	// 0x80 in the SUBACK. It starts with one client, the plugin's
	// administrator; other clients are refused until DynSec creates them,
	// anonymous ones included (DynSec setAnonymousGroup lets them in).
	// Not with Users or TLS.
	DynamicSecurity bool
	// ExtraConfig is appended to the generated mosquitto.conf
	// (e.g. "max_queued_messages 10").
	ExtraConfig string
	// Port is the port to listen on; 0 picks a free one.
	Port int
	// StartTimeout bounds the wait for the broker to accept connections
	// (default 10 s).
	StartTimeout time.Duration
}

// Broker is a mosquitto process run for a test.
type Broker struct {
	t    testing.TB
	opts Options
	bin  string
	dir  string
	conf string
	port int
	cert *Certs

	dynsecPlugin, dynsecCtrl string

	proc childproc.Slot
	logs testkit.Buffer // mosquitto's output
}

// lookPath finds a binary in the known paths, then $PATH.
func lookPath(known []string, name string) string {
	for _, p := range known {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}

// Available reports whether mosquitto is installed.
func Available() bool { return lookPath(mosquittoPaths, "mosquitto") != "" }

// Start starts a broker and registers its stop with t.Cleanup. It skips
// the test in -short mode (an integration test) and when mosquitto is not
// installed, and fails it when the broker does not come up.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test with a real mosquitto: skipped in -short mode")
	}
	bin := lookPath(mosquittoPaths, "mosquitto")
	if bin == "" {
		t.Skip("mosquitto is not installed (looked in /usr/sbin and $PATH); apt-get install mosquitto to run this test")
	}
	if opts.RequireClientCert {
		opts.TLS = true
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 10 * time.Second
	}
	b := &Broker{t: t, opts: opts, bin: bin, dir: t.TempDir(), port: opts.Port}
	if opts.TLS {
		certs, err := NewCerts(filepath.Join(b.dir, "certs"))
		if err != nil {
			t.Fatalf("mqtttest: generating certificates: %v", err)
		}
		b.cert = certs
	}
	if len(opts.Users) > 0 {
		if err := b.writePasswords(); err != nil {
			t.Fatalf("mqtttest: %v", err)
		}
	}
	if opts.DynamicSecurity {
		if len(opts.Users) > 0 || opts.TLS {
			t.Fatal("mqtttest: DynamicSecurity goes without Users (create them with DynSec) and without TLS")
		}
		if err := b.initDynSec(); err != nil {
			t.Fatalf("mqtttest: %v", err)
		}
	}
	t.Cleanup(b.Stop)
	// A free port can be taken by someone else between our probe and
	// mosquitto's bind: try a few.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if opts.Port == 0 {
			ports, err := testkit.FreePorts(1)
			if err != nil {
				t.Fatalf("mqtttest: %v", err)
			}
			b.port = ports[0]
		}
		if err = b.start(); err == nil {
			return b
		}
		if opts.Port != 0 {
			break
		}
	}
	t.Fatalf("mqtttest: starting mosquitto: %v\nmosquitto output:\n%s", err, b.Logs())
	return nil
}

func (b *Broker) writePasswords() error {
	pw := lookPath(mosquittoPasswdPath, "mosquitto_passwd")
	if pw == "" {
		b.t.Skip("mosquitto_passwd is not installed; apt-get install mosquitto to run this test")
	}
	file := filepath.Join(b.dir, "passwords")
	users := slices.Sorted(maps.Keys(b.opts.Users))
	for i, u := range users {
		args := []string{"-b", file, u, b.opts.Users[u]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(pw, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("mosquitto_passwd %s: %v: %s", u, err, out)
		}
	}
	return os.Chmod(file, 0o600)
}

// The dynamic security plugin's administrator (Options.DynamicSecurity).
const (
	DynSecAdmin         = "dynsec-admin"
	DynSecAdminPassword = "dynsec-admin-pw"
)

func (b *Broker) dynsecFile() string { return filepath.Join(b.dir, "dynamic-security.json") }

// initDynSec finds the plugin and mosquitto_ctrl and writes the plugin's
// initial configuration (its administrator only).
func (b *Broker) initDynSec() error {
	for _, p := range dynsecPluginPath {
		if _, err := os.Stat(p); err == nil {
			b.dynsecPlugin = p
			break
		}
	}
	b.dynsecCtrl = lookPath(mosquittoCtrlPath, "mosquitto_ctrl")
	if b.dynsecPlugin == "" || b.dynsecCtrl == "" {
		b.t.Skip("mosquitto's dynamic security plugin or mosquitto_ctrl is not installed; apt-get install mosquitto mosquitto-clients to run this test")
	}
	out, err := exec.Command(b.dynsecCtrl, "dynsec", "init", b.dynsecFile(), DynSecAdmin, DynSecAdminPassword).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mosquitto_ctrl dynsec init: %v: %s", err, out)
	}
	return nil
}

// DynSec runs dynamic security commands on the running broker as the
// plugin's administrator, each a JSON object as the plugin documents them
// (https://mosquitto.org/documentation/dynamic-security/), e.g.
// {"command": "createRole", "rolename": "device"}. A change of a role's or
// a client's rules disconnects the clients concerned (so that it applies to
// them at once); setDefaultACLAccess disconnects nobody. It fails the test
// when a command fails. (mosquitto_ctrl 2.0.11 sends setDefaultACLAccess
// malformed, so the commands go as JSON.)
func (b *Broker) DynSec(cmds ...map[string]any) {
	b.t.Helper()
	if !b.opts.DynamicSecurity {
		b.t.Fatal("mqtttest: DynSec on a broker started without Options.DynamicSecurity")
	}
	req, err := json.Marshal(map[string]any{"commands": cmds})
	if err != nil {
		b.t.Fatalf("mqtttest: DynSec: %v", err)
	}
	o := b.ClientOptions(fmt.Sprintf("mqtttest-dynsec-%d", clientSeq.Add(1)))
	o.SetUsername(DynSecAdmin).SetPassword(DynSecAdminPassword)
	c := ConnectWith(b.t, o)
	defer c.Disconnect(100)
	got := make(chan []byte, 1)
	tok := c.Subscribe("$CONTROL/dynamic-security/v1/response", 1, func(_ paho.Client, m paho.Message) {
		select {
		case got <- slices.Clone(m.Payload()):
		default:
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.t.Fatalf("mqtttest: DynSec: subscribe to the responses: %v", tok.Error())
	}
	Publish(b.t, c, "$CONTROL/dynamic-security/v1", 1, false, req)
	var resp struct {
		Responses []struct {
			Command string `json:"command"`
			Error   string `json:"error"`
		} `json:"responses"`
	}
	select {
	case r := <-got:
		if err := json.Unmarshal(r, &resp); err != nil {
			b.t.Fatalf("mqtttest: DynSec: response %q: %v", r, err)
		}
	case <-time.After(10 * time.Second):
		b.t.Fatalf("mqtttest: DynSec: no response to %s", req)
	}
	if len(resp.Responses) != len(cmds) {
		b.t.Fatalf("mqtttest: DynSec: %d responses to %d commands", len(resp.Responses), len(cmds))
	}
	for _, r := range resp.Responses {
		if r.Error != "" {
			b.t.Fatalf("mqtttest: DynSec %s: %s", r.Command, r.Error)
		}
	}
}

// config writes mosquitto.conf for the current port.
func (b *Broker) config() error {
	var c strings.Builder
	fmt.Fprintf(&c, "# generated by mqtttest for %s\n", b.t.Name())
	if os.Geteuid() == 0 {
		// Otherwise mosquitto drops to the mosquitto user, which cannot
		// read the test's 0700 temporary directory.
		c.WriteString("user root\n")
	}
	c.WriteString("per_listener_settings false\n")
	fmt.Fprintf(&c, "listener %d 127.0.0.1\n", b.port)
	if b.opts.TLS {
		fmt.Fprintf(&c, "cafile %s\ncertfile %s\nkeyfile %s\ntls_version tlsv1.2\n",
			b.cert.CAFile, b.cert.ServerCertFile, b.cert.ServerKeyFile)
		if b.opts.RequireClientCert {
			c.WriteString("require_certificate true\nuse_identity_as_username true\n")
		}
	}
	if len(b.opts.Users) > 0 {
		fmt.Fprintf(&c, "allow_anonymous false\npassword_file %s\n", filepath.Join(b.dir, "passwords"))
	} else {
		c.WriteString("allow_anonymous true\n")
	}
	if b.opts.DynamicSecurity {
		fmt.Fprintf(&c, "plugin %s\nplugin_opt_config_file %s\n", b.dynsecPlugin, b.dynsecFile())
	}
	if b.opts.Persistence {
		fmt.Fprintf(&c, "persistence true\npersistence_location %s/\nautosave_interval 1\n", b.dir)
	} else {
		c.WriteString("persistence false\n")
	}
	c.WriteString("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nconnection_messages true\nlog_timestamp true\n")
	if b.opts.ExtraConfig != "" {
		c.WriteString(b.opts.ExtraConfig)
		c.WriteString("\n")
	}
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	return os.WriteFile(b.conf, []byte(c.String()), 0o600)
}

// start runs mosquitto and waits until it accepts connections.
func (b *Broker) start() error {
	if err := b.config(); err != nil {
		return err
	}
	cmd := exec.Command(b.bin, "-c", b.conf)
	cmd.Dir = b.dir
	cmd.Stdout = &b.logs
	cmd.Stderr = &b.logs
	proc, err := childproc.Start(cmd)
	if err != nil {
		return err
	}
	b.proc.Set(proc)

	deadline := time.Now().Add(b.opts.StartTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-proc.Done():
			return fmt.Errorf("mosquitto exited: %v", proc.Err())
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			b.signal(syscall.SIGKILL)
			return fmt.Errorf("mosquitto did not accept connections on %s within %v", b.Addr(), b.opts.StartTimeout)
		}
	}
}

// signal stops the broker with sig, killing it after 10 s.
func (b *Broker) signal(sig syscall.Signal) { _ = b.proc.Get().Stop(sig, 10*time.Second) }

// Stop stops the broker cleanly (SIGTERM; with Persistence it saves its
// state). Stopping a stopped broker does nothing. Start brings it back on
// the same port.
func (b *Broker) Stop() { b.signal(syscall.SIGTERM) }

// Kill stops the broker abruptly (SIGKILL), as a crash or power loss
// would.
func (b *Broker) Kill() { b.signal(syscall.SIGKILL) }

// Start restarts a stopped broker on the same port and waits until it
// accepts connections; it fails the test if it cannot. Starting a running
// broker does nothing.
func (b *Broker) Start() {
	b.t.Helper()
	if b.Running() {
		return
	}
	// The port was just freed; the kernel lets mosquitto (SO_REUSEADDR)
	// bind it again at once, but retry briefly in case it doesn't.
	var err error
	deadline := time.Now().Add(b.opts.StartTimeout)
	for {
		if err = b.start(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	b.t.Fatalf("mqtttest: restarting mosquitto: %v\nmosquitto output:\n%s", err, b.Logs())
}

// Running reports whether the broker process is running.
func (b *Broker) Running() bool { return b.proc.Get().Running() }

// URL is the broker's URL for paho: tcp://127.0.0.1:PORT, or ssl://… with
// TLS.
func (b *Broker) URL() string {
	scheme := "tcp"
	if b.opts.TLS {
		scheme = "ssl"
	}
	return scheme + "://" + b.Addr()
}

// Addr is the broker's host:port.
func (b *Broker) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// Port is the broker's port.
func (b *Broker) Port() int { return b.port }

// Dir is the broker's directory (configuration, certificates, password
// file, persistence).
func (b *Broker) Dir() string { return b.dir }

// ConfigFile is the path of the generated mosquitto.conf.
func (b *Broker) ConfigFile() string { return b.conf }

// Certs returns the generated certificates (nil without TLS).
func (b *Broker) Certs() *Certs { return b.cert }

// TLSConfig returns a client TLS configuration trusting the test CA and,
// when the broker requires one, presenting a client certificate (CN
// "mqtttest-client"). Nil without TLS.
func (b *Broker) TLSConfig() *tls.Config {
	if b.cert == nil {
		return nil
	}
	cfg, err := b.cert.ClientTLS(b.opts.RequireClientCert)
	if err != nil {
		b.t.Fatalf("mqtttest: %v", err)
	}
	return cfg
}

// Credentials returns a username and password the broker accepts: the
// first of Options.Users in sorted order ("", "" when anonymous).
func (b *Broker) Credentials() (user, password string) {
	if len(b.opts.Users) == 0 {
		return "", ""
	}
	u := slices.Sorted(maps.Keys(b.opts.Users))[0]
	return u, b.opts.Users[u]
}

// Logs returns what mosquitto has logged so far.
func (b *Broker) Logs() string { return b.logs.String() }

// WaitFor is testkit.WaitFor, for the tests that use mqtttest.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, timeout, what, cond)
}

// RefuseSubscriptions sets up a broker started with
// Options.DynamicSecurity so that anonymous clients may do anything and
// user (with password) may publish on pubTopic but every subscription it
// asks for is refused (SUBACK 0x80, as a NATS node refuses QoS 1
// subscriptions while JetStream elects its leaders). allow makes the
// broker take subscriptions from then on without disconnecting anyone.
func (b *Broker) RefuseSubscriptions(user, password, pubTopic string) (allow func()) {
	b.t.Helper()
	type m = map[string]any
	b.DynSec(
		m{"command": "createRole", "rolename": "all", "acls": []m{
			{"acltype": "publishClientSend", "topic": "#", "allow": true},
			{"acltype": "subscribePattern", "topic": "#", "allow": true},
		}},
		m{"command": "createGroup", "groupname": "anonymous", "roles": []m{{"rolename": "all"}}},
		m{"command": "setAnonymousGroup", "groupname": "anonymous"},
		m{"command": "createRole", "rolename": "refused", "acls": []m{
			{"acltype": "publishClientSend", "topic": pubTopic, "allow": true},
		}},
		m{"command": "createClient", "username": user, "password": password, "roles": []m{{"rolename": "refused"}}},
	)
	return func() {
		// Not a change to the user's role: that would disconnect it.
		b.DynSec(m{"command": "setDefaultACLAccess", "acls": []m{{"acltype": "subscribe", "allow": true}}})
	}
}
