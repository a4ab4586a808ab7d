package forward

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 5 * time.Minute}
	for attempt, want := range map[int]time.Duration{
		0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second,
		9: 256 * time.Second, 10: 5 * time.Minute, 1000: 5 * time.Minute,
	} {
		for range 100 {
			d := b.Delay(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %v, want within [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
	if err := (Backoff{Initial: time.Second, Max: time.Millisecond}).Validate("B"); err == nil {
		t.Error("Max < Initial accepted")
	}
}

func TestStateGauge(t *testing.T) {
	for s, want := range map[State]int{StateOK: 0, StateRetrying: 1, StateThrottled: 2, StateFailing: 3} {
		if s.Gauge() != want {
			t.Errorf("%s: %d", s, s.Gauge())
		}
	}
}
