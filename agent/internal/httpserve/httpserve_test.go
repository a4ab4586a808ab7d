package httpserve

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server serves h on a loopback port with opts and counts the connections
// open at once; it returns the address and the highest count seen.
// countingListener counts its connections open now and at most at once.
type countingListener struct {
	net.Listener
	open, peak *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	n := l.open.Add(1)
	for {
		p := l.peak.Load()
		if n <= p || l.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return &countedConn{Conn: c, open: l.open}, nil
}

type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.open.Add(-1) })
	return err
}

func server(t *testing.T, opts Options, h http.Handler) (addr string, maxOpen func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Count open connections where they are opened and closed (under the
	// limiter), not in ConnState: net/http reports StateClosed after the
	// close, when the freed slot may already hold the next connection.
	var open, peak atomic.Int64
	srv, lim, err := New(h, &countingListener{Listener: ln, open: &open, peak: &peak}, opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lim); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String(), peak.Load
}

// readAllBody answers 204 when it could read the whole body and 408 when
// it could not.
var readAllBody = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if _, err := io.ReadAll(r.Body); err != nil {
		w.WriteHeader(http.StatusRequestTimeout)
		return
	}
	w.WriteHeader(http.StatusNoContent)
})

// slowClient sends a request header announcing a 100-byte body and one
// byte of it, and then nothing.
func slowClient(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	return c
}

// A body that does not arrive within the read timeout is cut: the server
// answers or closes, and does not wait for the client.
func TestSlowBodyIsCutAtReadTimeout(t *testing.T) {
	o := DefaultOptions()
	o.ReadTimeout = 200 * time.Millisecond
	addr, _ := server(t, o, readAllBody)
	c := slowClient(t, addr)
	// The deadline only keeps a broken server from hanging the test.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server held a slow body for 30 s (read timeout %v)", o.ReadTimeout)
	}
	if len(got) > 0 && !strings.Contains(string(got), " 408 ") {
		t.Errorf("response to a cut body: %q", got)
	}
}

// Beyond MaxConns connections wait to be accepted: never more are open at
// once, and a waiting request is served as soon as a slot frees.
func TestConnectionsBeyondTheCapWait(t *testing.T) {
	o := DefaultOptions()
	o.MaxConns = 4
	o.ReadTimeout = time.Hour // only the clients free their slots here
	addr, peak := server(t, o, readAllBody)
	var held []net.Conn
	for range o.MaxConns {
		held = append(held, slowClient(t, addr))
	}
	served := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		served <- err
	}()
	held[0].Close()
	if err := <-served; err != nil {
		t.Fatalf("request after a slot freed: %v", err)
	}
	if p := peak(); p > int64(o.MaxConns) {
		t.Errorf("%d connections open at once, cap %d", p, o.MaxConns)
	}
}

// A flood of slow-body clients, four times the cap, does not keep a normal
// request out: the read timeout frees the slots the flood holds.
func TestServesUnderSlowClientFlood(t *testing.T) {
	o := DefaultOptions()
	o.MaxConns = 8
	o.ReadTimeout = 300 * time.Millisecond
	addr, peak := server(t, o, readAllBody)
	var wg sync.WaitGroup
	for range 4 * o.MaxConns {
		wg.Go(func() { slowClient(t, addr) })
	}
	wg.Wait()
	client := &http.Client{Timeout: time.Minute} // a safety net, not an assertion
	resp, err := client.Post("http://"+addr+"/v1/events", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatalf("normal request under a flood: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("normal request under a flood: status %d", resp.StatusCode)
	}
	if p := peak(); p > int64(o.MaxConns) {
		t.Errorf("%d connections open at once, cap %d", p, o.MaxConns)
	}
}

// An idle keep-alive connection is closed after IdleTimeout.
func TestIdleKeepAliveIsClosed(t *testing.T) {
	o := DefaultOptions()
	o.IdleTimeout = 200 * time.Millisecond
	addr, _ := server(t, o, readAllBody)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = br.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("idle keep-alive connection still open after 30 s (idle timeout %v)", o.IdleTimeout)
	}
	if !errors.Is(err, io.EOF) {
		t.Errorf("idle connection: %v, want EOF", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	o := Options{ReadHeaderTimeout: -1}
	err := o.Validate()
	for _, want := range []string{"ReadHeaderTimeout", "ReadTimeout", "WriteTimeout", "IdleTimeout", "MaxConns"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%+v) = %v, want a problem with %s", o, err, want)
		}
	}
}
