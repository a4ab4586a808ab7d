package source

import (
	"bufio"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"
)

// Behaviour events the kiosk simulator emits.
const (
	EventPageView      = "page_view"
	EventFormStart     = "form_start"
	EventFormSubmit    = "form_submit"
	EventFormError     = "form_error"
	EventPaymentOK     = "payment_ok"
	EventPaymentFailed = "payment_failed"
	EventHelpClick     = "help_click"
	EventSessionEnd    = "session_end"
)

// KioskOptions configure a KioskSimulator. Start from DefaultKioskOptions.
type KioskOptions struct {
	// Name is the source's name (default "kiosk").
	Name string
	// Stream is the stream of every event; empty lets the router route by
	// source.
	Stream string
	// Seed makes the run reproducible.
	Seed uint64
	// Users is how many kiosks are in use at once; each runs one user
	// session after another, every session with a new user id.
	Users int
	// Speed paces the events by their simulated times: 1 is real time, 10
	// ten times faster, 0 as fast as the sink takes them. Event times are
	// simulated time (Start + offset) whatever the speed.
	Speed float64
	// Events stops Run after that many events; 0 runs until ctx ends.
	Events int
	// Start is the time of the simulation's origin; zero means the clock's
	// time when Run starts (WriteEventsJSONL uses a fixed date instead).
	Start time.Time
	// StruggleRate is the fraction of sessions in which the user fails the
	// form three to five times in quick succession (the "failed the form
	// three times" case), in [0, 1].
	StruggleRate float64
	// Faults makes the first session on the first kiosk a struggling one
	// that starts at once, so that the demo shows three form errors within
	// about half a minute.
	Faults bool

	// Clock paces the events (default SystemClock).
	Clock Clock
	// Logger receives the source's logs (default: discarded).
	Logger *slog.Logger
}

// DefaultKioskOptions returns the defaults: 4 kiosks in real time, one
// session in ten struggling, seed 1.
func DefaultKioskOptions() KioskOptions {
	return KioskOptions{
		Name:         "kiosk",
		Seed:         1,
		Users:        4,
		Speed:        1,
		StruggleRate: 0.1,
	}
}

func (o *KioskOptions) validate() error {
	var errs []error
	if o.Name == "" {
		o.Name = "kiosk"
	}
	if o.Users < 1 || o.Users > 100000 {
		errs = append(errs, optErr("Users", "must be in [1, 100000], got %d", o.Users))
	}
	if !(o.Speed >= 0) || math.IsInf(o.Speed, 0) {
		errs = append(errs, optErr("Speed", "must be ≥ 0 (0 = as fast as possible), got %v", o.Speed))
	}
	if o.Events < 0 {
		errs = append(errs, optErr("Events", "must be ≥ 0, got %d", o.Events))
	}
	if !(o.StruggleRate >= 0 && o.StruggleRate <= 1) {
		errs = append(errs, optErr("StruggleRate", "must be in [0, 1], got %v", o.StruggleRate))
	}
	defaults(&o.Clock, nil, &o.Logger)
	return errors.Join(errs...)
}

// KioskSimulator emits the behaviour events of users at self-service
// kiosks: sessions that view pages, fill in a form (sometimes with an error),
// pay (sometimes failing) and leave, with log-normal times between events;
// and occasionally a struggling user who hits form_error three or more
// times within a minute, clicks for help and may give up.
type KioskSimulator struct {
	core[KioskOptions]
}

// NewKioskSimulator returns a kiosk simulator that puts its events into
// sink.
func NewKioskSimulator(opts KioskOptions, sink Sink) (*KioskSimulator, error) {
	if err := checkSource("kiosk simulator", opts.validate, sink); err != nil {
		return nil, err
	}
	return &KioskSimulator{core: newCore(opts, sink, opts.Logger, opts.Name)}, nil
}

// Name returns the source's name.
func (k *KioskSimulator) Name() string { return k.opts.Name }

// Run emits events until ctx ends (a nil return) or Events have been
// emitted.
func (k *KioskSimulator) Run(ctx context.Context) error {
	o := k.opts
	now := o.Clock.Now()
	start := o.Start
	if start.IsZero() {
		start = now
	}
	g := newKioskGen(o, start)
	pace := pacer{clock: o.Clock, anchor: now, maxLag: 5 * time.Second}
	k.log.Info("kiosk simulator started", "users", o.Users, "speed", o.Speed, "seed", o.Seed)
	for n := 0; o.Events == 0 || n < o.Events; n++ {
		ke := g.next()
		if o.Speed > 0 {
			if _, err := pace.wait(ctx, time.Duration(float64(ke.offset)/o.Speed)); err != nil {
				return nil
			}
		} else if ctx.Err() != nil {
			return nil
		}
		ev := ke.event
		in := Input{Source: o.Name, Stream: o.Stream, Time: ev.Time, Event: &ev}
		if err := k.sink.Put(ctx, in); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kiosk simulator %s: put event %d: %w", o.Name, n, err)
		}
	}
	return nil
}

