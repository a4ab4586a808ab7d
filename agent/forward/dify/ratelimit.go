package dify

import (
	"fmt"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/throttle"
)

// Rate is a count per period; a zero Count means unlimited. The
// configuration's rate (config.Rate, "6/min") converts to it.
type Rate struct {
	Count int
	Per   time.Duration
}

// Unlimited reports whether the rate sets no limit.
func (r Rate) Unlimited() bool { return r.Count == 0 }

// Interval is the mean time between events at this rate (0 when unlimited).
func (r Rate) Interval() time.Duration {
	if r.Count == 0 {
		return 0
	}
	return r.Per / time.Duration(r.Count)
}

// String writes the rate as the configuration reads it: 6/min, 10/s,
// 3/30s, 0.
func (r Rate) String() string {
	if r.Count == 0 {
		return "0"
	}
	switch r.Per {
	case time.Second:
		return fmt.Sprintf("%d/s", r.Count)
	case time.Minute:
		return fmt.Sprintf("%d/min", r.Count)
	case time.Hour:
		return fmt.Sprintf("%d/h", r.Count)
	}
	// The period without the zero units time.Duration.String adds: 1m30s,
	// 2m, 1h.
	per := r.Per.String()
	if strings.HasSuffix(per, "m0s") {
		per = strings.TrimSuffix(per, "0s")
	}
	if strings.HasSuffix(per, "h0m") {
		per = strings.TrimSuffix(per, "0m")
	}
	return fmt.Sprintf("%d/%s", r.Count, per)
}

// newBucket returns a token bucket for rate, or nil for no limit.
func newBucket(rate Rate, burst int) *throttle.Bucket {
	if rate.Unlimited() {
		return nil
	}
	if burst == 0 {
		burst = rate.Count
	}
	return throttle.NewBucket(rate.Interval(), burst)
}
