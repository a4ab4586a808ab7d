// Package watch is `vigil watch`: a live view of every Vigil device under a
// topic prefix, built from what the devices publish on MQTT — their
// retained status, their health heartbeat and their alerts. In a terminal
// it redraws the view in place, a few times a second at most; for scripts
// it prints one JSON line per message received.
//
// The health message is the agent's snapshot, so the view reads it
// tolerantly: it shows "uptime_s", and flattens whatever it finds under
// "rates", "backlog", "drops", "learning" and "models" into key=value
// lists, and the publisher's own counters under "mqtt".
package watch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
	"github.com/vigil-edge/vigil/agent/publish"
)

// Options configures [Watch].
type Options struct {
	// Broker is the broker URL (tcp://, ssl://, ...), as for the agent, or
	// the comma-separated URLs of a clustered broker's nodes, tried in
	// order at each connection attempt.
	Broker string
	// Prefix is the devices' topic prefix.
	Prefix string
	// JSON prints one JSON line per message instead of the live view.
	JSON bool
	// Out receives the view or the JSON lines.
	Out io.Writer
	// TLS configures TLS and mutual TLS, as for the agent.
	TLS publish.TLSOptions
	// Username and Password authenticate to the broker; the password is
	// never logged.
	Username, Password string
	// ClientID is the MQTT client id; empty means "vigil-watch-" and a
	// random suffix, so that several watchers can run at once.
	ClientID string
	// Refresh is the shortest time between two redraws of the live view.
	Refresh time.Duration
	// ConnectTimeout bounds the first connection.
	ConnectTimeout time.Duration
	// Now is the clock for ages in the view; nil means time.Now.
	Now func() time.Time
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// Mode is the live view's layout: ModeAuto (the default) shows one
	// line per device when the detailed view would not fit the terminal
	// or there are more than a handful of devices.
	Mode Mode
	// Filter selects the devices shown, by id pattern and state.
	Filter Filter
	// StaleAfter is how long an online device may stay silent before the
	// view calls it stale (a few health intervals).
	StaleAfter time.Duration
	// Size reports the terminal's columns and lines; nil or a result of
	// zero means 80×24.
	Size func() (cols, lines int)
	// Keys, when set, is read for key presses in the live view: q quits,
	// c, d and a switch to the compact, detailed and automatic layouts.
	Keys io.Reader
}

// DefaultOptions returns prefix "vigil", a 250 ms refresh, a 10 s connect
// timeout, the automatic layout and devices stale after 60 s of silence
// (the agent's health interval is 10 s by default).
func DefaultOptions() Options {
	return Options{Prefix: "vigil", Refresh: 250 * time.Millisecond, ConnectTimeout: 10 * time.Second,
		Mode: ModeAuto, StaleAfter: time.Minute}
}

// brokers are the URLs of Broker, in order.
func (o *Options) brokers() []string {
	var out []string
	for b := range strings.SplitSeq(o.Broker, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

func (o *Options) validate() error {
	var errs []error
	if o.Broker == "" {
		errs = append(errs, errors.New("Options.Broker: required"))
	}
	for _, b := range o.brokers() {
		if u, err := url.Parse(b); err != nil || u.Host == "" {
			errs = append(errs, fmt.Errorf("Options.Broker: %q is not a broker URL such as tcp://host:1883", b))
		} else if !mqttconn.Known(u.Scheme) {
			errs = append(errs, fmt.Errorf("Options.Broker: unknown scheme %q (want %s)", u.Scheme, strings.Join(mqttconn.Schemes(), ", ")))
		}
	}
	if o.Prefix == "" || strings.ContainsAny(o.Prefix, "+#") || strings.HasSuffix(o.Prefix, "/") {
		errs = append(errs, fmt.Errorf("Options.Prefix: %q must be non-empty, without wildcards or a trailing '/'", o.Prefix))
	}
	if o.Out == nil {
		errs = append(errs, errors.New("Options.Out: required"))
	}
	if o.Refresh < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("Options.Refresh: must be at least 10ms, got %v", o.Refresh))
	}
	switch o.Mode {
	case "", ModeAuto, ModeCompact, ModeDetail:
	default:
		errs = append(errs, fmt.Errorf("Options.Mode: %q is not auto, compact or detail", o.Mode))
	}
	if err := o.Filter.validate(); err != nil {
		errs = append(errs, err)
	}
	if o.StaleAfter < 0 {
		errs = append(errs, fmt.Errorf("Options.StaleAfter: must not be negative, got %v", o.StaleAfter))
	}
	if o.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("Options.ConnectTimeout: must be positive, got %v", o.ConnectTimeout))
	}
	if len(errs) > 0 {
		return fmt.Errorf("watch: invalid options: %w", errors.Join(errs...))
	}
	return nil
}

