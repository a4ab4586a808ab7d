// Package mqttconn is the one MQTT connection layer of Vigil's MQTT
// clients (the MQTT source, the publisher, `vigil watch`) and of the
// configuration's checks: the broker URL schemes (schemes.go), the TLS
// client configuration from files and the TLS 1.3 client-certificate probe
// (tls.go), and the dialer with a context and proxies from the environment
// (dial.go).
//
// paho reads every incoming packet's fixed header straight from the
// connection a byte at a time (packets.ReadPacket: the type byte, then each
// byte of the remaining length, then the body), so on a plain TCP
// connection every message costs three or four read system calls. Buffered
// puts a read buffer between paho and the socket: at 10k messages/s that
// is some 30k system calls a second fewer. TLS connections already read
// whole records into a buffer and need no wrapping.
package mqttconn

import (
	"bufio"
	"net"
)

// ReadBuffer is the size of Buffered's read buffer: a few dozen typical
// sensor messages, or one read for a packet up to this size.
const ReadBuffer = 8 << 10

// Buffered returns c with its reads buffered. Writes, deadlines and Close
// go to c itself.
func Buffered(c net.Conn) net.Conn {
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, ReadBuffer)}
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

// Read reads from the buffer, refilling it from the connection when empty.
func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
