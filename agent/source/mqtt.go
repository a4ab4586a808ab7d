package source

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
)

// MQTTOptions configure an MQTT source. Start from DefaultMQTTOptions.
type MQTTOptions struct {
	// Name is the source's name (default "mqtt"); it is part of the
	// client id.
	Name string
	// Device is the device's id. The client id is
	// "vigil-<Device>-src-<Name>": unique per source and stable across
	// restarts, which a persistent session (CleanSession false) needs.
	Device string
	// Broker is the broker's URL: tcp://, ssl:// (or tls://, mqtts://),
	// ws:// or wss://host:port.
	Broker string
	// Brokers, set instead of Broker, are the URLs of a clustered
	// broker's nodes, tried in order at each connection attempt; with
	// CleanSession false the session (subscriptions, queued QoS ≥ 1
	// messages) carries over to the next node where the cluster keeps
	// sessions.
	Brokers []string
	// Topics are the topic filters to subscribe to ("plant/+/pump",
	// "sensors/#").
	Topics []string
	// QoS of the subscriptions (0, 1 or 2).
	QoS byte
	// Username and Password authenticate to the broker when set.
	Username string
	Password string
	// TLS configures ssl:// and wss:// connections (client certificates,
	// private CAs); nil uses the system's roots.
	TLS *tls.Config
	// CleanSession true (the default) starts afresh at every connection:
	// what was published while Vigil was away is lost, which suits live
	// telemetry (minutes-old samples would only be dropped as late).
	// False keeps a persistent session keyed by the stable client id, so
	// that with QoS ≥ 1 the broker queues messages across short outages
	// and restarts (up to its max_queued_messages) and delivers them on
	// reconnection.
	CleanSession bool
	// KeepAlive is the MQTT keep-alive; ConnectTimeout bounds a connection
	// attempt; SubscribeTimeout bounds the SUBACK wait.
	KeepAlive        time.Duration
	ConnectTimeout   time.Duration
	SubscribeTimeout time.Duration
	// ConnectRetryInterval is the wait between attempts at the first
	// connection; after a connection is lost paho reconnects with an
	// exponential backoff from 1 s capped at MaxReconnectInterval.
	ConnectRetryInterval time.Duration
	MaxReconnectInterval time.Duration

	// Payload says how to decode the messages: sensor samples by a field
	// mapping, or behaviour events.
	Payload PayloadOptions
	// StreamMap routes topics to streams: keys are topics or topic
	// filters (with + and #), values stream names. Payload.StreamField,
	// when set, takes precedence.
	StreamMap map[string]string
	// Stream is the stream of topics StreamMap does not route; empty
	// means the topic's last level ("plant/p1/pump3" → "pump3").
	Stream string
	// Retained says what to do with retained messages, which the broker
	// delivers again at every subscription (every connect and reload):
	// RetainedIgnore (the default) drops them, counted as "retained";
	// RetainedTake takes each one once, with the time in its payload, and
	// drops as "retained" a retained sample without a time field (its
	// arrival time would be wrong) and one already taken on its topic.
	Retained string
	// MaxFuture drops a sample or event stamped further ahead of Clock
	// than this, counted as "future": one stamped in year 2999 would make
	// every later one late. 0 turns the check off.
	MaxFuture time.Duration
	// DedupWindow and DedupSize drop events whose event_id was seen
	// recently (events only; QoS 1 may deliver a message twice). 0 turns
	// it off.
	DedupWindow time.Duration
	DedupSize   int

	// Clock stamps messages without a time field (default SystemClock).
	Clock Clock
	// Counter counts dropped messages by reason (default: none).
	Counter Counter
	// Logger receives the source's logs (default: discarded).
	Logger *slog.Logger
}

// Retained-message policies.
const (
	RetainedIgnore = "ignore"
	RetainedTake   = "take"
)

// DefaultMQTTOptions returns the defaults: the local broker
// tcp://127.0.0.1:1883, QoS 0, clean sessions, 30 s keep-alive, 10 s
// timeouts, first-connection retries every 2 s, reconnection backoff capped
// at 30 s, retained messages ignored, a 10-minute / 100k-id event dedup
// window.
func DefaultMQTTOptions() MQTTOptions {
	return MQTTOptions{
		Name:                 "mqtt",
		Broker:               "tcp://127.0.0.1:1883",
		CleanSession:         true,
		KeepAlive:            30 * time.Second,
		ConnectTimeout:       10 * time.Second,
		SubscribeTimeout:     10 * time.Second,
		ConnectRetryInterval: 2 * time.Second,
		MaxReconnectInterval: 30 * time.Second,
		Retained:             RetainedIgnore,
		MaxFuture:            DefaultMaxFuture,
		DedupWindow:          10 * time.Minute,
		DedupSize:            100000,
	}
}

