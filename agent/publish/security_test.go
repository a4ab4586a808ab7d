package publish

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
)

// TestMutualTLS runs mosquitto with a TLS listener that requires client
// certificates from a throwaway CA, and publishes through it; then checks
// that a missing or foreign client certificate, or an untrusted broker,
// fails with an error that says so.
func TestMutualTLS(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{RequireClientCert: true})
	certs := b.Certs()
	sub := mqtttest.Subscribe(t, b, "vigil/dev1/alerts/#", 1)

	t.Run("client certificate", func(t *testing.T) {
		buf := newMemBuffer(t)
		opts := testOptions(b.URL())
		opts.TLS = TLSOptions{CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}
		p := startPublisher(t, buf, opts)
		testkit.WaitFor(t, 10*time.Second, "connected over mutual TLS", p.Connected)
		appendN(t, buf, record.LaneAlert, 0, 5, func(i int) []byte { return alertJSON("pump", i) })
		sub.WaitN(t, 5, 10*time.Second)
	})

	other, err := mqtttest.NewCerts(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tls  TLSOptions
		want []string
	}{
		// With TLS 1.3 the broker's verdict on the client certificate
		// comes after the client's side of the handshake, as an alert on
		// the first read (the CONNACK).
		{"no client certificate", TLSOptions{CAFile: certs.CAFile},
			[]string{"tls: certificate required", "requires a client certificate"}},
		{"certificate from another CA", TLSOptions{CAFile: certs.CAFile, CertFile: other.ClientCertFile, KeyFile: other.ClientKeyFile},
			[]string{"tls: unknown certificate authority", "rejected the client certificate"}},
		{"untrusted broker", TLSOptions{CAFile: other.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile},
			[]string{"TLS handshake with", "certificate signed by unknown authority"}},
		{"wrong server name", TLSOptions{CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile, ServerName: "broker.example"},
			[]string{"TLS handshake with", "broker.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions(b.URL())
			opts.TLS = tc.tls
			p := startPublisher(t, newMemBuffer(t), opts)
			testkit.WaitFor(t, 10*time.Second, "a connection error", func() bool { return p.Stats().LastError != "" })
			msg := p.Stats().LastError
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if p.Connected() {
				t.Error("connected anyway")
			}
		})
	}

	t.Run("TLS options need a TLS scheme", func(t *testing.T) {
		opts := testOptions("tcp://" + b.Addr())
		opts.TLS = TLSOptions{CAFile: certs.CAFile}
		if _, err := New(newMemBuffer(t), opts); err == nil || !strings.Contains(err.Error(), "Options.TLS") {
			t.Fatalf("New = %v; want an error about Options.TLS", err)
		}
	})
}

// TestPassword authenticates with a username and password, and checks that
// the password appears in no log line, neither on success nor on failure.
func TestPassword(t *testing.T) {
	const secret = "s3cret-Pa55w0rd"
	b := mqtttest.Start(t, mqtttest.Options{Users: map[string]string{"vigil": secret}})
	var logs testkit.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	opts := testOptions(b.URL())
	opts.Username, opts.Password, opts.Logger = "vigil", secret, logger
	p := startPublisher(t, newMemBuffer(t), opts)
	testkit.WaitFor(t, 10*time.Second, "connected with the password", p.Connected)

	bad := testOptions(b.URL())
	bad.Username, bad.Password, bad.Logger, bad.ClientID = "vigil", secret+"x", logger, "vigil-other"
	q := startPublisher(t, newMemBuffer(t), bad)
	testkit.WaitFor(t, 10*time.Second, "a refusal", func() bool { return q.Stats().LastError != "" })
	if msg := q.Stats().LastError; !strings.Contains(msg, "not Authorized") || !strings.Contains(msg, "username and password") {
		t.Errorf("error %q does not say the credentials were refused", msg)
	}
	testkit.WaitFor(t, 10*time.Second, "the failure logged", func() bool { return strings.Contains(logs.String(), "not Authorized") })
	if strings.Contains(logs.String(), "s3cret") {
		t.Fatalf("the password was logged:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "password=[redacted]") {
		t.Errorf("the options were not logged with the password redacted:\n%s", logs.String())
	}
	for _, s := range []string{opts.String(), fmt.Sprint(opts), fmt.Sprintf("%+v", opts)} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("Options print their password: %s", s)
		}
	}
}
