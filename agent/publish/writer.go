package publish

import (
	"context"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/throttle"
)

// writer publishes the prepared messages, live ones first and alerts and
// advice before scores, and the backlog at the replay pace.
func (s *session) writer(ctx context.Context) {
	bucket := throttle.NewBucket(throttle.PerSecond(s.p.opts.ReplayRate), s.p.opts.ReplayBurst)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		if m, sl := s.next(true); m != nil {
			s.send(sl, m)
			continue
		}
		if s.replayPending() {
			wait := bucket.Take(time.Now())
			if wait == 0 {
				m, sl := s.next(false)
				s.send(sl, m)
				continue
			}
			timer.Reset(wait)
			select {
			case <-s.wake:
			case <-timer.C:
			case <-ctx.Done():
				return
			}
			continue
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return
		}
	}
}

// next takes the first queued message in priority order, from the live
// queues or the replay queues.
func (s *session) next(live bool) (*outMsg, *sessLane) {
	for _, sl := range s.lanes {
		q := sl.replayQ
		if live {
			q = sl.liveQ
		}
		select {
		case m := <-q:
			return m, sl
		default:
		}
	}
	return nil, nil
}

func (s *session) replayPending() bool {
	for _, sl := range s.lanes {
		if len(sl.replayQ) > 0 {
			return true
		}
	}
	return false
}

func (s *session) send(sl *sessLane, m *outMsg) {
	m.tok = s.cl.Publish(m.topic, sl.meta.qos, false, m.payload)
	sl.ackq <- m // never blocks: it holds both windows
}
