package publish

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
	"github.com/vigil-edge/vigil/agent/internal/throttle"
	"github.com/vigil-edge/vigil/buffer"
)

// readBatch bounds one live read from the buffer.
const readBatch = 256

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

	done chan struct{} // closed when the session ends

	stopWatch func() bool // stops closing the connection when the dial context ends
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
		done:   make(chan struct{}),
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
	p.log.Info("connected to the broker", "broker", p.opts.Broker, "client_id", p.opts.clientID(),
		"birth_seq", s.birth, "connects", n)

	// The status goes first, before any record: a subscriber that sees
	// "online" knows which birth the records that follow belong to.
	statusTok := s.cl.Publish(p.status, 1, true, p.statusPayload("online", s.birth, s.since, ""))
	var side sync.WaitGroup // goroutines that only watch tokens
	side.Go(func() { s.watch(statusTok, "publish online status") })
	if p.opts.CommandsEnabled {
		sub := s.cl.Subscribe(p.cmdBase+"+", 1, p.onCommand)
		side.Go(func() { s.watchSubscribe(sub) })
	}
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
	close(s.done)
	side.Wait()
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

// watch logs the failure of a token that nobody waits for.
func (s *session) watch(tok mqtt.Token, what string) {
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil && !s.isLost() {
			s.p.log.Warn(what+" failed", "err", err)
		}
	case <-s.lost:
	case <-s.done:
	}
}

func (s *session) watchSubscribe(tok mqtt.Token) {
	select {
	case <-tok.Done():
	case <-s.lost:
		return
	case <-s.done:
		return
	}
	if err := tok.Error(); err != nil {
		s.p.log.Warn("subscribe to commands failed", "err", err)
		return
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code > 1 {
				s.p.log.Warn("the broker refused the command subscription", "topic", topic, "code", code)
			}
		}
	}
}

// connect makes the paho client and connects it. The Last Will carries the
// birth number this connection will have.
func (s *session) connect(ctx context.Context) error {
	p := s.p
	u, err := url.Parse(p.opts.Broker)
	if err != nil {
		return fmt.Errorf("broker URL: %w", err)
	}
	var tlsCfg *tls.Config
	if mqttconn.IsTLS(u.Scheme) {
		if tlsCfg, err = p.opts.TLS.Config(); err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
	}
	co := mqtt.NewClientOptions().
		AddBroker(p.opts.Broker).
		SetClientID(p.opts.clientID()).
		SetUsername(p.opts.Username).
		SetPassword(p.opts.Password).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetStore(mqtt.NewMemoryStore()).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetOrderMatters(true).
		SetKeepAlive(p.opts.KeepAlive).
		SetPingTimeout(p.opts.PingTimeout).
		SetConnectTimeout(p.opts.ConnectTimeout).
		SetWriteTimeout(p.opts.WriteTimeout).
		SetBinaryWill(p.status, p.statusPayload("offline", s.birth, time.Time{}, "connection lost"), 1, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { s.markLost(err) }).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			return s.open(ctx, u, tlsCfg)
		})
	cl := mqtt.NewClient(co)
	tok := cl.Connect()
	// The connection is closed when ctx ends during the handshake (see
	// open), so the token completes promptly.
	<-tok.Done()
	watching := s.stopWatch != nil && s.stopWatch()
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect to %s as %s: %w%s", p.opts.Broker, p.opts.clientID(), err, hint(err, p.opts))
	}
	if !watching || ctx.Err() != nil {
		cl.Disconnect(0)
		return fmt.Errorf("connect to %s: %w", p.opts.Broker, context.Cause(ctx))
	}
	s.cl = cl
	return nil
}

// open dials the broker for paho, honouring ctx: the dial and the TLS
// handshake are cancelled with it, and so is the MQTT handshake that paho
// runs next (the connection is closed when ctx ends, until connect stops
// watching).
func (s *session) open(ctx context.Context, u *url.URL, tlsCfg *tls.Config) (net.Conn, error) {
	conn, err := mqttconn.Dial(ctx, u, mqttconn.DialOptions{Timeout: s.p.opts.ConnectTimeout, TLS: tlsCfg})
	if err != nil {
		return nil, err
	}
	s.stopWatch = context.AfterFunc(ctx, func() { _ = conn.Close() })
	return conn, nil
}

