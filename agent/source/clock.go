package source

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/clock"
	"github.com/vigil-edge/vigil/agent/internal/throttle"
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

// defaults fills what every source's options share when unset: the system
// clock, a counter that counts nothing (counter may be nil for sources
// without one) and a logger that discards.
func defaults(clock *Clock, counter *Counter, logger **slog.Logger) {
	if *clock == nil {
		*clock = SystemClock{}
	}
	if counter != nil && *counter == nil {
		*counter = nopCounter{}
	}
	if *logger == nil {
		*logger = discardLogger()
	}
}

// checkSource checks what every source's constructor is given: the
// options (validate also fills their defaults) and a sink; what names the
// source in errors.
func checkSource(what string, validate func() error, sink Sink) error {
	if err := validate(); err != nil {
		return fmt.Errorf("%s options: %w", what, err)
	}
	if sink == nil {
		return fmt.Errorf("%s: nil sink", what)
	}
	return nil
}

// core is what every source holds: its options, its sink, and its
// loggers, which name it; rlog is rate-limited for the hot paths (bad
// rows, full queues).
type core[O any] struct {
	opts O
	sink Sink
	log  *slog.Logger
	rlog *throttle.Log
}

func newCore[O any](opts O, sink Sink, logger *slog.Logger, name string) core[O] {
	log := logger.With("component", "source", "source", name)
	return core[O]{opts: opts, sink: sink, log: log, rlog: throttle.NewLog(log, nil, 10*time.Second)}
}

// nopCounter is the Counter used when none is given.
type nopCounter struct{}

func (nopCounter) Drop(string, DropReason, int) {}

// discardLogger is the logger used when none is given.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
