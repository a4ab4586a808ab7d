package netproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// echoServer accepts connections on loopback and echoes what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	conns := make(map[net.Conn]struct{})
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and reads it back within timeout.
func roundTrip(c net.Conn, msg string, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}

func TestForwards(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	for _, msg := range []string{"hello", "world", string(bytes.Repeat([]byte("x"), 200<<10))} {
		if err := roundTrip(c, msg, 5*time.Second); err != nil {
			t.Fatalf("round trip of %d bytes: %v", len(msg), err)
		}
	}
	if p.Conns() != 1 || p.Accepted() != 1 {
		t.Fatalf("Conns = %d, Accepted = %d; want 1, 1", p.Conns(), p.Accepted())
	}
}

func TestHalfCloseReachesPeer(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p).(*net.TCPConn)
	if _, err := io.WriteString(c, "bye"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c) // the echo server ends its side once it sees EOF
	if err != nil || string(got) != "bye" {
		t.Fatalf("ReadAll = %q, %v; want \"bye\", nil", got, err)
	}
	testkit.WaitFor(t, 5*time.Second, "the link to be released", func() bool { return p.Conns() == 0 })
}

func TestCutDropsAndRefuses(t *testing.T) {
	p, c := linked(t)
	p.Cut()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read on a cut connection: %v; want a reset or EOF", err)
	}
	// New connections are accepted and reset at once: the dial itself may
	// already see the reset.
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c2.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("read on a connection made during a cut: %v; want a reset or EOF", err)
		}
		_ = c2.Close()
	}
	p.Restore()
	c3 := dial(t, p)
	if err := roundTrip(c3, "after", 5*time.Second); err != nil {
		t.Fatalf("after Restore: %v", err)
	}
}

func TestBlackholeHoldsThenDelivers(t *testing.T) {
	p, c := linked(t)
	p.Blackhole()
	p.Blackhole() // idempotent
	if _, err := io.WriteString(c, "held"); err != nil {
		t.Fatal(err)
	}
	// Nothing comes back while the blackhole lasts: the connection stays
	// open and silent, so only a timeout tells.
	_ = c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if n, err := c.Read(make([]byte, 4)); !isTimeout(err) {
		t.Fatalf("read during blackhole = %d, %v; want a timeout", n, err)
	}
	// A connection made during the blackhole is accepted but not connected.
	c2 := dial(t, p)
	if _, err := io.WriteString(c2, "late"); err != nil {
		t.Fatal(err)
	}
	p.Restore()
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after Restore read %q, %v; want \"held\"", buf, err)
	}
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c2, buf); err != nil || string(buf) != "late" {
		t.Fatalf("held connection after Restore read %q, %v; want \"late\"", buf, err)
	}
}

func TestCutDuringBlackholeDropsHeldConnections(t *testing.T) {
	p := newProxy(t)
	p.Blackhole()
	c := dial(t, p)
	testkit.WaitFor(t, 5*time.Second, "the held connection", func() bool { return p.Conns() == 1 })
	p.Cut()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read: %v; want a reset or EOF", err)
	}
	p.Restore()
	if err := roundTrip(dial(t, p), "ok", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestLatency(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	const d = 40 * time.Millisecond
	p.SetLatency(d)
	start := time.Now()
	if err := roundTrip(c, "slow", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 2*d {
		t.Fatalf("round trip took %v; want at least %v", rtt, 2*d)
	}
	p.SetLatency(0)
	if err := roundTrip(c, "fast", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestBandwidth(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	const rate = 256 << 10 // bytes per second
	p.SetBandwidth(rate)
	msg := string(bytes.Repeat([]byte("b"), 64<<10))
	start := time.Now()
	if err := roundTrip(c, msg, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// 64 KiB each way at 256 KiB/s is 250 ms per direction; the two
	// directions overlap, and the first piece goes at once.
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("64 KiB round trip at 256 KiB/s took %v; want at least 200ms", el)
	}
	p.SetBandwidth(0)
	if err := roundTrip(c, msg, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestCloseReleasesEverything(t *testing.T) {
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	if err := roundTrip(c, "x", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	_ = dial(t, p) // held
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("dial after Close succeeded")
	}
}

func TestBadTarget(t *testing.T) {
	if _, err := New("no-port"); err == nil {
		t.Fatal("New with a target without port: want an error")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// linked returns a proxy and a connection through it that carried a first
// round trip.
func linked(t *testing.T) (*Proxy, net.Conn) {
	t.Helper()
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return p, c
}
