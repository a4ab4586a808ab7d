package pipeline

import (
	"time"

	"github.com/vigil-edge/vigil/agent/source"
)

// order checks a sample's time against the stream's timeline, counts a
// late, out-of-order or duplicate one, and follows a clock that stepped
// back (see timeline.admit): the partial window is dropped, the step is
// logged and counted once under the drop reason "clock_step", and scoring
// resumes. Samples that share a time are taken in arrival order unless
// they are duplicates (see dupFilter).
func (st *streamState) order(in source.Input, vals []float64) bool {
	t := in.Time
	if in.ID != "" && st.dups.seenID(in.ID) {
		// Before the timeline: a duplicate does not move it.
		st.p.stats.drop(in.Source, source.DropDuplicate, 1)
		return false
	}
	from := st.clock.last
	reason, stepped := st.clock.admit(t, st.spec.MaxLateness, true, clockStepSamples(st.length))
	if stepped {
		st.followStep(in.Source, "", from, t)
		if st.win != nil {
			st.win.Reset()
		}
		st.dups.reset()
	} else if reason != "" {
		st.p.stats.drop(in.Source, reason, 1)
		return false
	}
	if st.dups.duplicate(t, in.ID, vals) {
		st.p.stats.drop(in.Source, source.DropDuplicate, 1)
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
	// A run of late inputs, each no older than the one before, from
	// stepFirst to stepLast.
	stepRun             int
	stepFirst, stepLast time.Time
}

// admit checks t against the timeline: it returns the reason to drop t,
// or "" and moves the timeline to t. equalOK admits a time equal to the
// newest (inputs may share a timestamp; the pipeline always sets it, and
// tells duplicates by other means).
//
// A clock that steps back (an NTP correction on a device that stamps
// inputs on arrival, or on the kiosk that stamps a user's events) would
// make every later input late until the clock passes the newest time
// seen. So when need late inputs in a row each come no earlier than the
// one before, and the last after the first (coarse timestamps repeat; a
// stuck clock never moves), admit takes the last of them as the new
// timeline and reports stepped; the late ones before it were dropped as
// late.
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
	if tl.stepRun > 0 && !t.Before(tl.stepLast) {
		tl.stepRun++
	} else {
		tl.stepRun, tl.stepFirst = 1, t
	}
	tl.stepLast = t
	if tl.stepRun >= need && t.After(tl.stepFirst) {
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
