package publish

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
)

// connect makes the paho client and connects it. The Last Will carries the
// birth number this connection will have.
func (s *session) connect(ctx context.Context) error {
	p := s.p
	var tlsCfg *tls.Config
	for _, b := range p.opts.brokers() {
		u, err := url.Parse(b)
		if err != nil {
			return fmt.Errorf("broker URL: %w", err)
		}
		if mqttconn.IsTLS(u.Scheme) && tlsCfg == nil {
			if tlsCfg, err = p.opts.TLS.Config(); err != nil {
				return fmt.Errorf("TLS: %w", err)
			}
		}
	}
	co := mqtt.NewClientOptions()
	// paho tries the brokers in order at each connection attempt.
	for _, b := range p.opts.brokers() {
		co.AddBroker(b)
	}
	co.SetClientID(p.opts.clientID()).
		SetUsername(p.opts.Username).
		SetPassword(p.opts.Password).
		SetProtocolVersion(4).
		SetCleanSession(!p.opts.PersistentSession).
		SetStore(mqtt.NewMemoryStore()).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetOrderMatters(true).
		SetKeepAlive(p.opts.KeepAlive).
		SetPingTimeout(p.opts.PingTimeout).
		SetConnectTimeout(p.opts.ConnectTimeout).
		SetWriteTimeout(p.opts.WriteTimeout).
		SetBinaryWill(p.status, p.statusPayload("offline", s.birth, time.Time{}, "connection lost"), 1, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { s.markLost(err) }).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			return s.open(ctx, u, tlsCfg)
		})
	cl := mqtt.NewClient(co)
	tok := cl.Connect()
	// The connection is closed when ctx ends during the handshake (see
	// open), so the token completes promptly.
	<-tok.Done()
	watching := s.stopWatch != nil && s.stopWatch()
	brokers := strings.Join(p.opts.brokers(), ", ")
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect to %s as %s: %w%s", brokers, p.opts.clientID(), err, hint(err, p.opts))
	}
	if !watching || ctx.Err() != nil {
		cl.Disconnect(0)
		return fmt.Errorf("connect to %s: %w", brokers, context.Cause(ctx))
	}
	s.cl = cl
	return nil
}

// open dials the broker for paho, honouring ctx: the dial and the TLS
// handshake are cancelled with it, and so is the MQTT handshake that paho
// runs next (the connection is closed when ctx ends, until connect stops
// watching).
func (s *session) open(ctx context.Context, u *url.URL, tlsCfg *tls.Config) (net.Conn, error) {
	conn, err := mqttconn.Dial(ctx, u, mqttconn.DialOptions{Timeout: s.p.opts.ConnectTimeout, TLS: tlsCfg})
	if err != nil {
		return nil, err
	}
	s.stopWatch = context.AfterFunc(ctx, func() { _ = conn.Close() })
	s.broker = u.Redacted()
	return conn, nil
}

// hint adds advice to connection errors whose text alone leaves operators
// guessing.
func hint(err error, o Options) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "certificate required") && o.TLS.CertFile == "":
		return " (the broker requires a client certificate: set the TLS client certificate and key)"
	case strings.Contains(msg, "certificate required"), strings.Contains(msg, "bad certificate"),
		strings.Contains(msg, "unknown certificate authority"), strings.Contains(msg, "certificate revoked"),
		strings.Contains(msg, "certificate expired"), strings.Contains(msg, "unsupported certificate"):
		return " (the broker rejected the client certificate)"
	case slices.ContainsFunc(o.brokers(), mqttconn.IsTLSURL) && strings.Contains(msg, "connection reset by peer"):
		return " (the broker closed the TLS connection: it may have rejected the client certificate)"
	case strings.Contains(msg, "not Authorized"), strings.Contains(msg, "bad user name or password"):
		return " (check the username and password)"
	}
	return ""
}
