package daemon

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/health"
)

// restartPolicy says when a supervised part is run again.
type restartPolicy int

const (
	// restartNever: an error ends the part and is returned (the caller
	// ends Run with it); a nil return means the part finished.
	restartNever restartPolicy = iota
	// restartOnError: an error restarts the part after a backoff; a nil
	// return means it finished (a source).
	restartOnError
	// restartAlways: any return before ctx ends, error or not, restarts the
	// part after a backoff (a consumer, which runs until it is stopped).
	restartAlways
)

// supervisor runs the daemon's parts and keeps, for health and /metrics,
// each part's state and its restarts over the process's life (a reload's
// parts carry on the counts of the parts they replace).
type supervisor struct {
	log     *slog.Logger
	backoff forward.Backoff
	wrapFn  func(string, func(context.Context) error) func(context.Context) error

	mu    sync.Mutex
	state map[string]*health.Part
}

func newSupervisor(log *slog.Logger, b forward.Backoff, wrap func(string, func(context.Context) error) func(context.Context) error) *supervisor {
	return &supervisor{log: log.With("component", "supervisor"), backoff: b, wrapFn: wrap, state: map[string]*health.Part{}}
}

// wrap applies Options.WrapPart.
func (s *supervisor) wrap(name string, run func(context.Context) error) func(context.Context) error {
	if s.wrapFn == nil {
		return run
	}
	return s.wrapFn(name, run)
}

// keep runs part name until ctx ends, restarting it as policy says. It
// returns nil when ctx ends or the part finished, and the part's error
// under restartNever.
func (s *supervisor) keep(ctx context.Context, name string, run func(context.Context) error, policy restartPolicy) error {
	run = s.wrap(name, run)
	attempt := 0
	for {
		s.set(name, func(p *health.Part) { p.State, p.LastError = health.PartRunning, "" })
		began := time.Now()
		err := run(ctx)
		if ctx.Err() != nil {
			s.set(name, func(p *health.Part) { p.State = health.PartStopped })
			return nil
		}
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		if err == nil && policy != restartAlways {
			s.set(name, func(p *health.Part) { p.State = health.PartStopped })
			return nil
		}
		if err == nil {
			err = errors.New("returned before it was stopped")
		}
		if policy == restartNever {
			s.set(name, func(p *health.Part) { p.State, p.LastError = health.PartFailed, err.Error() })
			return err
		}
		if time.Since(began) > s.backoff.Max {
			attempt = 0 // it ran well for a while: start the backoff over
		}
		attempt++
		delay := s.backoff.Delay(attempt)
		s.set(name, func(p *health.Part) {
			p.State, p.LastError = health.PartRestarting, err.Error()
			p.Restarts++
		})
		s.log.Warn("part failed: restarting it", "part", name, "err", err, "in", delay, "attempt", attempt)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			s.set(name, func(p *health.Part) { p.State = health.PartStopped })
			return nil
		case <-t.C:
		}
	}
}

func (s *supervisor) set(name string, f func(*health.Part)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.state[name]
	if p == nil {
		p = &health.Part{}
		s.state[name] = p
	}
	f(p)
}

// parts returns a copy of every part's state, for health.
func (s *supervisor) parts() map[string]health.Part {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]health.Part, len(s.state))
	for name, p := range s.state {
		out[name] = *p
	}
	return out
}

// restartSummary names the parts that restarted, for the status command.
func (s *supervisor) restartSummary() []string {
	var out []string
	for name, p := range s.parts() {
		if p.Restarts > 0 {
			out = append(out, name+" "+p.State+" after "+strconv.FormatUint(p.Restarts, 10)+" restart(s)")
		}
	}
	sort.Strings(out)
	return out
}
