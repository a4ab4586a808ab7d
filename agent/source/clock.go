package source

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Clock tells the time and waits. The sources that pace their output (the
// simulators and replay) take one, so that tests can run them on simulated
// time without sleeping.
type Clock interface {
	Now() time.Time
	// Sleep waits for d, or until ctx ends; it then returns ctx's error.
	// A d ≤ 0 returns at once.
	Sleep(ctx context.Context, d time.Duration) error
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Sleep waits for d or until ctx ends.
func (SystemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pacer releases item i at anchor + offset(i) on its clock. When the source
// falls more than maxLag behind (a stalled sink, a suspended device), it
// re-anchors instead of bursting to catch up.
type pacer struct {
	clock  Clock
	anchor time.Time     // wall time of offset 0
	shift  time.Duration // added to offsets after a re-anchor
	maxLag time.Duration
}

// wait sleeps until the item at offset is due. It returns ctx's error when
// ctx ends first, and whether it re-anchored.
func (p *pacer) wait(ctx context.Context, offset time.Duration) (reanchored bool, err error) {
	due := p.anchor.Add(offset + p.shift)
	d := due.Sub(p.clock.Now())
	if d > 0 {
		return false, p.clock.Sleep(ctx, d)
	}
	if p.maxLag > 0 && -d > p.maxLag {
		p.shift += -d
		return true, ctx.Err()
	}
	return false, ctx.Err()
}

// nopCounter is the Counter used when none is given.
type nopCounter struct{}

func (nopCounter) Drop(string, DropReason, int) {}

// discardLogger is the logger used when none is given.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// rateLog logs at most one message per interval and reports how many it
// suppressed in between, for the hot paths (bad rows, full queues).
type rateLog struct {
	log   *slog.Logger
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func newRateLog(log *slog.Logger, every time.Duration) *rateLog {
	return &rateLog{log: log, every: every}
}

// Warn logs msg at warning level unless a message was logged less than the
// interval ago.
func (r *rateLog) Warn(msg string, args ...any) {
	now := time.Now()
	r.mu.Lock()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	r.log.Warn(msg, args...)
}
