// Package httpserve builds the daemon's HTTP server so that no client can
// hold it: every request has a deadline for its header, its body and its
// response, idle keep-alive connections are closed, and the number of
// connections open at once is capped, so a flood of slow clients can neither
// exhaust the process's file descriptors nor keep others out for longer than
// a read timeout.
package httpserve

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Options bound what one client may hold. Start from DefaultOptions.
type Options struct {
	// ReadHeaderTimeout bounds the reading of a request's header.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request, body included: a
	// client that sends its body slower is cut off.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of a request's header to
	// the end of its response.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that carries no new
	// request for this long.
	IdleTimeout time.Duration
	// MaxConns caps the connections open at once. Beyond it new
	// connections wait in the kernel's accept queue (they are not read,
	// and cost the process no descriptor) until one closes.
	MaxConns int
}

// DefaultOptions returns 10 s for the header, 30 s for the request and the
// response, 60 s of idle keep-alive, and 128 connections at once.
func DefaultOptions() Options {
	return Options{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxConns:          128,
	}
}

// Validate reports every field that is out of range.
func (o Options) Validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ReadHeaderTimeout", o.ReadHeaderTimeout}, {"ReadTimeout", o.ReadTimeout}, {"WriteTimeout", o.WriteTimeout}, {"IdleTimeout", o.IdleTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %v", d.name, d.v))
		}
	}
	if o.MaxConns < 1 {
		errs = append(errs, fmt.Errorf("MaxConns: must be at least 1, got %d", o.MaxConns))
	}
	return errors.Join(errs...)
}

// New returns a server for h with the options' timeouts, and ln wrapped so
// that at most opts.MaxConns connections are open at once: serve with
// srv.Serve(limited).
func New(h http.Handler, ln net.Listener, opts Options) (srv *http.Server, limited net.Listener, err error) {
	if err := opts.Validate(); err != nil {
		return nil, nil, fmt.Errorf("http server options: %w", err)
	}
	srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
	return srv, Limit(ln, opts.MaxConns), nil
}

// Limit returns a listener whose Accept waits while n connections it
// returned are still open.
func Limit(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	slots     chan struct{} // one token per open connection
	done      chan struct{} // closed by Close: Accept stops waiting
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back once, on the first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
