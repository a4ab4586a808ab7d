package testkit

import (
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/clock"
)

// FakeClock is a clock.Clock whose time moves only when the test says
// (Advance, AdvanceToNext) or, made by NewAutoClock, whenever a timer is
// set: then every wait on it ends at once, the clock moved by its length.
type FakeClock struct {
	mu     sync.Mutex
	now    time.Time
	auto   bool
	timers []*fakeTimer
}

// NewFakeClock returns a clock reading start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

// NewAutoClock returns a clock reading start that jumps to each timer's
// time as the timer is set, so that sleeping on it takes no real time.
func NewAutoClock(start time.Time) *FakeClock { return &FakeClock{now: start, auto: true} }

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock reaches now+d.
func (c *FakeClock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.auto && d > 0 {
		c.now = c.now.Add(d)
		c.fire()
	}
	t := &fakeTimer{c: c, when: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 || c.auto {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock by d and fires the timers that are due.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fire()
}

// AdvanceToNext moves the clock to the earliest pending timer and fires
// it; it returns how far the clock moved, or false without timers.
func (c *FakeClock) AdvanceToNext() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return 0, false
	}
	sort.Slice(c.timers, func(i, j int) bool { return c.timers[i].when.Before(c.timers[j].when) })
	d := max(c.timers[0].when.Sub(c.now), 0)
	c.now = c.now.Add(d)
	c.fire()
	return d, true
}

// AdvanceUntil polls cond every millisecond and, while it does not hold,
// moves the clock to its next timer (when one is set), so that what waits
// on the clock goes on. After timeout it fails the test with what and
// state(), which says what the test saw.
func (c *FakeClock) AdvanceUntil(tb testing.TB, timeout time.Duration, what string, cond func() bool, state func() string) {
	tb.Helper()
	err := Poll(timeout, func() bool {
		if cond() {
			return true
		}
		c.AdvanceToNext()
		return false
	})
	if err != nil {
		tb.Fatalf("timed out after %v waiting for %s; %s", timeout, what, state())
	}
}

// Timers returns the number of pending timers.
func (c *FakeClock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

func (c *FakeClock) fire() {
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.when.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
	}
	clear(c.timers[len(kept):])
	c.timers = kept
}

type fakeTimer struct {
	c    *FakeClock
	when time.Time
	ch   chan time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}