// clearScreen moves the cursor home and clears the terminal.
const clearScreen = "\x1b[H\x1b[2J"

// Watch subscribes to the status, health and alerts of every device under
// the prefix and writes the view (or JSON lines) to Out until ctx ends,
// which is a clean exit. It returns an error when the first connection
// fails; later outages are shown in the view while it reconnects.
func Watch(ctx context.Context, opts Options) error {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := opts.validate(); err != nil {
		return err
	}
	if opts.ClientID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		opts.ClientID = "vigil-watch-" + hex.EncodeToString(b[:])
	}
	w := &watcher{
		opts:  opts,
		view:  newView(opts.Prefix),
		queue: make(chan mqtt.Message, 4096),
		conn:  make(chan bool, 1),
	}
	cl, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	return w.loop(ctx)
}

type watcher struct {
	opts    Options
	view    *view
	queue   chan mqtt.Message
	conn    chan bool // connection state changes
	dropped int
	mu      sync.Mutex // guards dropped
}

func (w *watcher) filters() map[string]byte {
	p := w.opts.Prefix
	return map[string]byte{p + "/+/status": 1, p + "/+/health": 0, p + "/+/alerts/#": 1}
}

func (w *watcher) connect(ctx context.Context) (mqtt.Client, error) {
	o := mqtt.NewClientOptions()
	for _, b := range w.opts.brokers() {
		o.AddBroker(b)
	}
	o.SetClientID(w.opts.ClientID).
		SetUsername(w.opts.Username).
		SetPassword(w.opts.Password).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(5 * time.Second).
		SetConnectTimeout(w.opts.ConnectTimeout).
		SetKeepAlive(15 * time.Second).
		SetOnConnectHandler(func(c mqtt.Client) {
			// The handler must not block paho: subscribe in a goroutine,
			// again while the connection stays up and the broker has not
			// taken the subscription (a cluster node still electing its
			// leaders refuses it), so the view never sits connected and deaf.
			go func() {
				for wait := time.Second; c.IsConnectionOpen(); wait = min(2*wait, 10*time.Second) {
					tok := c.SubscribeMultiple(w.filters(), w.onMessage)
					select {
					case <-tok.Done():
						err := tok.Error()
						if err == nil {
							err = mqttconn.Refused(tok)
						}
						if err == nil {
							return
						}
						w.opts.Logger.Warn("subscribe failed; trying again", "err", err, "in", wait)
					case <-time.After(w.opts.ConnectTimeout):
						w.opts.Logger.Warn("subscribe not acknowledged; trying again", "in", wait)
					}
					time.Sleep(wait) // on paho's side, not a test: a pause before asking again
				}
			}()
			w.setConn(true)
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			w.opts.Logger.Warn("connection lost", "err", err)
			w.setConn(false)
		})
	if slices.ContainsFunc(w.opts.brokers(), mqttconn.IsTLSURL) {
		cfg, err := w.opts.TLS.Config()
		if err != nil {
			return nil, fmt.Errorf("watch: TLS: %w", err)
		}
		o.SetTLSConfig(cfg)
	}
	cl := mqtt.NewClient(o)
	tok := cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		go func() { <-tok.Done(); cl.Disconnect(0) }()
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("watch: connect to %s: %w", w.opts.Broker, err)
	}
	return cl, nil
}

func (w *watcher) setConn(up bool) {
	select {
	case <-w.conn:
	default:
	}
	w.conn <- up
}

// onMessage runs on paho's goroutine: it only queues.
func (w *watcher) onMessage(_ mqtt.Client, m mqtt.Message) {
	select {
	case w.queue <- m:
	default:
		w.mu.Lock()
		w.dropped++
		w.mu.Unlock()
	}
}

