package source

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// EventsPath is where the daemon mounts HTTPEvents.
const EventsPath = "/v1/events"

// HTTPEventsOptions configure HTTPEvents. Start from
// DefaultHTTPEventsOptions.
type HTTPEventsOptions struct {
	// Name is the source's name (default "http").
	Name string
	// Stream is the stream of the events; empty lets the router route by
	// source.
	Stream string
	// StreamFromField names where an event's stream is read from instead:
	// "event_name", "user_id", or else a key of its properties whose value
	// is a string (e.g. "kiosk_id"). Events without it go to Stream.
	StreamFromField string
	// AllowedOrigins lists the exact origins ("https://kiosk.example:8443")
	// whose pages may post events; "*" allows any. Requests that carry an
	// Origin not in the list are refused with 403: navigator.sendBeacon's
	// text/plain POSTs are "simple" requests that no preflight guards.
	// Requests without an Origin (curl, servers) are not affected.
	AllowedOrigins []string
	// Token, when set, must come as "Authorization: Bearer <token>", or,
	// with QueryToken, as ?token=<token> (sendBeacon cannot set headers; a
	// token in a URL ends up in browser history and proxy logs, so prefer
	// origins plus a token only for clients that can send headers).
	Token      string
	QueryToken bool
	// MaxBodyBytes is the largest body accepted; larger ones get 413.
	MaxBodyBytes int64
	// Limits bound the events in a body.
	Limits EventLimits
	// DedupWindow and DedupSize bound the memory of recent event ids: an
	// event whose id was accepted for the same user less than DedupWindow
	// ago, among the last DedupSize, is rejected as a duplicate. 0 turns
	// it off.
	DedupWindow time.Duration
	DedupSize   int
	// RetryAfter is what a 503 (pipeline full) asks clients to wait.
	RetryAfter time.Duration
	// JournalDir, when set, makes accepted events durable before the 202:
	// they are appended to a journal in this directory and fsynced, and
	// replayed into the pipeline when the source starts (see eventJournal).
	// Empty: a 202 means the events are valid and queued in memory for
	// scoring, and a crash before they are scored loses them.
	JournalDir string
	// JournalRetention is how long an event stays in the journal: one to
	// two periods (default 1 minute).
	JournalRetention time.Duration

	// Clock stamps events that come without a timestamp (default
	// SystemClock).
	Clock Clock
	// Counter counts rejected events by reason (default: none).
	Counter Counter
	// Logger receives the source's logs (default: discarded).
	Logger *slog.Logger
}

// DefaultHTTPEventsOptions returns the defaults: no CORS origin, no token,
// 1 MiB bodies, DefaultEventLimits, a 10-minute / 100k-id duplicate window,
// Retry-After 1 s.
func DefaultHTTPEventsOptions() HTTPEventsOptions {
	return HTTPEventsOptions{
		Name:         "http",
		MaxBodyBytes: 1 << 20,
		Limits:       DefaultEventLimits(),
		DedupWindow:  10 * time.Minute,
		DedupSize:    100000,
		RetryAfter:   time.Second,

		JournalRetention: time.Minute,
	}
}

func (o *HTTPEventsOptions) validate() error {
	var errs []error
	if o.Name == "" {
		o.Name = "http"
	}
	for i, orig := range o.AllowedOrigins {
		if orig == "*" {
			continue
		}
		if !strings.HasPrefix(orig, "http://") && !strings.HasPrefix(orig, "https://") || strings.HasSuffix(orig, "/") {
			errs = append(errs, optErr(fmt.Sprintf("AllowedOrigins[%d]", i), "%q is not an origin like https://host[:port] (no path, no trailing slash) or \"*\"", orig))
		}
	}
	if o.QueryToken && o.Token == "" {
		errs = append(errs, optErr("QueryToken", "needs Token"))
	}
	if o.MaxBodyBytes < 64 {
		errs = append(errs, optErr("MaxBodyBytes", "must be ≥ 64, got %d", o.MaxBodyBytes))
	}
	if err := o.Limits.validate("Limits"); err != nil {
		errs = append(errs, err)
	}
	if o.DedupWindow < 0 {
		errs = append(errs, optErr("DedupWindow", "must be ≥ 0, got %v", o.DedupWindow))
	}
	if o.DedupSize < 0 {
		errs = append(errs, optErr("DedupSize", "must be ≥ 0, got %d", o.DedupSize))
	}
	if o.JournalDir != "" && o.JournalRetention <= 0 {
		errs = append(errs, optErr("JournalRetention", "must be > 0 with a JournalDir, got %v", o.JournalRetention))
	}
	if o.RetryAfter < 0 {
		errs = append(errs, optErr("RetryAfter", "must be ≥ 0, got %v", o.RetryAfter))
	}
	defaults(&o.Clock, &o.Counter, &o.Logger)
	return errors.Join(errs...)
}

