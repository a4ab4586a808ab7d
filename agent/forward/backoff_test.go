package forward

import (
	"testing"
)

func TestStateGauge(t *testing.T) {
	for s, want := range map[State]int{StateOK: 0, StateRetrying: 1, StateThrottled: 2, StateFailing: 3} {
		if s.Gauge() != want {
			t.Errorf("%s: %d", s, s.Gauge())
		}
	}
}