// hint adds advice to connection errors whose text alone leaves operators
// guessing.
func hint(err error, o Options) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "certificate required") && o.TLS.CertFile == "":
		return " (the broker requires a client certificate: set the TLS client certificate and key)"
	case strings.Contains(msg, "certificate required"), strings.Contains(msg, "bad certificate"),
		strings.Contains(msg, "unknown certificate authority"), strings.Contains(msg, "certificate revoked"),
		strings.Contains(msg, "certificate expired"), strings.Contains(msg, "unsupported certificate"):
		return " (the broker rejected the client certificate)"
	case mqttconn.IsTLSURL(o.Broker) && strings.Contains(msg, "connection reset by peer"):
		return " (the broker closed the TLS connection: it may have rejected the client certificate)"
	case strings.Contains(msg, "not Authorized"), strings.Contains(msg, "bad user name or password"):
		return " (check the username and password)"
	}
	return ""
}

// liveFeeder prepares the records appended after the split, as they come.
func (s *session) liveFeeder(ctx context.Context, sl *sessLane) error {
	buf, lane := s.p.buf, sl.meta.name
	cache := map[string]string{}
	cursor := sl.split
	batch := min(readBatch, sl.liveWin.size)
	for {
		notify := buf.Notify(lane)
		recs, err := buf.ReadFrom(lane, cursor+1, batch)
		if err != nil {
			return fmt.Errorf("read lane %s from %d: %w", lane, cursor+1, err)
		}
		if len(recs) == 0 {
			select {
			case <-notify:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		for _, r := range recs {
			ok, err := s.prepare(ctx, sl, sl.liveWin, sl.liveQ, r, false, cache)
			if err != nil || !ok {
				return err
			}
			cursor = r.Seq
		}
	}
}

// replayFeeder prepares the backlog: the records at or below the split
// that the consumer has not acknowledged, oldest first. The buffer's Read
// finds the first of them (the ack floor); from there the feeder reads by
// position, skipping what this process has acknowledged out of order on
// earlier connections (records acknowledged by an earlier process above its
// floor are sent again: duplicates with the same id). It refills its window
// one record per acknowledgement, so the connection never idles between
// batches: with a broker that has Nagle's algorithm on (mosquitto's
// default), an idle pause would hold the PUBACKs for a delayed-ACK timeout.
func (s *session) replayFeeder(ctx context.Context, sl *sessLane) error {
	buf, lane, win := s.p.buf, sl.meta.name, sl.replayWin
	first, err := buf.Read(s.p.opts.Consumer, lane, 1)
	if err != nil {
		return fmt.Errorf("read backlog of lane %s: %w", lane, err)
	}
	if len(first) == 0 || first[0].Seq > sl.split {
		return nil
	}
	sl.meta.acked.pruneBelow(first[0].Seq)
	cursor := first[0].Seq - 1 // highest backlog seq handled
	sl.backlog.Store(sl.split - cursor)
	defer sl.backlog.Store(0) // the rest, if any, was deleted or evicted
	cache := map[string]string{}
	batch := min(readBatch, win.size)
	for cursor < sl.split {
		recs, err := buf.ReadFrom(lane, cursor+1, batch)
		if err != nil {
			return fmt.Errorf("read backlog of lane %s from %d: %w", lane, cursor+1, err)
		}
		if len(recs) == 0 {
			return nil // the rest was deleted or evicted
		}
		for _, r := range recs {
			if r.Seq > sl.split {
				return nil
			}
			if !sl.meta.acked.contains(r.Seq) {
				ok, err := s.prepare(ctx, sl, win, sl.replayQ, r, true, cache)
				if err != nil || !ok {
					return err
				}
			}
			cursor = r.Seq
			sl.backlog.Store(sl.split - cursor)
		}
	}
	return nil
}

// prepare turns record r into a message in window w and queues it for the
// writer. A record that is not a JSON object is acknowledged and counted
// instead, so it cannot block the lane. ok is false when ctx ended.
func (s *session) prepare(ctx context.Context, sl *sessLane, w *window, q chan<- *outMsg, r buffer.Record, replayed bool, cache map[string]string) (ok bool, err error) {
	m, ok := w.acquire(ctx)
	if !ok {
		return false, nil
	}
	payload, key, rerr := rewrite(m.payload[:0], r.Data, r.Seq, replayed, sl.meta.key)
	if rerr != nil {
		w.release(m)
		return true, s.skipInvalid(sl, r, rerr)
	}
	m.payload, m.seq, m.replayed = payload, r.Seq, replayed
	m.topic = sl.meta.topic(key, cache)
	q <- m // never blocks: the queue holds a whole window
	s.signal()
	return true, nil
}

// topic returns the topic of a record whose key field is key.
func (l *laneMeta) topic(key []byte, cache map[string]string) string {
	if l.cache {
		if t, ok := cache[string(key)]; ok {
			return t
		}
	}
	b := make([]byte, 0, len(l.prefix)+len(key))
	b = append(b, l.prefix...)
	t := string(appendLevel(b, key))
	if l.cache {
		if len(cache) >= 1024 {
			clear(cache)
		}
		cache[string(key)] = t
	}
	return t
}

func (s *session) skipInvalid(sl *sessLane, r buffer.Record, cause error) error {
	lane := sl.meta.name
	if err := s.p.buf.Ack(s.p.opts.Consumer, lane, r.Seq); err != nil {
		return fmt.Errorf("ack invalid record %d of lane %s: %w", r.Seq, lane, err)
	}
	sl.meta.acked.add(r.Seq)
	sl.meta.invalid.Add(1)
	s.p.invalidLog.Log(slog.LevelError, "", "record cannot be published, skipped", "lane", lane, "seq", r.Seq, "err", cause)
	return nil
}

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

// ackBatch bounds the sequence numbers of one buffer Ack.
const ackBatch = 256

// acker waits for the sent messages of a lane in send order and
// acknowledges them in the buffer in batches. A failed message ends the
// session: its record, and every record after it not yet acknowledged, is
// sent again on the next connection. When ctx ends it acknowledges what has
// already completed and abandons the rest.
func (s *session) acker(ctx context.Context, sl *sessLane) error {
	lane := sl.meta.name
	seqs := make([]uint64, 0, ackBatch)
	batch := make([]*outMsg, 0, ackBatch)
	var failed error
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		seqs = seqs[:0]
		var replayed uint64
		for _, m := range batch {
			seqs = append(seqs, m.seq)
			if m.replayed {
				replayed++
			}
		}
		if err := s.p.buf.Ack(s.p.opts.Consumer, lane, seqs...); err != nil {
			batch = batch[:0]
			return fmt.Errorf("ack lane %s: %w", lane, err)
		}
		sl.meta.acked.add(seqs...)
		sl.meta.published.Add(uint64(len(batch)))
		sl.meta.replayed.Add(replayed)
		for _, m := range batch {
			m.win.release(m)
		}
		batch = batch[:0]
		return nil
	}
	stopping := false
	for m := range sl.ackq {
		if failed != nil {
			continue // drain: nothing after a failure is acknowledged
		}
		select {
		case <-m.tok.Done():
		default:
			if stopping {
				continue
			}
			if err := flush(); err != nil {
				return err
			}
			select {
			case <-m.tok.Done():
			case <-ctx.Done():
				stopping = true
				continue
			}
		}
		if err := m.tok.Error(); err != nil {
			if !stopping {
				failed = fmt.Errorf("publish %s seq %d to %s: %w", lane, m.seq, m.topic, err)
				s.fail(failed)
			}
			continue
		}
		batch = append(batch, m)
		if len(batch) == cap(batch) || len(sl.ackq) == 0 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return failed
}
