package source

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// newFakeClock returns a clock on simulated time: sleeping on it advances
// it at once.
func newFakeClock() *testkit.FakeClock {
	return testkit.NewAutoClock(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
}

// fakeSink records what it is given. With capacity > 0, TryPut fails once
// it holds that many inputs.
type fakeSink struct {
	mu       sync.Mutex
	ins      []Input
	capacity int
	// putHook, when set, runs after each Put (e.g. to cancel a context).
	putHook func(n int)
}

func (s *fakeSink) Put(ctx context.Context, in Input) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.ins = append(s.ins, in)
	n := len(s.ins)
	hook := s.putHook
	s.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return nil
}

func (s *fakeSink) TryPut(in Input) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.capacity > 0 && len(s.ins) >= s.capacity {
		return false
	}
	s.ins = append(s.ins, in)
	return true
}

func (s *fakeSink) Inputs() []Input {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Input(nil), s.ins...)
}

func (s *fakeSink) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ins)
}

// fakeCounter counts drops.
type fakeCounter struct {
	mu sync.Mutex
	n  map[DropReason]int
}

func (c *fakeCounter) Drop(_ string, r DropReason, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[DropReason]int{}
	}
	c.n[r] += n
}

func (c *fakeCounter) Get(r DropReason) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[r]
}

func (c *fakeCounter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := 0
	for _, n := range c.n {
		t += n
	}
	return t
}

// runAsync runs f on a goroutine and returns a function that waits for its
// result.
func runAsync(f func() error) func(t testing.TB) error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return func(t testing.TB) error {
		t.Helper()
		select {
		case err := <-ch:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}
}

// checkDeterministic checks that write gives the same bytes twice for o
// and other bytes for other (o with another seed); it returns o's bytes.
func checkDeterministic[O any](t *testing.T, o, other O, write func(io.Writer, O) error) []byte {
	t.Helper()
	run := func(o O) []byte {
		var b bytes.Buffer
		if err := write(&b, o); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	a := run(o)
	if !bytes.Equal(a, run(o)) {
		t.Fatal("same seed, different bytes")
	}
	if bytes.Equal(a, run(other)) {
		t.Fatal("different seeds, same bytes")
	}
	return a
}

// runNew makes a source with newFn and runs it to its end, failing the
// test on an error.
func runNew[O any, S interface{ Run(context.Context) error }](t testing.TB, newFn func(O, Sink) (S, error), o O, sink Sink) S {
	t.Helper()
	src, err := newFn(o, sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return src
}
