package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/clock"
	"github.com/vigil-edge/vigil/agent/internal/throttle"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

// Log is the part of the buffer the publisher uses; [buffer.Buffer] has it.
// It is larger than the usual small interface because a consumer that
// replays live-first needs all of it: cursor reads (Read), position reads
// (ReadFrom, LastSeq), acknowledgements and wake-ups.
type Log interface {
	Read(consumer, lane string, max int) ([]buffer.Record, error)
	ReadFrom(lane string, from uint64, max int) ([]buffer.Record, error)
	Ack(consumer, lane string, seqs ...uint64) error
	LastSeq(lane string) uint64
	Notify(lane string) <-chan struct{}
	RegisterConsumer(name string, lanes ...string) error
}

// ErrNotConnected is returned by the methods that need a connection to the
// broker when there is none.
var ErrNotConnected = errors.New("not connected to the broker")

// laneSpec describes how a lane is published.
type laneSpec struct {
	name  string // buffer lane
	level string // topic level after the device: scores, alerts, advice
	key   string // record field naming the last topic level
	qos   byte
	cache bool // whether topics are few enough to cache
}

// laneMeta is a lane's spec and its counters over the publisher's life.
type laneMeta struct {
	laneSpec
	prefix    string // <base>/<level>/
	published atomic.Uint64
	replayed  atomic.Uint64
	invalid   atomic.Uint64
	acked     seqSet // acknowledged by this process, above the floor (see replayFeeder)
}

// Publisher publishes the buffer's records to an MQTT broker and is Vigil's
// control plane there. Create it with [New] and start it with
// [Publisher.Run]; the other methods are safe for concurrent use.
type Publisher struct {
	buf  Log
	opts Options
	log  *slog.Logger
	now  func() time.Time

	lanes   []*laneMeta // in priority order: alert, advice, score
	base    string      // <prefix>/<device>
	status  string      // topics
	health  string
	cmdBase string // <base>/cmd/

	birth *birthStore
	cmdq  chan cmdReq

	running    atomic.Bool
	started    time.Time
	connects   atomic.Uint64
	commands   atomic.Uint64
	cmdFailed  atomic.Uint64
	cmdDropped atomic.Uint64

	cmdSubscribed  atomic.Bool   // the current session's command subscription is in place
	cmdSubFailures atomic.Uint64 // command subscriptions refused or unanswered
	statusFailures atomic.Uint64 // retained statuses not acknowledged in time

	mu        sync.Mutex
	cur       *session // the connected session, or nil
	lastErr   string
	lastErrAt time.Time
	broker    string // the broker of the current or last connection
	failovers uint64 // connections to another broker than the last one

	invalidLog, healthLog *throttle.Log
	cmdDropLog            *throttle.Log // commands dropped from a full queue
	keepLog               *throttle.Log // the keepers' retries (see keeper)
}

// nowClock is a clock whose Now is the publisher's Options.Now (tests move
// it); its timers are the system's.
type nowClock struct {
	clock.System
	now func() time.Time
}

func (c nowClock) Now() time.Time { return c.now() }

// New checks opts and returns a publisher over buf. Nothing connects until
// [Publisher.Run].
func New(buf Log, opts Options) (*Publisher, error) {
	if buf == nil {
		return nil, errors.New("publish: nil buffer")
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	birth, err := loadBirth(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	p := &Publisher{
		buf:   buf,
		opts:  opts,
		log:   opts.Logger,
		now:   opts.Now,
		birth: birth,
		cmdq:  make(chan cmdReq, 64),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("component", "mqtt")
	p.invalidLog, p.healthLog = throttle.NewLog(p.log, nil, 10*time.Second), throttle.NewLog(p.log, nil, time.Minute)
	p.cmdDropLog = throttle.NewLog(p.log, nowClock{clock.System{}, p.now}, 10*time.Second)
	p.keepLog = throttle.NewLog(p.log, nil, 30*time.Second)
	if p.now == nil {
		p.now = time.Now
	}
	p.base = opts.Prefix + "/" + opts.Device
	p.status = p.base + "/status"
	p.health = p.base + "/health"
	p.cmdBase = p.base + "/cmd/"
	for _, s := range []laneSpec{
		{name: record.LaneAlert, level: "alerts", key: "stream", qos: opts.AlertQoS, cache: true},
		{name: record.LaneAdvice, level: "advice", key: "alert_id", qos: opts.AdviceQoS},
		{name: record.LaneScore, level: "scores", key: "stream", qos: opts.ScoreQoS, cache: true},
		{name: record.LaneShadow, level: "shadow", key: "stream", qos: opts.ScoreQoS, cache: true},
	} {
		if s.name == record.LaneShadow && !opts.Shadow {
			continue
		}
		p.lanes = append(p.lanes, &laneMeta{laneSpec: s, prefix: p.base + "/" + s.level + "/"})
	}
	return p, nil
}

// Run connects to the broker and publishes until ctx ends, reconnecting
// after every outage. On return it has published the retained "offline"
// status (when connected) and disconnected; cancellation is a clean exit
// and returns nil. Run returns an error only when it cannot go on: the
// consumer cannot be registered, or the buffer is closed.
func (p *Publisher) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("publish: Run called twice")
	}
	defer p.running.Store(false) // a supervisor may run it again
	lanes := make([]string, len(p.lanes))
	for i, l := range p.lanes {
		lanes[i] = l.name
	}
	if err := p.buf.RegisterConsumer(p.opts.Consumer, lanes...); err != nil {
		return fmt.Errorf("publish: register consumer %q: %w", p.opts.Consumer, err)
	}
	p.started = p.now()
	p.log.Info("publisher starting", "options", p.opts)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if p.opts.CommandsEnabled {
		wg.Go(func() { p.commandLoop(ctx) })
	}
	if p.opts.HealthInterval > 0 {
		wg.Go(func() { p.healthLoop(ctx) })
	}
	defer wg.Wait()

	bo, attempt := throttle.Backoff{Initial: p.opts.ReconnectMin, Max: p.opts.ReconnectMax}, 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		connected, err := p.runSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, buffer.ErrClosed) {
			return fmt.Errorf("publish: %w", err)
		}
		if err != nil {
			p.setErr(err)
			p.log.Warn("mqtt connection ended", "err", err)
		}
		if connected {
			attempt = 0
		}
		attempt++
		timer.Reset(bo.Delay(attempt))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// Connected reports whether the publisher is connected to the broker.
func (p *Publisher) Connected() bool { return p.current() != nil }

func (p *Publisher) current() *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

func (p *Publisher) setCurrent(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur = s
}

// noteBroker records the broker a new connection reached, counting a
// failover when it is not the one of the connection before.
func (p *Publisher) noteBroker(b string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broker != "" && b != p.broker {
		p.failovers++
		p.log.Warn("failed over to another broker", "from", p.broker, "to", b)
	}
	p.broker = b
}

func (p *Publisher) setErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err.Error()
	p.lastErrAt = p.now()
}

