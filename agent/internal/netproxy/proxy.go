// Package netproxy is a TCP proxy for tests that break the network between a
// client and a server on purpose. A [Proxy] listens on a loopback port and
// forwards every connection to a target address; the test then degrades the
// path while traffic flows:
//
//   - [Proxy.Cut] drops every connection and refuses new ones (they are
//     accepted and reset at once), as when a cable is pulled or a NAT
//     forgets the flow;
//   - [Proxy.Blackhole] keeps connections open but stops moving bytes, and
//     accepts new connections without ever connecting them through: the
//     peers see nothing at all, and only a keep-alive or a timeout can tell;
//   - [Proxy.Restore] ends either: a blackholed connection resumes and the
//     bytes held during the blackhole are delivered; after a cut, new
//     connections are forwarded again;
//   - [Proxy.SetLatency] delays every chunk of data by a duration, in each
//     direction;
//   - [Proxy.SetBandwidth] throttles each direction of each connection.
//
// It is meant for tests and chaos suites on loopback, not for production
// traffic: it holds at most a few MiB per direction of a connection in
// memory, and it never logs.
package netproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// chunkSize is the largest read from a peer; queueLen is how many read
// chunks a direction holds before it stops reading (so that a blackhole or a
// throttle pushes back on the sender, as a real network does).
const (
	chunkSize = 32 << 10
	queueLen  = 64
)

// Proxy forwards TCP connections from its listening address to a target.
// All methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	dialer net.Dialer

	mu      sync.Mutex
	cut     bool
	flowing chan struct{} // closed while bytes flow; open during a blackhole
	links   map[*link]struct{}
	closed  bool

	latency   atomic.Int64 // time.Duration
	bandwidth atomic.Int64 // bytes per second, 0 = unlimited
	accepted  atomic.Uint64

	wg sync.WaitGroup
}

// New starts a proxy on a free loopback port that forwards to target
// (host:port).
func New(target string) (*Proxy, error) {
	return Listen("127.0.0.1:0", target)
}

// Listen starts a proxy on addr that forwards to target (host:port).
func Listen(addr, target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("netproxy: target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("netproxy: listen %s: %w", addr, err)
	}
	flowing := make(chan struct{})
	close(flowing)
	p := &Proxy{
		ln:      ln,
		target:  target,
		dialer:  net.Dialer{Timeout: 5 * time.Second},
		flowing: flowing,
		links:   make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the address the proxy listens on (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Cut drops every open connection (both peers see a reset) and makes the
// proxy refuse new connections until [Proxy.Restore].
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	links := p.takeLinksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.close(true)
	}
}

// Blackhole stops moving bytes in both directions of every connection,
// without closing any, and holds new connections accepted but unconnected,
// until [Proxy.Restore]. Bytes the peers send meanwhile are held (up to a few
// MiB per direction, then the sender's writes block).
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
		p.flowing = make(chan struct{})
	default: // already blackholed
	}
}

// Restore ends a cut or a blackhole: held connections resume (and are
// connected through, if they were accepted during the blackhole), and new
// connections are forwarded again. Latency and bandwidth settings stay.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	select {
	case <-p.flowing:
	default:
		close(p.flowing)
	}
}

// SetLatency delays every chunk of data by d in each direction (so a round
// trip takes at least 2d more). Zero removes the delay. It applies to data
// read from now on.
func (p *Proxy) SetLatency(d time.Duration) {
	if d < 0 {
		d = 0
	}
	p.latency.Store(int64(d))
}

// SetBandwidth limits each direction of each connection to bytesPerSec;
// zero or less removes the limit.
func (p *Proxy) SetBandwidth(bytesPerSec int64) {
	if bytesPerSec < 0 {
		bytesPerSec = 0
	}
	p.bandwidth.Store(bytesPerSec)
}

// Conns returns the number of connections the proxy holds open.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Accepted returns the number of connections accepted so far, refused ones
// included.
func (p *Proxy) Accepted() uint64 { return p.accepted.Load() }

