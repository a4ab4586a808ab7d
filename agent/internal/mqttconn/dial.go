package mqttconn

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// DialOptions configure [Dial].
type DialOptions struct {
	// Dialer is the base dialer; nil means a net.Dialer with Timeout.
	Dialer *net.Dialer
	// Timeout bounds the TCP connection (when Dialer is nil), the TLS
	// handshake and the websocket handshake.
	Timeout time.Duration
	// TLS is the configuration of the TLS schemes; nil means the
	// defaults (the system's roots).
	TLS *tls.Config
	// HTTPHeaders and Websocket go to the websocket handshake.
	HTTPHeaders http.Header
	Websocket   *paho.WebsocketOptions
}

// Dial opens a connection to the broker at u, honouring ctx (the dial and
// the TLS handshake end with it):
//   - tcp and mqtt: through the proxy the environment names (ALL_PROXY,
//     NO_PROXY), reads buffered (see [Buffered]);
//   - ssl, tls and mqtts: through the same proxy, then a TLS handshake
//     whose server name defaults to u's host; after a TLS 1.3 handshake it
//     waits briefly for the broker's verdict on the client certificate, so
//     that a refusal is reported as such rather than as a reset later;
//   - ws and wss: paho's websocket dialer (which takes proxies from the
//     environment itself), without u's credentials.
func Dial(ctx context.Context, u *url.URL, o DialOptions) (net.Conn, error) {
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: o.Timeout}
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		c, err := dialTCP(ctx, d, u.Host)
		if err != nil {
			return nil, err
		}
		return Buffered(c), nil
	case "ssl", "tls", "mqtts":
		raw, err := dialTCP(ctx, d, u.Host)
		if err != nil {
			return nil, err
		}
		tc, err := handshake(ctx, raw, u, o)
		if err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", u.Host, err)
		}
		return tc, nil
	case "ws", "wss":
		dialURL := *u
		dialURL.User = nil
		var cfg *tls.Config
		if u.Scheme == "wss" {
			cfg = o.TLS
		}
		return paho.NewWebsocket(dialURL.String(), cfg, o.Timeout, o.HTTPHeaders, o.Websocket)
	}
	return nil, fmt.Errorf("unsupported broker scheme %q", u.Scheme)
}

// dialTCP dials addr through the proxy the environment names, if any.
func dialTCP(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	pd := proxy.FromEnvironmentUsing(d)
	if cd, ok := pd.(proxy.ContextDialer); ok {
		return cd.DialContext(ctx, "tcp", addr)
	}
	return pd.Dial("tcp", addr)
}

// handshake runs the TLS handshake on raw and, for TLS 1.3, the
// client-certificate probe.
func handshake(ctx context.Context, raw net.Conn, u *url.URL, o DialOptions) (*tls.Conn, error) {
	var cfg *tls.Config
	if o.TLS != nil {
		cfg = o.TLS.Clone()
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	tickets := &ticketSignal{conn: raw}
	cfg.ClientSessionCache = tickets
	tc := tls.Client(raw, cfg)
	hctx := ctx
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, err
	}
	if tc.ConnectionState().Version == tls.VersionTLS13 {
		if err := probeTLS(tc, tickets); err != nil {
			return nil, err
		}
	}
	return tc, nil
}