// brokers are the broker URLs in the order they are tried.
func (o *MQTTOptions) brokers() []string {
	if len(o.Brokers) > 0 {
		return o.Brokers
	}
	if o.Broker == "" {
		return nil
	}
	return []string{o.Broker}
}

func (o *MQTTOptions) validate() error {
	var errs []error
	if o.Name == "" {
		o.Name = "mqtt"
	}
	if strings.ContainsAny(o.Name, "/+# ") {
		errs = append(errs, optErr("Name", "%q: no '/', '+', '#' or spaces (it is part of the client id)", o.Name))
	}
	if o.Device == "" || strings.ContainsAny(o.Device, "/+# ") {
		errs = append(errs, optErr("Device", "%q: required, no '/', '+', '#' or spaces", o.Device))
	}
	if o.Broker != "" && len(o.Brokers) > 0 {
		errs = append(errs, optErr("Brokers", "set together with Broker: set one or the other"))
	}
	for i, b := range o.brokers() {
		field := "Broker"
		if len(o.Brokers) > 0 {
			field = fmt.Sprintf("Brokers[%d]", i)
		}
		if u, err := url.Parse(b); err != nil || u.Host == "" {
			errs = append(errs, optErr(field, "%q is not a URL like tcp://host:1883", b))
		} else if !mqttconn.Known(u.Scheme) {
			errs = append(errs, optErr(field, "unknown scheme %q (want %s)", u.Scheme, strings.Join(mqttconn.Schemes(), ", ")))
		}
	}
	if len(o.brokers()) == 0 {
		errs = append(errs, optErr("Broker", "required (e.g. tcp://127.0.0.1:1883)"))
	}
	if len(o.Topics) == 0 {
		errs = append(errs, optErr("Topics", "at least one topic filter is required"))
	}
	for i, t := range o.Topics {
		if err := validFilter(t); err != nil {
			errs = append(errs, optErr(fmt.Sprintf("Topics[%d]", i), "%v", err))
		}
	}
	for f, s := range o.StreamMap {
		if err := validFilter(f); err != nil {
			errs = append(errs, optErr(fmt.Sprintf("StreamMap[%q]", f), "%v", err))
		}
		if s == "" {
			errs = append(errs, optErr(fmt.Sprintf("StreamMap[%q]", f), "empty stream name"))
		}
	}
	if o.QoS > 2 {
		errs = append(errs, optErr("QoS", "must be 0, 1 or 2, got %d", o.QoS))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"KeepAlive", o.KeepAlive}, {"ConnectTimeout", o.ConnectTimeout}, {"SubscribeTimeout", o.SubscribeTimeout},
		{"ConnectRetryInterval", o.ConnectRetryInterval}, {"MaxReconnectInterval", o.MaxReconnectInterval},
	} {
		if d.v <= 0 {
			errs = append(errs, optErr(d.name, "must be > 0, got %v", d.v))
		}
	}
	switch o.Retained {
	case "":
		o.Retained = RetainedIgnore
	case RetainedIgnore, RetainedTake:
	default:
		errs = append(errs, optErr("Retained", "%q: want %s or %s", o.Retained, RetainedIgnore, RetainedTake))
	}
	if o.MaxFuture < 0 {
		errs = append(errs, optErr("MaxFuture", "must be ≥ 0, got %v", o.MaxFuture))
	}
	if o.DedupWindow < 0 || o.DedupSize < 0 {
		errs = append(errs, optErr("DedupWindow", "DedupWindow and DedupSize must be ≥ 0"))
	}
	defaults(&o.Clock, &o.Counter, &o.Logger)
	return errors.Join(errs...)
}

// validFilter checks an MQTT topic filter.
func validFilter(f string) error {
	if f == "" {
		return errors.New("empty topic filter")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("%q: '#' must be the last level", f)
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return fmt.Errorf("%q: '+' and '#' must be whole levels", f)
		}
	}
	return nil
}

// topicMatches reports whether topic matches filter, with MQTT's rules
// (a wildcard first level does not match topics starting with '$').
func topicMatches(filter, topic string) bool {
	if len(topic) > 0 && topic[0] == '$' && len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// Both ended: a match. Only the topic ended: only a trailing
			// "/#" still matches ("a/#" matches "a"). Only the filter
			// ended: no match. (An empty last level, as in "a/", is a
			// level: Cut's "more" tells it from the end.)
			return !fmore && !tmore || fmore && frest == "#"
		}
		filter, topic = frest, trest
	}
}