// WriteEventsJSONL writes n simulated kiosk events to w, one JSON object
// per line in the shape POST /v1/events takes:
//
//	{"event_id":..,"event_name":..,"timestamp":"RFC 3339, ms","user_id":..,"properties":{..},"anomaly":0|1}
//
// "anomaly" labels the events of a struggling session from its first
// form_error on; the event decoders ignore it. The output depends only on n
// and opts (a zero Start means 2024-01-01 00:00:00 UTC): the same seed gives
// the same bytes. It is what trains the behaviour model.
func WriteEventsJSONL(w io.Writer, n int, opts KioskOptions) error {
	if err := opts.validate(); err != nil {
		return fmt.Errorf("kiosk simulator options: %w", err)
	}
	if n < 0 {
		return fmt.Errorf("write events: negative event count %d", n)
	}
	start := opts.Start
	if start.IsZero() {
		start = defaultSimStart
	}
	g := newKioskGen(opts, start.UTC())
	bw := bufio.NewWriterSize(w, 64<<10)
	type line struct {
		ID         string         `json:"event_id"`
		Name       string         `json:"event_name"`
		Timestamp  string         `json:"timestamp"`
		UserID     string         `json:"user_id"`
		Properties map[string]any `json:"properties"`
		Anomaly    int            `json:"anomaly"`
	}
	for range n {
		ke := g.next()
		l := line{
			ID: ke.event.ID, Name: ke.event.Name, UserID: ke.event.UserID,
			Timestamp:  ke.event.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
			Properties: ke.event.Properties,
		}
		if ke.anomaly {
			l.Anomaly = 1
		}
		b, err := json.Marshal(l)
		if err != nil {
			return fmt.Errorf("write events: %w", err)
		}
		b = append(b, '\n')
		if _, err := bw.Write(b); err != nil {
			return fmt.Errorf("write events: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write events: %w", err)
	}
	return nil
}

// kioskEvent is a generated event with its label.
type kioskEvent struct {
	offset  time.Duration
	event   Event
	anomaly bool
}

// kioskStep is one planned event of a session.
type kioskStep struct {
	delay   time.Duration
	name    string
	props   map[string]any
	anomaly bool
}

// kiosk is one kiosk and its current session.
type kiosk struct {
	slot     int
	userID   string
	steps    []kioskStep
	at       time.Duration // time of the next step
	sessions int
}

// kioskQueue orders kiosks by their next event (then by slot, to stay
// deterministic).
type kioskQueue []*kiosk

func (q kioskQueue) Len() int { return len(q) }
func (q kioskQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].slot < q[j].slot
}
func (q kioskQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *kioskQueue) Push(x any)   { *q = append(*q, x.(*kiosk)) }
func (q *kioskQueue) Pop() any {
	old := *q
	k := old[len(old)-1]
	*q = old[:len(old)-1]
	return k
}

// kioskGen generates the merged, time-ordered events of all kiosks.
type kioskGen struct {
	rng      *rand.Rand
	opts     KioskOptions
	start    time.Time
	queue    kioskQueue
	sessions int
	n        int
	idPrefix string
}

func newKioskGen(o KioskOptions, start time.Time) *kioskGen {
	g := &kioskGen{
		rng:   rand.New(rand.NewPCG(o.Seed, 0x4b105c)),
		opts:  o,
		start: start,
	}
	// Event ids differ between runs that start at different times, and
	// repeat for the same seed and start.
	h := o.Seed*0x9e3779b97f4a7c15 ^ uint64(start.UnixNano())
	g.idPrefix = fmt.Sprintf("k%012x", h&0xffffffffffff)
	for i := range o.Users {
		k := &kiosk{slot: i}
		// Kiosks start staggered over the first half minute.
		g.newSession(k, time.Duration(g.rng.Float64()*30*float64(time.Second)))
		if i == 0 && o.Faults {
			k.at = 2 * time.Second
		}
		g.queue = append(g.queue, k)
	}
	heap.Init(&g.queue)
	return g
}

// lognormal returns a duration with the given median and a spread of about
// ×/÷1.6, clamped to [300 ms, 10 min].
func (g *kioskGen) lognormal(median time.Duration) time.Duration {
	d := float64(median) * math.Exp(0.5*g.rng.NormFloat64())
	return time.Duration(min(max(d, float64(300*time.Millisecond)), float64(10*time.Minute))).Round(time.Millisecond)
}

var (
	kioskFields = [...]string{"email", "phone", "card_number", "postcode", "date_of_birth"}
	kioskErrors = [...]string{"invalid_format", "required", "mismatch", "expired"}
	kioskHelp   = [...]string{"form", "payment", "privacy", "call_staff"}
	kioskPays   = [...]string{"card", "contactless", "mobile"}
)

