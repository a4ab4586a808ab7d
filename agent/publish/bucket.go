package publish

import (
	"math"
	"time"
)

// tokenBucket paces the replay: rate tokens per second, up to burst
// stored. It is used by one goroutine only.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

// newBucket returns a full bucket; a rate of 0 or less never makes anyone
// wait.
func newBucket(rate float64, burst int, now time.Time) tokenBucket {
	b := float64(max(burst, 1))
	return tokenBucket{rate: rate, burst: b, tokens: b, last: now}
}

// take takes a token at time now and returns 0, or, when there is none,
// takes nothing and returns how long until there is one.
func (b *tokenBucket) take(now time.Time) time.Duration {
	if b.rate <= 0 {
		return 0
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration(math.Ceil((1 - b.tokens) / b.rate * float64(time.Second)))
}