// MQTT is a source that subscribes to topics on a broker (the local bus)
// and decodes each message into an Input: a sensor sample by a field
// mapping, or behaviour events.
//
// Paho calls the message handler from one goroutine in order (order
// matters is left on), so the handler never blocks: it decodes (no
// reflection, one allocation for the values) and hands the input over
// with TryPut, counting queue_full when the pipeline is full. The client
// reconnects by itself and subscribes again in OnConnect. Tokens are only
// ever waited on with a timeout.
type MQTT struct {
	core[MQTTOptions]
	clientID string

	mu       sync.Mutex // guards dec (paho serializes handlers; this makes it explicit)
	dec      *PayloadDecoder
	channels []string
	exact    map[string]string // StreamMap entries without wildcards
	patterns []streamPattern
	dedup    *dedup
	// retainedAt is, per topic, the time of the retained sample taken
	// last (Retained take): the broker delivers it again at every
	// subscription. Guarded by mu.
	retainedAt map[string]time.Time

	connected atomic.Bool

	bmu       sync.Mutex
	dialed    string // the broker of the last connection opened
	broker    string // the broker of the current (or last) session
	failovers uint64 // sessions on another broker than the one before
}

type streamPattern struct{ filter, stream string }

// NewMQTT returns an MQTT source that puts its inputs into sink.
func NewMQTT(opts MQTTOptions, sink Sink) (*MQTT, error) {
	if err := checkSource("mqtt source", opts.validate, sink); err != nil {
		return nil, err
	}
	m := &MQTT{
		core:     newCore(opts, sink, opts.Logger, opts.Name),
		clientID: "vigil-" + opts.Device + "-src-" + opts.Name,
		exact:    map[string]string{},

		retainedAt: map[string]time.Time{},
	}
	if opts.Payload.Events {
		m.dedup = newDedup(opts.DedupSize, opts.DedupWindow)
	} else {
		dec, err := NewPayloadDecoder(opts.Payload)
		if err != nil {
			return nil, fmt.Errorf("mqtt source options: Payload.%w", err)
		}
		m.dec, m.channels = dec, dec.Channels()
	}
	for f, s := range opts.StreamMap {
		if strings.ContainsAny(f, "+#") {
			m.patterns = append(m.patterns, streamPattern{f, s})
		} else {
			m.exact[f] = s
		}
	}
	// Most specific first: longer filters before shorter ones.
	sortPatterns(m.patterns)
	return m, nil
}

func sortPatterns(p []streamPattern) {
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && (len(p[j].filter) > len(p[j-1].filter) ||
			len(p[j].filter) == len(p[j-1].filter) && p[j].filter < p[j-1].filter); j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
}

// Name returns the source's name.
func (m *MQTT) Name() string { return m.opts.Name }

// ClientID returns the MQTT client id, "vigil-<device>-src-<name>".
func (m *MQTT) ClientID() string { return m.clientID }

// Connected reports whether the source is connected and subscribed.
func (m *MQTT) Connected() bool { return m.connected.Load() }

// Broker is the URL of the broker the source's current (or last) session
// is on; Failovers counts sessions on another broker than the one before.
func (m *MQTT) Broker() (url string, failovers uint64) {
	m.bmu.Lock()
	defer m.bmu.Unlock()
	return m.broker, m.failovers
}

// Channels returns the channels of the samples (nil for events).
func (m *MQTT) Channels() []string { return m.channels }

func (m *MQTT) clientOptions() *paho.ClientOptions {
	o := m.opts
	co := paho.NewClientOptions()
	for _, b := range o.brokers() { // tried in order at each attempt
		co.AddBroker(b)
	}
	co.SetClientID(m.clientID).
		SetCleanSession(o.CleanSession).
		SetOrderMatters(true). // the handler never blocks; keeps samples in order
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(o.ConnectRetryInterval).
		SetMaxReconnectInterval(o.MaxReconnectInterval).
		SetConnectTimeout(o.ConnectTimeout).
		SetKeepAlive(o.KeepAlive).
		SetPingTimeout(min(o.KeepAlive, 10*time.Second)).
		SetWriteTimeout(o.ConnectTimeout).
		SetResumeSubs(false). // OnConnect subscribes again
		SetDefaultPublishHandler(m.onMessage).
		SetOnConnectHandler(m.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			m.connected.Store(false)
			b, _ := m.Broker()
			m.log.Warn("mqtt connection lost; reconnecting", "broker", b, "error", err)
		}).
		SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
			switch n := n.(type) {
			case paho.ConnectionNotificationBrokerFailed:
				m.rlog.Warn("mqtt connection attempt failed", "broker", n.Broker.Redacted(), "error", n.Reason)
			case paho.ConnectionNotificationFailed:
				m.rlog.Warn("mqtt connection failed", "brokers", o.brokers(), "error", n.Reason)
			}
		})
	if o.Username != "" {
		co.SetUsername(o.Username)
		co.SetPassword(o.Password)
	}
	if o.TLS != nil {
		co.SetTLSConfig(o.TLS)
	}
	co.SetCustomOpenConnectionFn(func(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
		c, err := openConn(u, o)
		if err == nil {
			m.bmu.Lock()
			m.dialed = u.Redacted()
			m.bmu.Unlock()
		}
		return c, err
	})
	return co
}

