package source

import (
	"context"
	"log/slog"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/clock"
)

// Clock tells the time and makes timers. The sources that pace their
// output (the simulators and replay) take one, so that tests can run them
// on simulated time without sleeping. It is the agent's one clock (see
// agent/internal/clock).
type Clock = clock.Clock

// SystemClock is the real clock.
type SystemClock = clock.System

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
		return false, clock.Sleep(ctx, p.clock, d)
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
