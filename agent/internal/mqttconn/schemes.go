package mqttconn

import (
	"net/url"
	"slices"
	"strings"
)

// The broker URL schemes, listed once: plain TCP (tcp, mqtt), TLS (ssl,
// tls, mqtts), websockets (ws) and websockets over TLS (wss).
var (
	schemes     = []string{"tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"}
	tlsSchemes  = []string{"ssl", "tls", "mqtts", "wss"}
	portSchemes = []string{"tcp", "ssl", "tls", "mqtt", "mqtts"}
)

// Schemes returns every broker URL scheme the clients accept.
func Schemes() []string { return slices.Clone(schemes) }

// PortSchemes returns the schemes whose URLs need a port (the websocket
// ones default to the HTTP ports).
func PortSchemes() []string { return slices.Clone(portSchemes) }

// Known reports whether scheme is a broker URL scheme.
func Known(scheme string) bool { return slices.Contains(schemes, strings.ToLower(scheme)) }

// IsTLS reports whether scheme is one of the TLS schemes (ssl, tls, mqtts,
// wss).
func IsTLS(scheme string) bool { return slices.Contains(tlsSchemes, strings.ToLower(scheme)) }

// IsTLSURL reports whether broker is a URL with a TLS scheme.
func IsTLSURL(broker string) bool {
	u, err := url.Parse(broker)
	return err == nil && IsTLS(u.Scheme)
}