// openConn opens the connection to a broker through mqttconn: reads on
// plain TCP buffered (paho reads packet headers a byte at a time), proxies
// from the environment, the TLS 1.3 client-certificate probe.
func openConn(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	return mqttconn.Dial(context.Background(), u, mqttconn.DialOptions{
		Dialer: o.Dialer, Timeout: o.ConnectTimeout, TLS: o.TLSConfig,
		HTTPHeaders: o.HTTPHeaders, Websocket: o.WebsocketOptions,
	})
}

// subscribe subscribes to the topics and reports whether the broker took
// every filter.
func (m *MQTT) subscribe(c paho.Client) bool {
	filters := make(map[string]byte, len(m.opts.Topics))
	for _, t := range m.opts.Topics {
		filters[t] = m.opts.QoS
	}
	tok := c.SubscribeMultiple(filters, m.onMessage)
	if !tok.WaitTimeout(m.opts.SubscribeTimeout) {
		m.rlog.Warn("mqtt subscribe timed out; trying again", "topics", m.opts.Topics, "timeout", m.opts.SubscribeTimeout)
		return false
	}
	if err := tok.Error(); err != nil {
		m.rlog.Warn("mqtt subscribe failed; trying again", "topics", m.opts.Topics, "error", err)
		return false
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code == 0x80 {
				m.rlog.Warn("mqtt broker refused a subscription; trying again", "topic", topic)
				return false
			}
		}
	}
	return true
}

// onConnect subscribes, on the first connection and on every reconnection.
// Paho runs it on its own goroutine, so waiting (with a timeout) is fine.
func (m *MQTT) onConnect(c paho.Client) {
	// A broker can take the connection and refuse or time out the
	// subscription (a cluster node still electing its leaders does): ask
	// again while the connection stays up, so the source never sits
	// connected and deaf.
	for wait := time.Second; !m.subscribe(c); wait = min(2*wait, 30*time.Second) {
		if !c.IsConnectionOpen() {
			return // the next connection subscribes again
		}
		time.Sleep(wait) // on paho's goroutine, which waits for us anyway
		if !c.IsConnectionOpen() {
			return
		}
	}
	m.connected.Store(true)
	m.bmu.Lock()
	if m.broker != "" && m.dialed != m.broker {
		m.failovers++
		m.log.Warn("mqtt source failed over to another broker", "from", m.broker, "to", m.dialed)
	}
	m.broker = m.dialed
	broker := m.broker
	m.bmu.Unlock()
	m.log.Info("mqtt source subscribed", "broker", broker, "client_id", m.clientID, "topics", m.opts.Topics, "qos", m.opts.QoS)
}

// Run connects and receives until ctx ends, then disconnects and returns
// nil. It does not fail when the broker is away: it keeps trying.
func (m *MQTT) Run(ctx context.Context) error {
	c := paho.NewClient(m.clientOptions())
	tok := c.Connect()
	select {
	case <-ctx.Done():
	case <-tok.Done():
		if err := tok.Error(); err != nil && ctx.Err() == nil {
			c.Disconnect(0)
			return fmt.Errorf("mqtt source %s: connect to %s: %w", m.opts.Name, strings.Join(m.opts.brokers(), ", "), err)
		}
		<-ctx.Done()
	}
	m.connected.Store(false)
	c.Disconnect(250)
	m.log.Info("mqtt source stopped")
	return nil
}

// onMessage decodes a message and hands it over without blocking.
func (m *MQTT) onMessage(_ paho.Client, msg paho.Message) {
	m.handle(msg.Topic(), msg.Payload(), msg.Retained())
}

// dropRetained counts a retained message that is not taken, and logs it
// (rate-limited) with why.
func (m *MQTT) dropRetained(topic, why string) {
	m.opts.Counter.Drop(m.opts.Name, DropRetained, 1)
	m.rlog.Warn("dropped a retained message", "topic", topic, "reason", why)
}

