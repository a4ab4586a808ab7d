package publish

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
)

// connect makes the paho client and connects it. The Last Will carries the
// birth number this connection will have.
func (s *session) connect(ctx context.Context) error {
	p := s.p
	u, err := url.Parse(p.opts.Broker)
	if err != nil {
		return fmt.Errorf("broker URL: %w", err)
	}
	var tlsCfg *tls.Config
	if mqttconn.IsTLS(u.Scheme) {
		if tlsCfg, err = p.opts.TLS.Config(); err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
	}
	co := mqtt.NewClientOptions().
		AddBroker(p.opts.Broker).
		SetClientID(p.opts.clientID()).
		SetUsername(p.opts.Username).
		SetPassword(p.opts.Password).
		SetProtocolVersion(4).
		SetCleanSession(true).
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
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect to %s as %s: %w%s", p.opts.Broker, p.opts.clientID(), err, hint(err, p.opts))
	}
	if !watching || ctx.Err() != nil {
		cl.Disconnect(0)
		return fmt.Errorf("connect to %s: %w", p.opts.Broker, context.Cause(ctx))
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
	case mqttconn.IsTLSURL(o.Broker) && strings.Contains(msg, "connection reset by peer"):
		return " (the broker closed the TLS connection: it may have rejected the client certificate)"
	case strings.Contains(msg, "not Authorized"), strings.Contains(msg, "bad user name or password"):
		return " (check the username and password)"
	}
	return ""
}