// Close stops listening, drops every connection and waits for the proxy's
// goroutines to end. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := p.takeLinksLocked()
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close(false)
	}
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (p *Proxy) takeLinksLocked() []*link {
	out := make([]*link, 0, len(p.links))
	for l := range p.links {
		out = append(out, l)
	}
	clear(p.links)
	return out
}

func (p *Proxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flowing
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		p.accepted.Add(1)
		p.mu.Lock()
		if p.closed || p.cut {
			p.mu.Unlock()
			reset(c)
			continue
		}
		l := &link{p: p, client: c, done: make(chan struct{})}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go l.run()
	}
}

// reset closes c so that the peer sees a connection reset rather than an
// orderly end of stream.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// link is one proxied connection: the accepted client side and the dialed
// upstream side.
type link struct {
	p      *Proxy
	client net.Conn

	mu       sync.Mutex
	upstream net.Conn
	done     chan struct{}
	once     sync.Once
}

// close tears the link down; hard resets both peers.
func (l *link) close(hard bool) {
	l.once.Do(func() {
		close(l.done)
		l.mu.Lock()
		up := l.upstream
		l.mu.Unlock()
		for _, c := range []net.Conn{l.client, up} {
			if c == nil {
				continue
			}
			if hard {
				reset(c)
			} else {
				_ = c.Close()
			}
		}
	})
}

func (l *link) forget() {
	l.p.mu.Lock()
	delete(l.p.links, l)
	l.p.mu.Unlock()
}

func (l *link) run() {
	defer l.p.wg.Done()
	defer l.forget()
	// A connection accepted during a blackhole is not connected through
	// until the blackhole ends.
	select {
	case <-l.p.gate():
	case <-l.done:
		return
	}
	up, err := l.p.dialer.Dial("tcp", l.p.target)
	if err != nil {
		l.close(true)
		return
	}
	l.mu.Lock()
	l.upstream = up
	l.mu.Unlock()
	select {
	case <-l.done: // closed while dialing
		_ = up.Close()
		return
	default:
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pump(up, l.client) }()
	go func() { defer wg.Done(); l.pump(l.client, up) }()
	wg.Wait()
	l.close(false)
}

type chunk struct {
	data []byte
	at   time.Time
}

// pump copies src to dst through a queue, applying the proxy's latency,
// blackhole gate and bandwidth limit. When src ends, dst's write side is
// closed so that the end of stream reaches the other peer.
func (l *link) pump(dst, src net.Conn) {
	q := make(chan chunk, queueLen)
	readerDone := make(chan struct{})
	defer func() { <-readerDone }() // the reader ends once src is closed or the link is done
	go func() {
		defer close(readerDone)
		defer close(q)
		for {
			buf := make([]byte, chunkSize)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case q <- chunk{data: buf[:n], at: time.Now()}:
				case <-l.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	var next time.Time // bandwidth pacing: earliest time of the next write
	for c := range q {
		if d := time.Duration(l.p.latency.Load()); d > 0 {
			if !l.waitUntil(c.at.Add(d)) {
				return
			}
		}
		for data := c.data; len(data) > 0; {
			select {
			case <-l.p.gate():
			case <-l.done:
				return
			}
			piece := data
			if bw := l.p.bandwidth.Load(); bw > 0 {
				// Pace in pieces of at most 1/20 s worth of bytes, so that
				// the rate holds over short transfers too.
				maxPiece := max(int(bw/20), 1)
				if len(piece) > maxPiece {
					piece = piece[:maxPiece]
				}
				if now := time.Now(); next.Before(now) {
					next = now
				}
				if !l.waitUntil(next) {
					return
				}
				next = next.Add(time.Duration(float64(len(piece)) / float64(bw) * float64(time.Second)))
			}
			if _, err := dst.Write(piece); err != nil {
				l.close(false)
				return
			}
			data = data[len(piece):]
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}

// waitUntil blocks until t or until the link closes; it reports whether t
// was reached.
func (l *link) waitUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-l.done:
		return false
	}
}

var _ io.Closer = (*Proxy)(nil)
