package pipeline

import (
	"time"

	"github.com/vigil-edge/vigil/agent/source"
)

// order checks a sample's time against the stream's timeline, counts a
// late or out-of-order one, and follows a clock that stepped back (see
// timeline.admit): the partial window is dropped, the step is logged and
// counted once under the drop reason "clock_step", and scoring resumes.
func (st *streamState) order(src string, t time.Time) bool {
	from := st.clock.last
	reason, stepped := st.clock.admit(t, st.spec.MaxLateness, false, clockStepSamples(st.length))
	if stepped {
		st.followStep(src, "", from, t)
		if st.win != nil {
			st.win.Reset()
		}
		return true
	}
	if reason != "" {
		st.p.stats.drop(src, reason, 1)
		return false
	}
	return true
}

// followStep logs and counts a clock step back that the stream, or its
// key when key is not empty, has followed from from to t.
func (st *streamState) followStep(src, key string, from, t time.Time) {
	args := []any{"stream", st.spec.Name, "from", from.UTC(), "to", t.UTC(), "late_inputs_dropped", clockStepSamples(st.length) - 1}
	if key != "" {
		args = append(args, "key", key)
	}
	st.p.logRateLimited("the inputs' clock stepped back: taking the new timeline", args...)
	st.p.stats.drop(src, DropClockStep, 1)
}

// timeline is the newest time a stream, or one key of a behaviour
// stream, has taken, and the run of late inputs that may be its clock
// stepping back.
type timeline struct {
	last time.Time
	// A run of late inputs, each newer than the one before.
	stepRun  int
	stepLast time.Time
}

// admit checks t against the timeline: it returns the reason to drop t,
// or "" and moves the timeline to t. equalOK admits a time equal to the
// newest (events may share a timestamp; samples may not).
//
// A clock that steps back (an NTP correction on a device that stamps
// inputs on arrival, or on the kiosk that stamps a user's events) would
// make every later input late until the clock passes the newest time
// seen. So when need late inputs in a row each come after the one before,
// admit takes the last of them as the new timeline and reports stepped;
// the late ones before it were dropped as late.
func (tl *timeline) admit(t time.Time, maxLateness time.Duration, equalOK bool, need int) (reason source.DropReason, stepped bool) {
	if tl.last.IsZero() || t.After(tl.last) || (equalOK && t.Equal(tl.last)) {
		tl.stepRun = 0
		tl.last = t
		return "", false
	}
	switch {
	case t.Equal(tl.last):
		return source.DropDuplicate, false
	case maxLateness <= 0 || tl.last.Sub(t) <= maxLateness:
		return source.DropOutOfOrder, false
	}
	if tl.stepRun > 0 && t.After(tl.stepLast) {
		tl.stepRun++
	} else {
		tl.stepRun = 1
	}
	tl.stepLast = t
	if tl.stepRun >= need {
		tl.stepRun = 0
		tl.last = t
		return "", true
	}
	return source.DropLate, false
}

// DropClockStep counts the steps back of a stream's clock the pipeline
// followed (one per step; the late samples before it are counted as late).
const DropClockStep source.DropReason = "clock_step"

// clockStepSamples is how many late samples in increasing order make a
// clock step: a window's worth, and at least 10.
func clockStepSamples(window int) int {
	return max(window, 10)
}