// HTTPEvents is the http.Handler of POST /v1/events, where kiosk pages post
// user-behaviour events: one event object or an array of them,
// {event_id, event_name, timestamp, user_id, properties}. It answers
//
//	202 {"accepted": N}                                    all accepted
//	400 {"accepted": N, "rejected": [{index, event_id, reason}]}  some or all invalid or duplicate
//	503 {"accepted": N, "rejected": [...]} + Retry-After   the pipeline is full (or stopped)
//	503 {"accepted": 0, "error": "..."} + Retry-After      starting (replaying the journal), or the journal failed
//	400 / 401 / 403 / 405 / 413 / 415 {"accepted": 0, "error": "..."}  for the request as a whole
//
// Without a journal (JournalDir), a 202 means the events are valid and
// queued in memory for scoring; with one, that they are also on disk.
// Valid events of a mixed batch are accepted. The handler never blocks on
// the pipeline (it uses TryPut). Bodies may be application/json, the
// text/plain;charset=UTF-8 that navigator.sendBeacon sends for a string, or
// have no content type.
type HTTPEvents struct {
	core[HTTPEventsOptions]
	dedup   *dedup
	token   [32]byte // sha256 of the token
	anyOrig bool
	stopped atomic.Bool

	journal  *eventJournal // nil without JournalDir
	replayed atomic.Bool   // the journal's events are back in the pipeline
}

// NewHTTPEvents returns the handler, putting accepted events into sink.
func NewHTTPEvents(opts HTTPEventsOptions, sink Sink) (*HTTPEvents, error) {
	if err := checkSource("http events", opts.validate, sink); err != nil {
		return nil, err
	}
	h := &HTTPEvents{
		core:    newCore(opts, sink, opts.Logger, opts.Name),
		dedup:   newDedup(opts.DedupSize, opts.DedupWindow),
		anyOrig: slices.Contains(opts.AllowedOrigins, "*"),
	}
	if opts.Token != "" {
		h.token = sha256.Sum256([]byte(opts.Token))
	}
	if opts.JournalDir != "" {
		j, err := openEventJournal(opts.JournalDir, opts.JournalRetention)
		if err != nil {
			return nil, fmt.Errorf("http events: %w", err)
		}
		h.journal = j
	}
	return h, nil
}

// Name returns the source's name.
func (h *HTTPEvents) Name() string { return h.opts.Name }

// Run returns when ctx ends, after which the handler answers 503: the
// daemon stops its sources first and then drains the pipeline, and no event
// must enter it meanwhile. It gives HTTPEvents the same life cycle as the
// other sources.
func (h *HTTPEvents) Run(ctx context.Context) error {
	h.stopped.Store(false)
	if h.journal != nil {
		if err := h.replay(ctx); err != nil && ctx.Err() == nil {
			return err
		}
		h.replayed.Store(true)
	}
	<-ctx.Done()
	h.stopped.Store(true)
	return nil
}

// eventsResponse is the handler's answer.
type eventsResponse struct {
	Accepted int         `json:"accepted"`
	Rejected []Rejection `json:"rejected,omitempty"`
	Error    string      `json:"error,omitempty"`
}

