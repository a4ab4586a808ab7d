package mqttconn

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// countingConn counts the reads that reach the connection.
type countingConn struct {
	net.Conn
	reads int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads++
	return c.Conn.Read(p)
}

// TestBufferedReadsPacketsInFewReads: paho's way of reading (one byte of
// header at a time, then the body) over a buffered connection returns the
// bytes unchanged and in far fewer reads of the socket.
func TestBufferedReadsPacketsInFewReads(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	// 100 PUBLISH-like packets: type byte, one length byte, 20-byte body.
	var want bytes.Buffer
	for i := range 100 {
		want.WriteByte(0x30)
		want.WriteByte(20)
		want.Write(bytes.Repeat([]byte{byte(i)}, 20))
	}
	go func() {
		b.Write(want.Bytes())
		b.Close()
	}()
	cc := &countingConn{Conn: a}
	c := Buffered(cc)
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	one := make([]byte, 1)
	for {
		if _, err := io.ReadFull(c, one); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		got.Write(one)
		if _, err := io.ReadFull(c, one); err != nil {
			t.Fatal(err)
		}
		got.Write(one)
		body := make([]byte, one[0])
		if _, err := io.ReadFull(c, body); err != nil {
			t.Fatal(err)
		}
		got.Write(body)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatal("the buffered connection changed the bytes")
	}
	// net.Pipe hands over one Write per Read at most: the whole stream
	// arrives in a handful of reads, not 300.
	if cc.reads > 10 {
		t.Fatalf("%d reads of the connection for 300 header and body reads", cc.reads)
	}
}