func (m *MQTT) handle(topic string, payload []byte, retained bool) {
	now := m.opts.Clock.Now()
	if retained && m.opts.Retained != RetainedTake {
		// The broker's last value, delivered again at every subscription:
		// stamped with the arrival time it would be a new sample each time.
		m.dropRetained(topic, "retained messages are ignored (set retained: take to take them once, with their own time)")
		return
	}
	if m.opts.Payload.Events {
		m.handleEvents(topic, payload, now)
		return
	}
	vals := make([]float64, len(m.channels))
	m.mu.Lock()
	t, stream, err := m.dec.Decode(payload, vals)
	id := m.dec.ID()
	if err == nil && retained {
		last, seen := m.retainedAt[topic]
		switch {
		case t.IsZero():
			err = errRetainedNoTime
		case seen && !t.After(last):
			err = errRetainedTaken
		default:
			m.retainedAt[topic] = t
		}
	}
	m.mu.Unlock()
	if errors.Is(err, errRetainedNoTime) || errors.Is(err, errRetainedTaken) {
		m.dropRetained(topic, err.Error())
		return
	}
	if err != nil {
		reason := DropInvalid
		if pe, ok := err.(*PayloadError); ok {
			reason = pe.Reason
		}
		m.opts.Counter.Drop(m.opts.Name, reason, 1)
		m.rlog.Warn("dropped a bad message", "topic", topic, "reason", reason, "error", err)
		return
	}
	if t.IsZero() {
		t = now
	} else if why := futureReason(t, now, m.opts.MaxFuture); why != "" {
		m.opts.Counter.Drop(m.opts.Name, DropFuture, 1)
		m.rlog.Warn("dropped a sample from the future", "topic", topic, "reason", DropFuture, "error", why)
		return
	}
	if stream == "" {
		stream = m.route(topic)
	}
	in := Input{Source: m.opts.Name, Stream: stream, Time: t, Channels: m.channels, Values: vals, ID: id}
	if !m.sink.TryPut(in) {
		m.opts.Counter.Drop(m.opts.Name, DropQueueFull, 1)
		m.rlog.Warn("pipeline full; dropped a message", "topic", topic)
	}
}

func (m *MQTT) handleEvents(topic string, payload []byte, now time.Time) {
	lim := DefaultEventLimits()
	lim.MaxFuture = m.opts.MaxFuture
	evs, rejected, err := decodeEvents(payload, now, lim)
	if err != nil {
		m.opts.Counter.Drop(m.opts.Name, DropInvalid, 1)
		m.rlog.Warn("dropped a bad message", "topic", topic, "reason", DropInvalid, "error", err)
		return
	}
	for _, r := range rejected {
		m.opts.Counter.Drop(m.opts.Name, r.Drop, 1)
		m.rlog.Warn("dropped a bad event", "topic", topic, "index", r.Index, "reason", r.Reason)
	}
	var topicStream string
	for _, de := range evs {
		ev := de.event
		if !m.dedup.reserve(dedupKey(&ev), now) {
			m.opts.Counter.Drop(m.opts.Name, DropDuplicate, 1)
			continue
		}
		stream := ""
		if f := m.opts.Payload.StreamField; f != "" {
			stream, _ = ev.Properties[f].(string)
		}
		if stream == "" {
			if topicStream == "" {
				topicStream = m.route(topic)
			}
			stream = topicStream
		}
		if !m.sink.TryPut(Input{Source: m.opts.Name, Stream: stream, Time: ev.Time, Event: &ev}) {
			m.dedup.release(dedupKey(&ev))
			m.opts.Counter.Drop(m.opts.Name, DropQueueFull, 1)
			m.rlog.Warn("pipeline full; dropped an event", "topic", topic)
		}
	}
}

var (
	errRetainedNoTime = errors.New("a retained sample without a time field (its arrival time is not its time)")
	errRetainedTaken  = errors.New("a retained sample already taken")
)

// route picks the stream of a topic: StreamMap (exact, then the longest
// matching filter), then Stream, then the topic's last level.
func (m *MQTT) route(topic string) string {
	if s, ok := m.exact[topic]; ok {
		return s
	}
	for _, p := range m.patterns {
		if topicMatches(p.filter, topic) {
			return p.stream
		}
	}
	if m.opts.Stream != "" {
		return m.opts.Stream
	}
	if i := strings.LastIndexByte(topic, '/'); i >= 0 {
		return topic[i+1:]
	}
	return topic
}
