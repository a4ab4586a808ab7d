// Package fwd holds small helpers the forwarders share: Retry-After
// parsing, rate-limited logging, secret redaction and string truncation.
package fwd

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/agent/forward"
)

// RetryAfter parses a Retry-After header: delay-seconds or an HTTP date.
// It reports false when the header is absent or malformed. A date in the
// past gives 0.
func RetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > 1<<31 {
			n = 1 << 31
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
}

// RateLog logs a message of a given key at most once per interval, and
// says how many it suppressed in between.
type RateLog struct {
	log   *slog.Logger
	clock forward.Clock
	every time.Duration

	mu   sync.Mutex
	last map[string]time.Time
	supp map[string]int
}

// NewRateLog returns a RateLog over log.
func NewRateLog(log *slog.Logger, clock forward.Clock, every time.Duration) *RateLog {
	return &RateLog{log: log, clock: clock, every: every, last: map[string]time.Time{}, supp: map[string]int{}}
}

// Log logs msg at level unless a message with the same key was logged less
// than the interval ago.
func (r *RateLog) Log(level slog.Level, key, msg string, args ...any) {
	now := r.clock.Now()
	r.mu.Lock()
	if last, ok := r.last[key]; ok && now.Sub(last) < r.every {
		r.supp[key]++
		r.mu.Unlock()
		return
	}
	n := r.supp[key]
	r.last[key], r.supp[key] = now, 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	r.log.Log(context.Background(), level, msg, args...)
}

// Reset forgets key, so that its next message is logged at once (used when
// a state ends, so that the next failure is loud again).
func (r *RateLog) Reset(key string) {
	r.mu.Lock()
	delete(r.last, key)
	delete(r.supp, key)
	r.mu.Unlock()
}

// Redact replaces every occurrence of secret in s with "[redacted]"; an
// error message of a service may echo the key it refused.
func Redact(s, secret string) string {
	if secret == "" || !strings.Contains(s, secret) {
		return s
	}
	return strings.ReplaceAll(s, secret, "[redacted]")
}

// Truncate cuts s to at most n bytes, at a rune boundary, so the result is
// at most n characters by any count.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// Clean makes a service's message fit for a log line, an error and a dead
// letter: the secret redacted, at most 300 bytes.
func Clean(s, secret string) string {
	s = Redact(s, secret)
	if len(s) > 300 {
		s = Truncate(s, 297) + "..."
	}
	return s
}

// Wait waits for d on clock, or until ctx ends or wake fires (wake may be
// nil). It reports whether ctx is still alive.
func Wait(ctx context.Context, clock forward.Clock, d time.Duration, wake <-chan struct{}) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
	case <-wake:
	}
	return ctx.Err() == nil
}
