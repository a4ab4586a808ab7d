// Package throttle is the agent's one of each for slowing down: a capped,
// jittered exponential [Backoff], a token [Bucket] and a rate-limited [Log]
// that counts what it suppressed. The publisher, the sources and the
// forwarders use them.
package throttle

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/clock"
)

// Backoff is a capped, jittered exponential backoff: attempt n (from 1)
// waits a random time in [d/2, d] where d = min(Initial·2^(n-1), Max).
type Backoff struct {
	// Initial is the delay before the first retry (before jitter).
	Initial time.Duration
	// Max caps the delay.
	Max time.Duration
}

// Delay returns the wait before retry number attempt (1 for the first).
func (b Backoff) Delay(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := b.Initial
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Validate reports what is wrong with b, naming the field under prefix.
func (b Backoff) Validate(prefix string) error {
	switch {
	case b.Initial <= 0:
		return fmt.Errorf("%s.Initial: must be positive, got %v", prefix, b.Initial)
	case b.Max < b.Initial:
		return fmt.Errorf("%s.Max: must be at least Initial (%v), got %v", prefix, b.Initial, b.Max)
	}
	return nil
}

// Bucket is a token bucket: one token every Every, up to Burst stored. It
// is safe for concurrent use. An Every of 0 or less never makes anyone
// wait.
type Bucket struct {
	every  time.Duration
	burst  float64
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// NewBucket returns a full bucket of burst tokens (at least 1), one more
// every every.
func NewBucket(every time.Duration, burst int) *Bucket {
	b := float64(max(burst, 1))
	return &Bucket{every: every, burst: b, tokens: b}
}

// PerSecond returns the interval of rate tokens a second; 0 for a rate of
// 0 or less (no limit).
func PerSecond(rate float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(time.Second) / rate)
}

// Take takes a token at time now and returns 0, or, when there is none,
// takes nothing and returns how long until there is one.
func (b *Bucket) Take(now time.Time) time.Duration {
	if b.every <= 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() || now.After(b.last) {
		if !b.last.IsZero() {
			b.tokens = min(b.burst, b.tokens+float64(now.Sub(b.last))/float64(b.every))
		}
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration(math.Ceil((1 - b.tokens) * float64(b.every)))
}

// Wait takes a token on c, waiting for one if needed; it reports false
// when ctx ended first. A nil bucket never waits.
func (b *Bucket) Wait(ctx context.Context, c clock.Clock) bool {
	if b == nil {
		return ctx.Err() == nil
	}
	for {
		d := b.Take(c.Now())
		if d == 0 {
			return ctx.Err() == nil
		}
		if clock.Sleep(ctx, c, d) != nil {
			return false
		}
	}
}

// Log logs a message of a given key at most once per interval, and says
// how many of that key it suppressed in between.
type Log struct {
	log   *slog.Logger
	clock clock.Clock
	every time.Duration

	mu   sync.Mutex
	last map[string]time.Time
	supp map[string]int
}

// NewLog returns a Log over log on c (nil means the system clock).
func NewLog(log *slog.Logger, c clock.Clock, every time.Duration) *Log {
	if c == nil {
		c = clock.System{}
	}
	return &Log{log: log, clock: c, every: every, last: map[string]time.Time{}, supp: map[string]int{}}
}

// Allow reports whether a message of key may be logged now and, if so, how
// many of key it suppressed since the last one; a false counts one more
// suppressed.
func (r *Log) Allow(key string) (bool, int) {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if last, ok := r.last[key]; ok && now.Sub(last) < r.every {
		r.supp[key]++
		return false, 0
	}
	n := r.supp[key]
	r.last[key], r.supp[key] = now, 0
	return true, n
}

// Log logs msg at level unless a message with the same key was logged less
// than the interval ago; it adds "suppressed" when it suppressed some.
func (r *Log) Log(level slog.Level, key, msg string, args ...any) {
	ok, n := r.Allow(key)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	r.log.Log(context.Background(), level, msg, args...)
}

// Warn logs msg at warning level under one key shared by every Warn.
func (r *Log) Warn(msg string, args ...any) { r.Log(slog.LevelWarn, "", msg, args...) }

// Reset forgets key, so that its next message is logged at once (used when
// a state ends, so that the next failure is loud again).
func (r *Log) Reset(key string) {
	r.mu.Lock()
	delete(r.last, key)
	delete(r.supp, key)
	r.mu.Unlock()
}