func (h *HTTPEvents) reply(w http.ResponseWriter, status int, resp eventsResponse) {
	b, err := json.Marshal(resp)
	if err != nil { // cannot happen: plain strings and ints
		b = []byte(`{"accepted":0,"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// fail answers a problem with the request as a whole and counts it.
func (h *HTTPEvents) fail(w http.ResponseWriter, r *http.Request, status int, reason DropReason, msg string) {
	if reason != "" {
		h.opts.Counter.Drop(h.opts.Name, reason, 1)
	}
	h.rlog.Warn("event request refused", "status", status, "reason", msg, "remote", r.RemoteAddr)
	h.reply(w, status, eventsResponse{Error: msg})
}

// cors reports whether origin may post, and sets the CORS response
// headers when it may.
func (h *HTTPEvents) cors(w http.ResponseWriter, origin string) bool {
	if origin == "" {
		return true
	}
	if !h.anyOrig && !slices.Contains(h.opts.AllowedOrigins, origin) {
		return false
	}
	hd := w.Header()
	hd.Add("Vary", "Origin")
	if h.anyOrig {
		hd.Set("Access-Control-Allow-Origin", "*")
	} else {
		hd.Set("Access-Control-Allow-Origin", origin)
	}
	hd.Set("Access-Control-Expose-Headers", "Retry-After")
	return true
}

// authorized checks the bearer token, in constant time.
func (h *HTTPEvents) authorized(r *http.Request) bool {
	if h.opts.Token == "" {
		return true
	}
	var got string
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		got = strings.TrimSpace(a[7:])
	} else if h.opts.QueryToken {
		got = r.URL.Query().Get("token")
	}
	if got == "" {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], h.token[:]) == 1
}

// ServeHTTP handles POST (and the CORS preflight OPTIONS) on the events
// path. The daemon decides the path; the handler does not look at it.
func (h *HTTPEvents) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	switch r.Method {
	case http.MethodOptions:
		if !h.cors(w, origin) {
			h.fail(w, r, http.StatusForbidden, "", "origin not allowed")
			return
		}
		hd := w.Header()
		hd.Set("Allow", "POST, OPTIONS")
		if origin != "" {
			hd.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
			hd.Set("Access-Control-Allow-Headers", "Content-Type, Authorization")
			hd.Set("Access-Control-Max-Age", "600")
		}
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "POST, OPTIONS")
		h.fail(w, r, http.StatusMethodNotAllowed, "", "method not allowed")
		return
	}
	if !h.cors(w, origin) {
		h.fail(w, r, http.StatusForbidden, DropUnauthorized, "origin not allowed")
		return
	}
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="vigil"`)
		h.fail(w, r, http.StatusUnauthorized, DropUnauthorized, "missing or wrong bearer token")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			h.fail(w, r, http.StatusUnsupportedMediaType, DropInvalid, "unreadable Content-Type")
			return
		case mt != "application/json" && mt != "text/plain":
			h.fail(w, r, http.StatusUnsupportedMediaType, DropInvalid, "Content-Type must be application/json or text/plain")
			return
		case params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8"):
			h.fail(w, r, http.StatusUnsupportedMediaType, DropInvalid, "charset must be UTF-8")
			return
		}
	}
	if h.stopped.Load() || h.journal != nil && !h.replayed.Load() {
		w.Header().Set("Retry-After", h.retryAfter())
		h.fail(w, r, http.StatusServiceUnavailable, "", "source stopped or starting")
		return
	}
	limit := h.opts.MaxBodyBytes
	if r.ContentLength > limit {
		h.fail(w, r, http.StatusRequestEntityTooLarge, DropInvalid, fmt.Sprintf("body larger than %d bytes", limit))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.fail(w, r, http.StatusRequestEntityTooLarge, DropInvalid, fmt.Sprintf("body larger than %d bytes", limit))
			return
		}
		h.fail(w, r, http.StatusBadRequest, DropInvalid, "reading body: "+err.Error())
		return
	}
	now := h.opts.Clock.Now()
	evs, rejected, err := decodeEvents(body, now, h.opts.Limits)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, DropInvalid, err.Error())
		return
	}
	if h.journal != nil && len(evs) > 0 {
		// Durable before the 202: a crash from here on loses nothing.
		if err := h.journal.write(evs); err != nil {
			w.Header().Set("Retry-After", h.retryAfter())
			h.fail(w, r, http.StatusServiceUnavailable, "", "events not stored durably: "+err.Error())
			return
		}
	}
	accepted, rejected := h.deliver(evs, rejected, now)
	status := http.StatusAccepted
	for _, rej := range rejected {
		if rej.Drop == DropQueueFull {
			status = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", h.retryAfter())
			break
		}
		status = http.StatusBadRequest
	}
	h.reply(w, status, eventsResponse{Accepted: accepted, Rejected: rejected})
}

func (h *HTTPEvents) retryAfter() string {
	return strconv.Itoa(max(1, int((h.opts.RetryAfter+time.Second-1)/time.Second)))
}

// deliver puts the valid events into the sink, in order, and returns how
// many it accepted and all rejections sorted by index. Once the sink is
// full the remaining events are not tried, so that the client's retry
// keeps their order.
func (h *HTTPEvents) deliver(evs []decodedEvent, rejected []Rejection, now time.Time) (int, []Rejection) {
	accepted := 0
	full := false
	for _, de := range evs {
		ev := de.event
		if full {
			rejected = append(rejected, Rejection{Index: de.index, EventID: ev.ID, Reason: "pipeline full, retry later", Drop: DropQueueFull})
			continue
		}
		if !h.dedup.reserve(dedupKey(&ev), now) {
			rejected = append(rejected, Rejection{Index: de.index, EventID: ev.ID, Reason: "duplicate event_id", Drop: DropDuplicate})
			continue
		}
		in := Input{Source: h.opts.Name, Stream: h.stream(&ev), Time: ev.Time, Event: &ev}
		if !h.sink.TryPut(in) {
			h.dedup.release(dedupKey(&ev))
			full = true
			rejected = append(rejected, Rejection{Index: de.index, EventID: ev.ID, Reason: "pipeline full, retry later", Drop: DropQueueFull})
			continue
		}
		accepted++
	}
	if len(rejected) > 0 {
		slices.SortStableFunc(rejected, func(a, b Rejection) int { return a.Index - b.Index })
		counts := map[DropReason]int{}
		for _, r := range rejected {
			counts[r.Drop]++
		}
		for reason, n := range counts {
			h.opts.Counter.Drop(h.opts.Name, reason, n)
		}
		first := rejected[0]
		h.rlog.Warn("events rejected", "accepted", accepted, "rejected", len(rejected),
			"first_index", first.Index, "first_reason", first.Reason)
	}
	return accepted, rejected
}

// stream returns the stream an event goes to.
func (h *HTTPEvents) stream(ev *Event) string {
	switch f := h.opts.StreamFromField; f {
	case "":
	case "event_name":
		return ev.Name
	case "user_id":
		return ev.UserID
	default:
		if s, ok := ev.Properties[f].(string); ok && s != "" {
			return s
		}
	}
	return h.opts.Stream
}
