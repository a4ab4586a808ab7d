package testkit

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
)

// FaultServer is the fault-scripting core of an HTTP service double: a
// loopback server, the requests it received (of the double's type R), and
// the faults (of the double's type F) forced on the next requests, from a
// script or from a function. A double embeds it and answers in its own
// handler; its methods are safe for concurrent use.
type FaultServer[R, F any] struct {
	// URL is the server's root, e.g. http://127.0.0.1:port.
	URL string

	srv  *httptest.Server
	done chan struct{}
	once sync.Once

	mu       sync.Mutex
	script   []F
	faultFn  func(R) *F
	requests []R
}

// Start serves h on a loopback port.
func (s *FaultServer[R, F]) Start(h http.Handler) {
	s.done = make(chan struct{})
	s.srv = httptest.NewServer(h)
	s.URL = s.srv.URL
}

// Close stops the server, releasing hung requests.
func (s *FaultServer[R, F]) Close() {
	s.once.Do(func() {
		close(s.done)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// Script queues faults for the next requests that take a scripted fault,
// one each, in order.
func (s *FaultServer[R, F]) Script(faults ...F) {
	s.mu.Lock()
	s.script = append(s.script, faults...)
	s.mu.Unlock()
}

// SetFaultFunc sets a function asked for a fault for each request the
// script has none for; it returns nil to answer normally. It is called with
// the server's lock held: it must not call the server's methods.
func (s *FaultServer[R, F]) SetFaultFunc(fn func(R) *F) {
	s.mu.Lock()
	s.faultFn = fn
	s.mu.Unlock()
}

// Requests returns the requests received so far.
func (s *FaultServer[R, F]) Requests() []R {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]R(nil), s.requests...)
}

// Request returns request number n (from 1).
func (s *FaultServer[R, F]) Request(n int) R {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[n-1]
}

// Receive records a request made by mk from its number (from 1) and picks
// its fault: the next scripted one when scripted is true and the script has
// one, else the fault function's. faulted, when set, is told on the
// request whether a fault was picked, before it is recorded.
func (s *FaultServer[R, F]) Receive(mk func(n int) R, scripted bool, faulted func(*R, bool)) (int, *F) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := mk(len(s.requests) + 1)
	var fault *F
	if scripted && len(s.script) > 0 {
		fault = &s.script[0]
		s.script = s.script[1:]
	} else if s.faultFn != nil {
		fault = s.faultFn(req)
	}
	if faulted != nil {
		faulted(&req, fault != nil)
	}
	s.requests = append(s.requests, req)
	return len(s.requests), fault
}

// Answered updates request number n once it is answered.
func (s *FaultServer[R, F]) Answered(n int, update func(*R)) {
	s.mu.Lock()
	update(&s.requests[n-1])
	s.mu.Unlock()
}

// Hang waits until the client gives up on r or the server closes.
func (s *FaultServer[R, F]) Hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.done:
	}
}

// ResetConn closes the connection under the handler, with a TCP reset
// when it can.
func ResetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// ReplyJSON answers status with body as JSON (no body when nil) and
// returns status.
func ReplyJSON(w http.ResponseWriter, status int, body any) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if body != nil {
		_ = json.NewEncoder(w).Encode(body)
	}
	return status
}