// fitLines cuts every line of s to cols columns, so none wraps.
func fitLines(s string, cols int) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if body, ok := strings.CutSuffix(l, "\n"); ok {
			lines[i] = fit(body, cols) + "\n"
		} else {
			lines[i] = fit(l, cols)
		}
	}
	return strings.Join(lines, "")
}

// readKeys forwards the bytes read from Options.Keys until ctx ends; the
// channel is nil (never ready) without Keys.
func (w *watcher) readKeys(ctx context.Context) <-chan byte {
	if w.opts.Keys == nil || w.opts.JSON {
		return nil
	}
	ch := make(chan byte)
	go func() {
		var b [1]byte
		for {
			if n, err := w.opts.Keys.Read(b[:]); err != nil {
				return
			} else if n == 0 {
				continue
			}
			select {
			case ch <- b[0]:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// size is the terminal's size, 80×24 when unknown.
func (w *watcher) size() (cols, lines int) {
	if w.opts.Size != nil {
		if c, l := w.opts.Size(); c > 0 && l > 0 {
			return c, l
		}
	}
	return 80, 24
}

// detailLimit is the most devices ModeAuto shows in the detailed view.
const detailLimit = 5

// frame draws the live view in the layout the options and the terminal's
// size call for.
func (w *watcher) frame(connected bool, dropped int) string {
	cols, lines := w.size()
	now := w.opts.Now()
	o := w.opts
	if o.Mode == ModeDetail || (o.Mode != ModeCompact && len(w.view.devices) <= detailLimit) {
		detail := fitLines(w.view.renderDetail(o.Broker, connected, dropped, now, o.Filter, o.StaleAfter), cols)
		if n := strings.Count(detail, "\n"); n < lines {
			return detail
		} else if o.Mode == ModeDetail {
			// Cut to the screen, so the top does not scroll away.
			keep := strings.SplitAfterN(detail, "\n", lines-1)
			return strings.Join(keep[:lines-2], "") +
				fit(fmt.Sprintf("… %d more line(s) below; narrow with --devices or press c for one line a device\n", n-(lines-2)), cols)
		}
	}
	// One line fewer than the terminal: the cursor rests on the last one.
	return w.view.renderCompact(o.Broker, connected, dropped, now, o.Filter, o.StaleAfter, cols, lines-1)
}

func (w *watcher) loop(ctx context.Context) error {
	var (
		dirty     = true
		lastDraw  time.Time
		connected = true
		timer     = time.NewTimer(0)
		keys      = w.readKeys(ctx)
		cols, lns = w.size()
	)
	defer timer.Stop()
	enc := json.NewEncoder(w.opts.Out)
	draw := func() error {
		w.mu.Lock()
		dropped := w.dropped
		w.mu.Unlock()
		frame := w.frame(connected, dropped)
		lastDraw, dirty = time.Now(), false
		_, err := io.WriteString(w.opts.Out, clearScreen+frame)
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case up := <-w.conn:
			connected = up
			dirty = true
		case k := <-keys:
			switch k {
			case 'q', 'Q':
				return nil
			case 'c':
				w.opts.Mode = ModeCompact
			case 'd':
				w.opts.Mode = ModeDetail
			case 'a':
				w.opts.Mode = ModeAuto
			default:
				continue
			}
			dirty = true
		case m := <-w.queue:
			ev, ok := w.view.apply(m.Topic(), m.Payload(), m.Retained(), w.opts.Now())
			if !ok {
				continue
			}
			if w.opts.JSON {
				if err := enc.Encode(ev); err != nil {
					return fmt.Errorf("watch: write: %w", err)
				}
				continue
			}
			dirty = true
		case <-timer.C:
			if c, l := w.size(); c != cols || l != lns {
				cols, lns, dirty = c, l, true // the terminal was resized
			}
			if !w.opts.JSON && dirty {
				if err := draw(); err != nil {
					return fmt.Errorf("watch: write: %w", err)
				}
			}
			timer.Reset(w.opts.Refresh)
			continue
		}
		// Redraw at once when the last frame is old enough, else at the
		// next tick.
		if !w.opts.JSON && dirty && time.Since(lastDraw) >= w.opts.Refresh {
			if err := draw(); err != nil {
				return fmt.Errorf("watch: write: %w", err)
			}
		}
	}
}
