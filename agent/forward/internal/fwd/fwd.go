// Package fwd holds small helpers the forwarders share: Retry-After
// parsing, rate-limited logging, secret redaction and string truncation.
package fwd

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/internal/throttle"
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
// says how many it suppressed in between (see agent/internal/throttle).
type RateLog = throttle.Log

// NewRateLog returns a RateLog over log.
func NewRateLog(log *slog.Logger, clock forward.Clock, every time.Duration) *RateLog {
	return throttle.NewLog(log, clock, every)
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