// Stats is a snapshot of the publisher's counters; it is published in the
// health message under "mqtt".
type Stats struct {
	// Connected tells whether a connection to the broker is up.
	Connected bool `json:"connected"`
	// Connects counts successful connections; Reconnects those after the
	// first.
	Connects   uint64 `json:"connects"`
	Reconnects uint64 `json:"reconnects"`
	// BirthSeq is the birth sequence number of the current (or last)
	// connection.
	BirthSeq uint64 `json:"birth_seq"`
	// Lanes holds per-lane counters by buffer lane name.
	Lanes map[string]LaneStats `json:"lanes"`
	// Commands counts commands handled; CommandsFailed those answered with
	// ok false; CommandsDropped those dropped because too many were queued.
	Commands        uint64 `json:"commands"`
	CommandsFailed  uint64 `json:"commands_failed"`
	CommandsDropped uint64 `json:"commands_dropped"`
	// CommandsSubscribed tells whether the command subscription is in
	// place: false while disconnected, with commands off, and while the
	// broker refuses it (a cluster electing leaders) or does not answer,
	// which CommandSubscribeFailures counts (every failed attempt; the
	// publisher tries again with the reconnection backoff).
	CommandsSubscribed       bool   `json:"commands_subscribed"`
	CommandSubscribeFailures uint64 `json:"command_subscribe_failures"`
	// StatusFailures counts retained "online" statuses the broker did not
	// acknowledge in time; each is published again.
	StatusFailures uint64 `json:"status_failures"`
	// Broker is the broker of the current (or last) connection; Failovers
	// counts connections to another broker than the one before.
	Broker    string `json:"broker,omitempty"`
	Failovers uint64 `json:"failovers"`
	// LastError is the last connection error and when it happened.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// LaneStats are the counters of one lane.
type LaneStats struct {
	// Published counts records acknowledged by the broker (and so in the
	// buffer); Replayed counts those of them sent as backlog.
	Published uint64 `json:"published"`
	Replayed  uint64 `json:"replayed"`
	// Invalid counts records that are not JSON objects: they cannot be
	// published and are acknowledged so they do not block the lane.
	Invalid uint64 `json:"invalid"`
	// InFlight is the number of messages sent and not yet acknowledged.
	InFlight int `json:"in_flight"`
	// ReplayBacklog bounds from above the backlog records not yet sent on
	// the current connection: those not yet read from the buffer (records
	// acknowledged out of order make the true number smaller) and those
	// read and waiting for the replay pace. 0 when disconnected.
	ReplayBacklog uint64 `json:"replay_backlog"`
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	s := p.cur
	st := Stats{
		Connected:   s != nil,
		LastError:   p.lastErr,
		LastErrorAt: p.lastErrAt,
		Broker:      p.broker,
		Failovers:   p.failovers,
	}
	p.mu.Unlock()
	st.Connects = p.connects.Load()
	if st.Connects > 0 {
		st.Reconnects = st.Connects - 1
	}
	st.BirthSeq = p.birth.current()
	st.Commands = p.commands.Load()
	st.CommandsFailed = p.cmdFailed.Load()
	st.CommandsDropped = p.cmdDropped.Load()
	st.CommandsSubscribed = st.Connected && p.cmdSubscribed.Load()
	st.CommandSubscribeFailures = p.cmdSubFailures.Load()
	st.StatusFailures = p.statusFailures.Load()
	st.Lanes = make(map[string]LaneStats, len(p.lanes))
	for i, l := range p.lanes {
		ls := LaneStats{Published: l.published.Load(), Replayed: l.replayed.Load(), Invalid: l.invalid.Load()}
		if s != nil {
			sl := s.lanes[i]
			ls.InFlight = sl.liveWin.inUse() + sl.replayWin.inUse()
			ls.ReplayBacklog = sl.backlog.Load() + uint64(len(sl.replayQ))
		}
		st.Lanes[l.name] = ls
	}
	return st
}

// allowed reports whether command name is allowed by Options.AllowCommands.
func (p *Publisher) allowed(name string) bool {
	return len(p.opts.AllowCommands) == 0 || slices.Contains(p.opts.AllowCommands, name)
}
