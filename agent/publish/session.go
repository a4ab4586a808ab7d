package publish

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// session is one connection to the broker, from CONNACK to its end. All its
// goroutines end before the next session begins, so nothing of a dead
// connection (tokens, payloads) is shared with the next.
type session struct {
	p     *Publisher
	cl    mqtt.Client
	birth uint64
	since time.Time

	lanes []*sessLane // parallel to p.lanes
	wake  chan struct{}

	lost     chan struct{}
	lostOnce sync.Once
	lostErr  error

	failed   chan struct{}
	failOnce sync.Once
	failErr  error

	stopWatch func() bool // stops closing the connection when the dial context ends
	broker    string      // the URL of the broker the session is connected to
}

// sessLane is a lane's state within a session.
type sessLane struct {
	meta      *laneMeta
	split     uint64        // LastSeq at connect: live records are above it
	liveWin   *window       // slots of live messages in flight
	replayWin *window       // slots of backlog messages in flight
	liveQ     chan *outMsg  // prepared, not yet sent
	replayQ   chan *outMsg  // prepared, not yet sent
	ackq      chan *outMsg  // sent, in send order, awaiting completion
	backlog   atomic.Uint64 // backlog records not yet read (an upper bound)
}

// outMsg is one message and its window slot; its payload buffer is reused
// once the message is acknowledged.
type outMsg struct {
	win      *window
	seq      uint64
	replayed bool
	topic    string
	payload  []byte
	tok      mqtt.Token
}

// window is a bounded pool of message slots: a feeder takes a slot before
// preparing a message and the acker returns it after the buffer Ack.
type window struct {
	free     chan *outMsg
	released chan struct{} // signalled on every release
	size     int
}

func newWindow(n int) *window {
	w := &window{free: make(chan *outMsg, n), released: make(chan struct{}, 1), size: n}
	for range n {
		w.free <- &outMsg{win: w}
	}
	return w
}

func (w *window) acquire(ctx context.Context) (*outMsg, bool) {
	select {
	case m := <-w.free:
		return m, true
	case <-ctx.Done():
		return nil, false
	}
}

func (w *window) release(m *outMsg) {
	m.tok = nil
	w.free <- m
	select {
	case w.released <- struct{}{}:
	default:
	}
}

func (w *window) inUse() int { return w.size - len(w.free) }

func (s *session) markLost(err error) {
	s.lostOnce.Do(func() {
		s.lostErr = err
		close(s.lost)
	})
}

func (s *session) fail(err error) {
	s.failOnce.Do(func() {
		s.failErr = err
		close(s.failed)
	})
}

func (s *session) isLost() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// signal wakes the writer.
func (s *session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// runSession connects and publishes until the connection ends or ctx does.
// connected tells whether the connection came up.
func (p *Publisher) runSession(ctx context.Context) (connected bool, err error) {
	s := &session{
		p:      p,
		birth:  p.birth.next(),
		wake:   make(chan struct{}, 1),
		lost:   make(chan struct{}),
		failed: make(chan struct{}),
	}
	if err := s.connect(ctx); err != nil {
		return false, err
	}
	if err := p.birth.commit(s.birth); err != nil {
		p.log.Error("cannot save the birth sequence number", "err", err)
	}
	s.since = p.now()
	n := p.connects.Add(1)
	for _, l := range p.lanes {
		s.lanes = append(s.lanes, &sessLane{
			meta:      l,
			split:     p.buf.LastSeq(l.name),
			liveWin:   newWindow(p.opts.InFlight),
			replayWin: newWindow(p.opts.InFlight),
			liveQ:     make(chan *outMsg, p.opts.InFlight),
			replayQ:   make(chan *outMsg, p.opts.InFlight),
			ackq:      make(chan *outMsg, 2*p.opts.InFlight),
		})
	}
	p.noteBroker(s.broker)
	p.log.Info("connected to the broker", "broker", s.broker, "client_id", p.opts.clientID(),
		"birth_seq", s.birth, "connects", n)

	// The status goes first, before any record: a subscriber that sees
	// "online" knows which birth the records that follow belong to.
	// The keepers confirm it, subscribe to the commands and keep both in
	// place while the connection lasts (see keeper).
	p.cmdSubscribed.Store(false)
	keep := s.keep(s.publishStatus())
	p.setCurrent(s)

	feedCtx, stopFeed := context.WithCancel(ctx)
	ackCtx, stopAck := context.WithCancel(context.WithoutCancel(ctx))
	var feeders, ackers sync.WaitGroup
	for _, sl := range s.lanes {
		feeders.Go(func() { s.run(s.liveFeeder(feedCtx, sl)) })
		feeders.Go(func() { s.run(s.replayFeeder(feedCtx, sl)) })
		ackers.Go(func() { s.run(s.acker(ackCtx, sl)) })
	}
	feeders.Go(func() { s.writer(feedCtx) })

	shutdown := false
	select {
	case <-ctx.Done():
		shutdown = true
	case <-s.lost:
	case <-s.failed:
	}
	p.setCurrent(nil) // no more health, replies or rebirths on this connection
	keep.end()        // and no more "online" status: the "offline" one may follow
	p.cmdSubscribed.Store(false)
	stopFeed()
	feeders.Wait()
	for _, sl := range s.lanes {
		close(sl.ackq)
	}
	if shutdown && !s.isLost() {
		// Give the messages in flight a chance to be acknowledged, so they
		// are not sent again at the next start.
		done := make(chan struct{})
		go func() { ackers.Wait(); close(done) }()
		t := time.NewTimer(p.opts.DrainTimeout)
		select {
		case <-done:
		case <-s.lost:
		case <-t.C:
		}
		t.Stop()
	}
	stopAck()
	ackers.Wait()

	switch {
	case s.isLost():
		err = fmt.Errorf("connection lost: %w", s.lostErr)
	case shutdown:
		tok := s.cl.Publish(p.status, 1, true, p.statusPayload("offline", s.birth, p.now(), "shutdown"))
		if !waitToken(tok, p.opts.DrainTimeout, s.lost) {
			p.log.Warn("offline status not acknowledged before disconnecting", "err", tok.Error())
		}
		s.cl.Disconnect(250)
		p.log.Info("disconnected from the broker")
	default:
		err = s.failErr
		s.cl.Disconnect(0)
	}
	return true, err
}

// run ends the session when a worker fails.
func (s *session) run(err error) {
	if err != nil {
		s.fail(err)
	}
}

// waitToken waits for tok up to d or until stop closes; it reports whether
// tok completed without error.
func waitToken(tok mqtt.Token, d time.Duration, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error() == nil
	case <-t.C:
	case <-stop:
	}
	return false
}
