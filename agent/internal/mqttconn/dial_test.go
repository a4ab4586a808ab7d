package mqttconn_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
)

func TestSchemes(t *testing.T) {
	for _, c := range []struct {
		scheme     string
		known, tls bool
		needsPort  bool
	}{
		{"tcp", true, false, true}, {"mqtt", true, false, true}, {"ws", true, false, false},
		{"ssl", true, true, true}, {"tls", true, true, true}, {"mqtts", true, true, true},
		{"wss", true, true, false}, {"SSL", true, true, true}, {"http", false, false, false},
	} {
		needsPort := false
		for _, s := range mqttconn.PortSchemes() {
			needsPort = needsPort || s == strings.ToLower(c.scheme)
		}
		if got := mqttconn.Known(c.scheme); got != c.known {
			t.Errorf("Known(%q) = %v", c.scheme, got)
		}
		if got := mqttconn.IsTLS(c.scheme); got != c.tls {
			t.Errorf("IsTLS(%q) = %v", c.scheme, got)
		}
		if needsPort != c.needsPort {
			t.Errorf("%q needs a port: %v", c.scheme, needsPort)
		}
	}
	if !mqttconn.IsTLSURL("mqtts://b:8883") || mqttconn.IsTLSURL("tcp://b:1883") || mqttconn.IsTLSURL(":bad") {
		t.Error("IsTLSURL")
	}
}

// tlsServer accepts TLS 1.3 connections that must present a client
// certificate of certs' CA, and writes "ok" on each accepted one.
func tlsServer(t *testing.T, certs *mqtttest.Certs) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certs.ServerCertFile, certs.ServerKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientCAs: certs.CAPool(),
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err == nil {
					_, _ = io.ReadAll(c)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestDialTLSProbesClientCertificate: a TLS 1.3 broker that refuses the
// client's (missing) certificate is reported by Dial itself, not later as a
// reset on the first write; with the certificate Dial connects.
func TestDialTLSProbesClientCertificate(t *testing.T) {
	certs, err := mqtttest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	addr := tlsServer(t, certs)
	u := &url.URL{Scheme: "mqtts", Host: addr}
	ctx := context.Background()

	noCert, err := mqttconn.TLS{CAFile: certs.CAFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	if c, err := mqttconn.Dial(ctx, u, mqttconn.DialOptions{Timeout: 10 * time.Second, TLS: noCert}); err == nil {
		c.Close()
		t.Fatal("Dial without a client certificate succeeded")
	} else if !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("Dial without a client certificate: %v", err)
	}

	withCert, err := mqttconn.TLS{CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	c, err := mqttconn.Dial(ctx, u, mqttconn.DialOptions{Timeout: 10 * time.Second, TLS: withCert})
	if err != nil {
		t.Fatalf("Dial with a client certificate: %v", err)
	}
	c.Close()
}

// TestDialTCPHonoursContext: a cancelled context ends the dial, and a
// plain TCP connection is buffered.
func TestDialTCPHonoursContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u := &url.URL{Scheme: "tcp", Host: ln.Addr().String()}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := mqttconn.Dial(ctx, u, mqttconn.DialOptions{Timeout: 10 * time.Second}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial with a cancelled context: %v", err)
	}
	c, err := mqttconn.Dial(context.Background(), u, mqttconn.DialOptions{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*net.TCPConn); ok {
		t.Error("a plain TCP connection is not buffered")
	}
	if _, err := mqttconn.Dial(context.Background(), &url.URL{Scheme: "http", Host: "x:1"}, mqttconn.DialOptions{}); err == nil {
		t.Error("Dial accepted an http URL")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	if _, err := (mqttconn.TLS{CAFile: "/nonexistent/ca.pem"}).Config(); err == nil || !strings.Contains(err.Error(), "read CA file") {
		t.Errorf("missing CA file: %v", err)
	}
	if _, err := (mqttconn.TLS{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}).Config(); err == nil {
		t.Error("missing key pair accepted")
	}
	if (mqttconn.TLS{}).Set() || !(mqttconn.TLS{ServerName: "b"}).Set() {
		t.Error("Set")
	}
}
