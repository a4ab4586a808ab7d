package mqttconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// TLS configures TLS and mutual TLS to a broker from files.
type TLS struct {
	// CAFile is a PEM file of the certificate authorities that sign the
	// broker's certificate; empty means the system roots.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and key for
	// mutual TLS; both or neither.
	CertFile, KeyFile string
	// ServerName overrides the name checked against the broker's
	// certificate (and sent as SNI); empty means the broker URL's host.
	ServerName string
	// InsecureSkipVerify accepts any broker certificate. For tests and
	// first-time setup only: it makes TLS useless against an active
	// attacker.
	InsecureSkipVerify bool
}

// Set reports whether any field is set.
func (t TLS) Set() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// Config loads the files and returns the TLS client configuration (TLS 1.2
// at least). Callers that call it at every connection attempt pick up
// renewed certificates without a restart.
func (t TLS) Config() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // documented as test-only
	}
	if t.CAFile != "" {
		pool, err := LoadCA(t.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s and key %s: %w", t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// LoadCA reads a PEM file of certificate authorities.
func LoadCA(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate found", file)
	}
	return pool, nil
}

// tlsProbeWait bounds the wait for the broker's verdict on the client
// after a TLS 1.3 handshake (see probeTLS).
const tlsProbeWait = 500 * time.Millisecond

// probeTLS waits for what a TLS 1.3 broker sends right after the handshake.
// In TLS 1.3 the client's side of the handshake completes before the
// broker has checked the client certificate; a broker that rejects it
// answers with an alert, which would otherwise surface later as a confusing
// error on the CONNECT write ("connection reset by peer") or the CONNACK
// read. A broker that accepts it sends session tickets: the first one ends
// the wait at once (see ticketSignal). A broker that sends neither costs
// tlsProbeWait.
func probeTLS(tc *tls.Conn, tickets *ticketSignal) error {
	_ = tc.SetReadDeadline(time.Now().Add(tlsProbeWait))
	var b [1]byte
	n, err := tc.Read(b[:])
	tickets.disarm()
	_ = tc.SetReadDeadline(time.Time{})
	var ne net.Error
	switch {
	case n > 0:
		return errors.New("the broker sent data before CONNECT")
	case err == nil, errors.As(err, &ne) && ne.Timeout():
		return nil
	}
	return err
}

// ticketSignal is a tls.ClientSessionCache that caches nothing: a session
// ticket's arrival only ends probeTLS's wait, by moving the read deadline
// to the past.
type ticketSignal struct {
	mu    sync.Mutex
	conn  net.Conn
	armed bool
	done  bool
}

func (t *ticketSignal) Get(string) (*tls.ClientSessionState, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.armed = !t.done // the handshake has started: probes may come
	return nil, false
}

func (t *ticketSignal) Put(string, *tls.ClientSessionState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.armed && !t.done {
		t.done = true
		_ = t.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// disarm makes later tickets change nothing.
func (t *ticketSignal) disarm() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done = true
}
