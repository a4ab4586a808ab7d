// Package testkit is what the agent's tests share: a WaitFor that polls
// instead of sleeping and says what it last saw, one fake clock, a buffer
// safe for a logger and a test to share, and a fault-scripting HTTP
// double (see FaultServer) that the forwarders' service doubles build on.
package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond every millisecond until it holds, failing the test
// with what after timeout. cond is a func() bool, or a func() error that
// holds when it returns nil; then the failure reports the last error, so a
// timeout says what was still wrong.
func WaitFor[C func() bool | func() error](tb testing.TB, timeout time.Duration, what string, cond C) {
	tb.Helper()
	if err := Poll(timeout, cond); err != nil {
		tb.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
	}
}

// ErrNotYet is what Poll reports when a func() bool cond still does not
// hold at the timeout.
var ErrNotYet = errors.New("condition not met")

// Poll polls cond every millisecond until it holds and returns nil, or
// returns its last error (ErrNotYet for a func() bool) after timeout.
func Poll[C func() bool | func() error](timeout time.Duration, cond C) error {
	check := func() error {
		switch c := any(cond).(type) {
		case func() bool:
			if !c() {
				return ErrNotYet
			}
			return nil
		case func() error:
			return c()
		}
		panic(fmt.Sprintf("testkit: cond of type %T", cond))
	}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		<-tick.C // polling, not a timed assertion
	}
}

// Buffer is a bytes.Buffer safe for concurrent use: a logger (or a
// program's output) writes while the test reads.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logger returns a debug-level text logger writing to b.
func (b *Buffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Go runs run on a goroutine with a context of its own and returns stop,
// which cancels that context and returns run's error. stop may be called
// more than once; later calls return the first result.
func Go(run func(context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
}

// StopTimeout bounds how long Run's stop waits for run to return.
const StopTimeout = 15 * time.Second

// Run runs run as Go does until the test ends (or stop is called), then
// fails the test if run returned an error, naming it what, or did not
// return within StopTimeout of its cancellation.
func Run(tb testing.TB, what string, run func(context.Context) error) (stop func()) {
	tb.Helper()
	halt := Go(run)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			done := make(chan error, 1)
			go func() { done <- halt() }()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("%s: %v", what, err)
				}
			case <-time.After(StopTimeout):
				tb.Errorf("%s did not return within %v of cancellation", what, StopTimeout)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

// SkipUnderRace skips a test that learns models on real data when the race
// detector is on: it finds no race there (the learning and scoring are the
// same code the race-enabled tests run on small data) and makes the test
// ten times slower. `make test` runs these tests without -race beside the
// race-enabled run (its SKAB job).
func SkipUnderRace(t testing.TB, what string) {
	t.Helper()
	if Race {
		t.Skipf("%s: too slow under -race; make test runs it without (go test -run %s)", what, t.Name())
	}
}

// FreePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago, for a server a test starts (another process may take one
// before the server binds it: retry on "address already in use").
func FreePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer l.Close() // held until all are chosen, so that they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