// newSession plans kiosk k's next session, starting after gap.
func (g *kioskGen) newSession(k *kiosk, gap time.Duration) {
	g.sessions++
	k.sessions++
	k.userID = fmt.Sprintf("user-%06d", g.sessions)
	kioskID := fmt.Sprintf("kiosk-%d", k.slot+1)
	struggle := g.rng.Float64() < g.opts.StruggleRate
	firstError := 15 * time.Second
	if g.opts.Faults && k.slot == 0 && k.sessions == 1 {
		struggle, firstError = true, 4*time.Second
	}
	r := g.rng
	props := func(page string, kv ...any) map[string]any {
		m := map[string]any{"kiosk_id": kioskID, "page": page}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	var s []kioskStep
	add := func(delay time.Duration, name string, p map[string]any, anomaly bool) {
		s = append(s, kioskStep{delay: delay, name: name, props: p, anomaly: anomaly})
	}
	add(gap, EventPageView, props("/"), false)
	add(g.lognormal(4*time.Second), EventPageView, props("/form"), false)
	if r.Float64() < 0.1 {
		add(g.lognormal(3*time.Second), EventHelpClick, props("/form", "topic", kioskHelp[r.IntN(len(kioskHelp))]), false)
	}
	add(g.lognormal(2*time.Second), EventFormStart, props("/form"), false)
	pay := true
	if struggle {
		// Three to five errors in quick succession.
		n := 3 + r.IntN(3)
		field := kioskFields[r.IntN(len(kioskFields))]
		for i := range n {
			d := g.lognormal(6 * time.Second)
			if i == 0 {
				d = g.lognormal(firstError)
			}
			add(d, EventFormError, props("/form", "field", field, "error", kioskErrors[r.IntN(len(kioskErrors))], "attempt", float64(i+1)), true)
		}
		if r.Float64() < 0.6 {
			add(g.lognormal(4*time.Second), EventHelpClick, props("/form", "topic", "form"), true)
		}
		if r.Float64() < 0.5 {
			add(g.lognormal(5*time.Second), EventSessionEnd, props("/form", "reason", "abandoned"), true)
			pay = false
		} else {
			add(g.lognormal(20*time.Second), EventFormSubmit, props("/form"), true)
		}
	} else {
		if r.Float64() < 0.15 {
			field := kioskFields[r.IntN(len(kioskFields))]
			add(g.lognormal(25*time.Second), EventFormError, props("/form", "field", field, "error", kioskErrors[r.IntN(len(kioskErrors))], "attempt", 1.0), false)
			add(g.lognormal(8*time.Second), EventFormSubmit, props("/form"), false)
		} else {
			add(g.lognormal(30*time.Second), EventFormSubmit, props("/form"), false)
		}
	}
	if pay {
		add(g.lognormal(time.Second), EventPageView, props("/payment"), struggle)
		amount := math.Round((5+r.Float64()*95)*100) / 100
		method := kioskPays[r.IntN(len(kioskPays))]
		if r.Float64() < 0.08 {
			add(g.lognormal(12*time.Second), EventPaymentFailed, props("/payment", "amount", amount, "method", method, "reason", "declined"), struggle)
			if r.Float64() < 0.6 {
				add(g.lognormal(15*time.Second), EventPaymentOK, props("/payment", "amount", amount, "method", method), struggle)
			} else {
				add(g.lognormal(4*time.Second), EventHelpClick, props("/payment", "topic", "payment"), struggle)
				add(g.lognormal(5*time.Second), EventSessionEnd, props("/payment", "reason", "abandoned"), struggle)
				pay = false
			}
		} else {
			add(g.lognormal(12*time.Second), EventPaymentOK, props("/payment", "amount", amount, "method", method), struggle)
		}
		if pay {
			add(g.lognormal(time.Second), EventPageView, props("/done"), struggle)
			add(g.lognormal(5*time.Second), EventSessionEnd, props("/done", "reason", "completed"), struggle)
		}
	}
	k.steps = s
	k.at += s[0].delay
}

// next returns the next event of any kiosk, in time order.
func (g *kioskGen) next() kioskEvent {
	k := g.queue[0]
	st := k.steps[0]
	g.n++
	ev := kioskEvent{
		offset: k.at,
		event: Event{
			ID:         fmt.Sprintf("%s-%07d", g.idPrefix, g.n),
			Name:       st.name,
			Time:       g.start.Add(k.at),
			UserID:     k.userID,
			Properties: st.props,
		},
		anomaly: st.anomaly,
	}
	k.steps = k.steps[1:]
	if len(k.steps) > 0 {
		k.at += k.steps[0].delay
	} else {
		// The next user walks up after a while.
		g.newSession(k, g.lognormal(20*time.Second))
	}
	heap.Fix(&g.queue, 0)
	return ev
}
