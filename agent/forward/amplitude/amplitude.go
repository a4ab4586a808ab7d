// Package amplitude forwards Vigil's alerts and advice to Amplitude as
// events: vigil_anomaly_detected for each alert at or above a severity, and
// vigil_ai_advice for each advice record the Dify forwarder stored.
//
// The Forwarder is a buffer consumer (consumer "amplitude" on the lanes
// "alert" and "advice"). It batches events within Amplitude's limits, posts
// them to the HTTP V2 API (or the Batch API) and acknowledges a record only
// when Amplitude accepted its event (2xx) or the forwarder recorded a dead
// letter for it. Each event's insert_id is the record's id, so resending
// after a timeout, a 5xx or a restart is harmless: Amplitude drops the copy.
//
// How each answer is handled (see ../shared/contracts/amplitude.md):
//
//   - 2xx: the events are acknowledged.
//   - 400 listing events (events_with_invalid_fields,
//     events_with_missing_fields, silenced_events): exactly those become dead
//     letters; the others are sent again at once.
//   - 400 listing none (an invalid API key, a missing top-level field), and
//     any other 4xx but 408, 413 and 429: the request can never succeed as
//     configured. The forwarder turns "failing", says so loudly in the log
//     (at most once a minute) and in Stats, and keeps the events in the
//     buffer without acknowledging them: an analytics event is worth more
//     late than never, and a key is fixed by configuration, after which a
//     restart or reload sends everything. Until then it tries again only
//     every Options.FailingRetry, so a key fixed on Amplitude's side (or a
//     400 misread as fatal) heals on its own.
//   - 413: the batch is halved and resent; a single event that is too large
//     is a dead letter. The batch size grows back after a run of successes.
//   - 429: the devices and users Amplitude names (or, failing that, the
//     events it names, or everything) wait Retry-After or
//     Options.ThrottlePause; those over their daily quota wait until the
//     next UTC midnight. Other events go on at once.
//   - 408, 5xx and network errors: capped, jittered exponential backoff,
//     honouring Retry-After, for as long as the buffer holds the events.
package amplitude

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/internal/fwd"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/secret"
	"github.com/vigil-edge/vigil/buffer"
)

// Consumer is the forwarder's consumer name in the buffer.
const Consumer = "amplitude"

// Amplitude's hosts.
const (
	HostUS = "https://api2.amplitude.com"
	HostEU = "https://api.eu.amplitude.com"
)

// API selects Amplitude's ingestion API.
type API string

// The two ingestion APIs.
const (
	// APIHTTP is the HTTP V2 API, POST /2/httpapi: < 1 MB and < 2000
	// events per request, insert_id deduplicated per device.
	APIHTTP API = "http"
	// APIBatch is the Batch Event Upload API, POST /batch: 20 MB and 2000
	// events per request, insert_id deduplicated globally.
	APIBatch API = "batch"
)

// Request limits of the APIs.
const (
	maxEvents     = 1999           // < 2000 events per request
	maxBytesHTTP  = 1_000_000 - 1  // < 1 MB per request (HTTP V2)
	maxBytesBatch = 20_000_000 - 1 // 20 MB per request (Batch)
	maxRetryAfter = time.Hour      // a longer Retry-After is taken as this
	respLimit     = 1 << 20        // most bytes of a response read
)

// Buffer is what the forwarder needs of the buffer. *buffer.Badger and
// *buffer.Memory have it. If the buffer also has RegisterConsumer, Run
// registers the consumer on its lanes.
type Buffer interface {
	Read(consumer, lane string, max int) ([]buffer.Record, error)
	Ack(consumer, lane string, seqs ...uint64) error
	Notify(lane string) <-chan struct{}
	Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error)
}

// registerer is the optional capability of registering a consumer.
type registerer interface {
	RegisterConsumer(name string, lanes ...string) error
}

// lanes are the lanes the forwarder consumes, in the order it reads them.
var lanes = []string{record.LaneAlert, record.LaneAdvice}

// Lanes returns the lanes the forwarder consumes as Consumer: alert and
// advice. Register the consumer on them before anything is appended (Run
// registers too, but a record that every consumer registered at the time
// has acknowledged is deleted, and a later consumer never sees it).
func Lanes() []string { return append([]string(nil), lanes...) }

// Options configures a Forwarder. Start from DefaultOptions.
type Options struct {
	// APIKey is the project's API key. It is a secret: it goes into the
	// request body and nowhere else (never a log, an error or Stats).
	APIKey secret.Secret
	// Region picks the host when Endpoint is empty: "us" or "eu".
	Region string
	// API is APIHTTP (default) or APIBatch.
	API API
	// Endpoint is the full URL to post to, overriding Region and API's path
	// (a proxy, a test double). The API still sets the limits.
	Endpoint string
	// DeviceID is Vigil's device id, each event's device_id. It must be an
	// id Amplitude keeps: at least MinIDLength characters, no placeholder.
	DeviceID string
	// MinIDLength is sent as options.min_id_length; Amplitude's default is 5.
	MinIDLength int
	// MinSeverity is the lowest alert severity sent: warning, major or
	// critical. Alerts below it are acknowledged unsent and counted.
	MinSeverity string
	// FlushInterval is the longest an event waits for its batch to fill.
	FlushInterval time.Duration
	// MaxBatch is the most events per request, below 2000.
	MaxBatch int
	// MaxBatchBytes is the largest request body: below 1 MB for the HTTP
	// API, 20 MB for Batch. An event that cannot fit is a dead letter.
	MaxBatchBytes int
	// MaxPending is the most records held in memory between read and
	// acknowledgement; the rest wait in the buffer.
	MaxPending int
	// Timeout is the timeout of one request.
	Timeout time.Duration
	// Backoff paces retries after network errors and 5xx.
	Backoff forward.Backoff
	// ThrottlePause is how long throttled devices and users wait after a
	// 429 without Retry-After (Amplitude suggests 30 s).
	ThrottlePause time.Duration
	// FailingRetry is how long the forwarder waits before trying again
	// after a permanent refusal of the whole request (state failing).
	FailingRetry time.Duration
	// AppVersion is sent as app_version (Vigil's version); may be empty.
	AppVersion string
	// DeadLetters stores dead letters; nil means the buffer's lane
	// forward.LaneDeadLetter.
	DeadLetters forward.DeadLetterStore
	// HTTPClient makes the requests; nil means a client with Timeout.
	HTTPClient *http.Client
	// Clock is the clock; nil means forward.SystemClock.
	Clock forward.Clock
	// Logger receives the forwarder's log; nil discards it.
	Logger *slog.Logger
}

// DefaultOptions returns the defaults: HTTP V2 API in the US region,
// min_id_length 5, every severity, a 1 s flush interval, 100 events and
// < 1 MB per request, a 10 s timeout, backoff from 1 s to 5 min, a 30 s
// throttle pause and a 5 min retry when failing. APIKey and DeviceID have
// no default.
func DefaultOptions() Options {
	return Options{
		Region:        "us",
		API:           APIHTTP,
		MinIDLength:   5,
		MinSeverity:   record.SeverityWarning,
		FlushInterval: time.Second,
		MaxBatch:      100,
		MaxBatchBytes: maxBytesHTTP,
		MaxPending:    1000,
		Timeout:       10 * time.Second,
		Backoff:       forward.Backoff{Initial: time.Second, Max: 5 * time.Minute},
		ThrottlePause: 30 * time.Second,
		FailingRetry:  5 * time.Minute,
	}
}

// URL returns the URL requests go to.
func (o Options) URL() string {
	if o.Endpoint != "" {
		return o.Endpoint
	}
	host := HostUS
	if o.Region == "eu" {
		host = HostEU
	}
	if o.API == APIBatch {
		return host + "/batch"
	}
	return host + "/2/httpapi"
}

// validate reports every problem with o at once, each naming its field.
// It never includes the API key.
func (o *Options) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("Options.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if o.APIKey == "" {
		bad("APIKey", "required")
	}
	if o.Region != "us" && o.Region != "eu" {
		bad("Region", "want us or eu, got %q", o.Region)
	}
	limit := maxBytesHTTP
	switch o.API {
	case APIHTTP:
	case APIBatch:
		limit = maxBytesBatch
	default:
		bad("API", "want %q or %q, got %q", APIHTTP, APIBatch, o.API)
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("Endpoint", "want an http or https URL, got %q", o.Endpoint)
		}
	}
	if o.MinIDLength < 1 {
		bad("MinIDLength", "must be at least 1, got %d", o.MinIDLength)
	}
	switch {
	case o.DeviceID == "":
		bad("DeviceID", "required")
	case !ValidID(o.DeviceID, o.MinIDLength):
		bad("DeviceID", "%q is not an id Amplitude keeps (at least %d characters, not a placeholder)", o.DeviceID, o.MinIDLength)
	}
	if record.SeverityRank(o.MinSeverity) == 0 {
		bad("MinSeverity", "want warning, major or critical, got %q", o.MinSeverity)
	}
	if o.FlushInterval <= 0 {
		bad("FlushInterval", "must be positive, got %v", o.FlushInterval)
	}
	if o.MaxBatch < 1 || o.MaxBatch > maxEvents {
		bad("MaxBatch", "must be 1 to %d, got %d", maxEvents, o.MaxBatch)
	}
	if o.MaxBatchBytes < 1024 || o.MaxBatchBytes > limit {
		bad("MaxBatchBytes", "must be 1024 to %d for the %s API, got %d", limit, o.API, o.MaxBatchBytes)
	}
	if o.MaxPending < o.MaxBatch {
		bad("MaxPending", "must be at least MaxBatch (%d), got %d", o.MaxBatch, o.MaxPending)
	}
	if o.Timeout <= 0 {
		bad("Timeout", "must be positive, got %v", o.Timeout)
	}
	if err := o.Backoff.Validate("Options.Backoff"); err != nil {
		errs = append(errs, err)
	}
	if o.ThrottlePause <= 0 {
		bad("ThrottlePause", "must be positive, got %v", o.ThrottlePause)
	}
	if o.FailingRetry <= 0 {
		bad("FailingRetry", "must be positive, got %v", o.FailingRetry)
	}
	if len(errs) > 0 {
		return fmt.Errorf("amplitude: invalid options: %w", errors.Join(errs...))
	}
	return nil
}

// Stats is a snapshot of the forwarder's state and counters, for health
// and /metrics. It holds no secret.
type Stats struct {
	// State is ok, retrying, throttled or failing.
	State forward.State
	// Since is when State began.
	Since time.Time
	// LastError describes the last failure (without secrets); empty after
	// a success.
	LastError string
	// Lag is the age of the oldest record taken from the buffer and not yet
	// acknowledged; 0 when there is none.
	Lag time.Duration
	// Pending is the number of events taken and not yet acknowledged, Held
	// those of them waiting out a throttle.
	Pending, Held int
	// Sent counts events sent, each attempt counted.
	Sent uint64
	// Acked counts records acknowledged after Amplitude accepted them.
	Acked uint64
	// Skipped counts alerts below MinSeverity, acknowledged unsent.
	Skipped uint64
	// DeadLettered counts records given up on, stored as dead letters.
	DeadLettered uint64
	// Requests counts HTTP requests made; Retries those that repeated a
	// request after a temporary failure; Throttled the 429 answers.
	Requests, Retries, Throttled uint64
}

// Forwarder sends alerts and advice from the buffer to Amplitude.
type Forwarder struct {
	buf      Buffer
	opts     Options
	url      string
	keyJSON  []byte // the API key as a JSON string
	overhead int    // bytes of a request body besides its events
	dead     forward.DeadLetterStore
	client   *http.Client
	clock    forward.Clock
	log      *slog.Logger
	rlog     *fwd.RateLog

	running sync.Mutex // held by Run

	mu    sync.Mutex
	stats Stats
}

// New returns a forwarder over buf. It checks opts; Run does the work.
func New(buf Buffer, opts Options) (*Forwarder, error) {
	if buf == nil {
		return nil, errors.New("amplitude: nil buffer")
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	f := &Forwarder{buf: buf, opts: opts, url: opts.URL(), dead: opts.DeadLetters, client: opts.HTTPClient, clock: opts.Clock}
	f.keyJSON, _ = json.Marshal(opts.APIKey.Reveal())
	f.overhead = len(f.body(nil))
	if f.dead == nil {
		f.dead = forward.BufferDeadLetters{Buffer: buf}
	}
	if f.client == nil {
		f.client = &http.Client{Timeout: opts.Timeout}
	}
	if f.clock == nil {
		f.clock = forward.SystemClock{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f.log = log.With("component", "forward/amplitude")
	f.rlog = fwd.NewRateLog(f.log, f.clock, time.Minute)
	f.stats = Stats{State: forward.StateOK, Since: f.clock.Now()}
	return f, nil
}

// Stats returns a snapshot of the forwarder's state and counters.
func (f *Forwarder) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func (f *Forwarder) count(fn func(s *Stats)) {
	f.mu.Lock()
	fn(&f.stats)
	f.mu.Unlock()
}

// event is one event taken from the buffer and not yet acknowledged.
type event struct {
	lane      string
	seq       uint64
	recTime   time.Time // when the record was appended (for Lag)
	readAt    time.Time // when the forwarder took it (for FlushInterval)
	id        string    // insert_id
	device    string
	user      string
	holdUntil time.Time // a 429 named this event
	data      []byte    // the encoded event
}

// Run forwards until ctx ends, then returns nil. It returns an error only
// when it cannot start (consumer registration, a missing lane). It
// registers Consumer on Lanes if the buffer can, but the wiring should do
// so before the producers start (see Lanes).
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.TryLock() {
		return errors.New("amplitude: Run called twice")
	}
	defer f.running.Unlock()
	if r, ok := f.buf.(registerer); ok {
		if err := r.RegisterConsumer(Consumer, lanes...); err != nil {
			return fmt.Errorf("amplitude: %w", err)
		}
	}
	if _, ok := f.dead.(forward.BufferDeadLetters); ok {
		// An append of nothing fails for an unknown lane: find out now, not
		// at the first dead letter.
		if _, err := f.buf.Append(ctx, forward.LaneDeadLetter); err != nil && ctx.Err() == nil {
			return fmt.Errorf("amplitude: dead-letter lane: %w", err)
		}
	}
	f.log.Info("forwarding to Amplitude", "url", f.url, "api", f.opts.API, "min_severity", f.opts.MinSeverity)
	r := &runner{
		f:          f,
		taken:      map[string]map[uint64]bool{},
		notify:     map[string]<-chan struct{}{},
		more:       map[string]bool{},
		pausedDev:  map[string]time.Time{},
		pausedUser: map[string]time.Time{},
		batchLimit: f.opts.MaxBatch,
	}
	for _, l := range lanes {
		r.taken[l] = map[uint64]bool{}
	}
	return r.run(ctx)
}

// runner is the state of one Run, owned by its goroutine.
type runner struct {
	f      *Forwarder
	queue  []*event                   // taken events, in read order
	taken  map[string]map[uint64]bool // lane → seqs in queue
	notify map[string]<-chan struct{} // lane → channel taken before the last read
	more   map[string]bool            // lane → the last read was cut by max

	pausedDev, pausedUser map[string]time.Time
	pauseAll              time.Time // 429 naming nobody
	retryAt               time.Time // backoff, or the next try when failing
	attempt               int       // consecutive temporary failures
	failing               bool
	urgent                bool // resend at once (after 400, 413, 429)
	bufRetry              time.Time
	bufAttempt            int
	batchLimit, okStreak  int
	held                  int
}

func (r *runner) run(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return nil
		}
		r.fill(ctx)
		now := r.f.clock.Now()
		batch, wake := r.next(now)
		r.publish(now)
		if len(batch) > 0 {
			r.send(ctx, batch)
			r.publish(r.f.clock.Now())
			continue
		}
		var wakeA, wakeB <-chan struct{}
		if len(r.queue) < r.f.opts.MaxPending && !now.Before(r.bufRetry) {
			wakeA, wakeB = r.notify[lanes[0]], r.notify[lanes[1]]
		} else if now.Before(r.bufRetry) {
			wake = earliest(wake, r.bufRetry)
		}
		if wake.IsZero() {
			select {
			case <-ctx.Done():
			case <-wakeA:
			case <-wakeB:
			}
			continue
		}
		t := r.f.clock.NewTimer(wake.Sub(now))
		select {
		case <-ctx.Done():
		case <-wakeA:
		case <-wakeB:
		case <-t.C():
		}
		t.Stop()
	}
}

// due reports whether lane may hold records the runner has not seen.
func (r *runner) due(lane string) bool {
	ch := r.notify[lane]
	if ch == nil || r.more[lane] {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// fill takes new records from the buffer, as many as MaxPending allows.
func (r *runner) fill(ctx context.Context) {
	f := r.f
	now := f.clock.Now()
	if now.Before(r.bufRetry) {
		return
	}
	for _, lane := range lanes {
		room := f.opts.MaxPending - len(r.queue)
		if room <= 0 {
			return
		}
		if !r.due(lane) {
			continue
		}
		ch := f.buf.Notify(lane)
		max := len(r.taken[lane]) + room
		recs, err := f.buf.Read(Consumer, lane, max)
		if err != nil {
			r.bufferError("read", lane, err)
			return
		}
		r.notify[lane] = ch
		r.more[lane] = len(recs) == max
		var done []uint64
		for _, rec := range recs {
			if r.taken[lane][rec.Seq] {
				continue
			}
			ev, dl := f.convert(rec, now)
			switch {
			case dl != nil:
				if err := f.dead.StoreDeadLetter(ctx, *dl); err != nil {
					r.bufferError("store dead letter", lane, err)
					r.more[lane] = true
					return
				}
				f.log.Warn("record dead-lettered", "lane", lane, "seq", rec.Seq, "reason", dl.Reason)
				f.count(func(s *Stats) { s.DeadLettered++ })
				done = append(done, rec.Seq)
			case ev == nil:
				f.count(func(s *Stats) { s.Skipped++ })
				done = append(done, rec.Seq)
			default:
				r.queue = append(r.queue, ev)
				r.taken[lane][rec.Seq] = true
			}
		}
		if len(done) > 0 {
			if err := f.buf.Ack(Consumer, lane, done...); err != nil {
				r.bufferError("ack", lane, err)
				r.more[lane] = true
				return
			}
		}
	}
	r.bufAttempt = 0
}

// bufferError backs off reading after the buffer failed; the records stay
// where they are and are read again.
func (r *runner) bufferError(op, lane string, err error) {
	r.bufAttempt++
	d := r.f.opts.Backoff.Delay(r.bufAttempt)
	r.bufRetry = r.f.clock.Now().Add(d)
	r.f.rlog.Log(slog.LevelError, "buffer", "buffer "+op+" failed", "lane", lane, "retry_in", d, "err", err)
}

// convert turns a record into an event to send; nil and nil for a record
// that is skipped (below MinSeverity), or a dead letter for a record that
// can never be sent.
func (f *Forwarder) convert(rec buffer.Record, now time.Time) (*event, *forward.DeadLetter) {
	v, err := record.Decode(rec.Lane, rec.Data)
	if err != nil {
		return nil, f.deadLetter(rec.Lane, rec.Seq, "", 0, "", "undecodable record: "+err.Error(), nil, now)
	}
	var ev wireEvent
	switch x := v.(type) {
	case *record.Alert:
		if record.SeverityRank(x.Severity) < record.SeverityRank(f.opts.MinSeverity) {
			return nil, nil
		}
		ev = f.alertEvent(x)
	case *record.Advice:
		if x.Severity != "" && record.SeverityRank(x.Severity) < record.SeverityRank(f.opts.MinSeverity) {
			return nil, nil
		}
		ev = f.adviceEvent(x)
	default:
		return nil, f.deadLetter(rec.Lane, rec.Seq, "", 0, "", fmt.Sprintf("unexpected record %T", v), nil, now)
	}
	if ev.InsertID == "" {
		return nil, f.deadLetter(rec.Lane, rec.Seq, "", 0, "", "record without an id", nil, now)
	}
	data, err := f.encode(ev)
	if err != nil {
		return nil, f.deadLetter(rec.Lane, rec.Seq, ev.InsertID, 0, "", err.Error(), nil, now)
	}
	if f.overhead+len(data) > f.opts.MaxBatchBytes {
		return nil, f.deadLetter(rec.Lane, rec.Seq, ev.InsertID, 0, "", fmt.Sprintf("event of %d bytes cannot fit a request of at most %d bytes", len(data), f.opts.MaxBatchBytes), data, now)
	}
	return &event{
		lane: rec.Lane, seq: rec.Seq, recTime: rec.Time, readAt: now,
		id: ev.InsertID, device: ev.DeviceID, user: ev.UserID, data: data,
	}, nil
}

func (f *Forwarder) deadLetter(lane string, seq uint64, id string, status int, code, reason string, data []byte, now time.Time) *forward.DeadLetter {
	did := fmt.Sprintf("%s/%s/%d", Consumer, lane, seq)
	if id != "" {
		did = Consumer + "/" + lane + "/" + id
	}
	return &forward.DeadLetter{
		ID: did, TS: now, Consumer: Consumer, Lane: lane, Seq: seq, RecordID: id,
		Status: status, Code: code, Reason: fwd.Clean(reason, f.opts.APIKey.Reveal()), Event: data,
	}
}

// heldUntil returns when ev may be sent, if it is held at now.
func (r *runner) heldUntil(ev *event, now time.Time) time.Time {
	var until time.Time
	for _, t := range []time.Time{ev.holdUntil, r.pausedDev[ev.device], r.pausedUser[ev.user]} {
		if t.After(now) && t.After(until) {
			until = t
		}
	}
	return until
}

// next returns the batch to send now, if any, and otherwise when to look
// again (zero: only when new records arrive).
func (r *runner) next(now time.Time) (batch []*event, wake time.Time) {
	r.held = 0
	if now.Before(r.retryAt) {
		return nil, r.retryAt
	}
	if now.Before(r.pauseAll) {
		r.held = len(r.queue)
		return nil, r.pauseAll
	}
	for _, m := range []map[string]time.Time{r.pausedDev, r.pausedUser} {
		for k, t := range m {
			if !t.After(now) {
				delete(m, k)
			}
		}
	}
	size := r.f.overhead
	full := false
	var oldest time.Time
	for _, ev := range r.queue {
		if until := r.heldUntil(ev, now); !until.IsZero() {
			r.held++
			wake = earliest(wake, until)
			continue
		}
		if full {
			continue
		}
		if len(batch) == r.batchLimit || size+len(ev.data)+1 > r.f.opts.MaxBatchBytes {
			full = true
			continue
		}
		batch = append(batch, ev)
		size += len(ev.data) + 1
		if oldest.IsZero() || ev.readAt.Before(oldest) {
			oldest = ev.readAt
		}
	}
	if len(batch) == 0 {
		return nil, wake
	}
	full = full || len(batch) == r.batchLimit
	due := oldest.Add(r.f.opts.FlushInterval)
	if full || r.urgent || r.attempt > 0 || r.failing || !due.After(now) {
		return batch, time.Time{}
	}
	return nil, earliest(wake, due)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// body builds a request body around the given encoded events.
func (f *Forwarder) body(batch []*event) []byte {
	n := 64 + len(f.keyJSON)
	for _, ev := range batch {
		n += len(ev.data) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"api_key":`...)
	b = append(b, f.keyJSON...)
	b = append(b, `,"events":[`...)
	for i, ev := range batch {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, ev.data...)
	}
	b = append(b, `],"options":{"min_id_length":`...)
	b = strconv.AppendInt(b, int64(f.opts.MinIDLength), 10)
	b = append(b, "}}"...)
	return b
}

// post sends one request and returns the answer.
func (f *Forwarder) post(ctx context.Context, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "*/*")
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, respLimit))
	if err != nil && resp.StatusCode < 300 {
		// A 2xx whose body broke off was still a 2xx: the events are in.
		err = nil
	}
	return resp.StatusCode, resp.Header, data, err
}

// send posts a batch and acts on the answer.
func (r *runner) send(ctx context.Context, batch []*event) {
	f := r.f
	retry := r.attempt > 0 || r.failing
	r.urgent = false
	f.count(func(s *Stats) {
		s.Requests++
		s.Sent += uint64(len(batch))
		if retry {
			s.Retries++
		}
	})
	status, hdr, data, err := f.post(ctx, f.body(batch))
	if ctx.Err() != nil {
		return // shutting down: the events stay in the buffer
	}
	now := f.clock.Now()
	if err != nil {
		r.temporary(now, 0, fmt.Sprintf("request failed: %v", err), nil)
		return
	}
	resp := decodeResponse(data)
	switch {
	case status >= 200 && status < 300:
		r.delivered(batch)
	case status == http.StatusBadRequest:
		r.badRequest(ctx, batch, resp, now)
	case status == http.StatusRequestEntityTooLarge:
		r.tooLarge(ctx, batch, now)
	case status == http.StatusTooManyRequests:
		r.throttled(batch, resp, hdr, now)
	case status == http.StatusRequestTimeout || status >= 500 || status < 200 || (status >= 300 && status < 400):
		r.temporary(now, status, describe(status, resp), hdr)
	default:
		r.refused(now, status, describe(status, resp))
	}
}

// describe puts an answer in words for logs and Stats (the caller cleans
// it of secrets).
func describe(status int, resp response) string {
	s := fmt.Sprintf("HTTP %d", status)
	if resp.Error != "" {
		s += ": " + resp.Error
	}
	if resp.MissingField != "" {
		s += " (missing field " + resp.MissingField + ")"
	}
	return s
}

// delivered acknowledges a batch Amplitude accepted.
func (r *runner) delivered(batch []*event) {
	f := r.f
	if err := r.ack(batch); err != nil {
		// The events reached Amplitude; unacknowledged, they are read and
		// sent again later, and insert_id makes the copy harmless.
		f.rlog.Log(slog.LevelError, "ack", "acknowledging sent events failed", "err", err)
	}
	f.count(func(s *Stats) { s.Acked += uint64(len(batch)); s.LastError = "" })
	if r.failing {
		f.log.Info("Amplitude accepts events again")
		f.rlog.Reset("failing")
	} else if r.attempt > 0 {
		f.log.Info("Amplitude reachable again", "after_attempts", r.attempt)
	}
	r.failing, r.attempt = false, 0
	f.rlog.Reset("retry")
	if r.batchLimit < f.opts.MaxBatch {
		if r.okStreak++; r.okStreak >= 8 {
			r.batchLimit = min(2*r.batchLimit, f.opts.MaxBatch)
			r.okStreak = 0
		}
	}
}

// ack acknowledges events and forgets them, whether or not the buffer took
// the acknowledgement (if not, they are read again).
func (r *runner) ack(evs []*event) error {
	byLane := map[string][]uint64{}
	gone := make(map[*event]bool, len(evs))
	for _, ev := range evs {
		byLane[ev.lane] = append(byLane[ev.lane], ev.seq)
		gone[ev] = true
		delete(r.taken[ev.lane], ev.seq)
	}
	kept := r.queue[:0]
	for _, ev := range r.queue {
		if !gone[ev] {
			kept = append(kept, ev)
		}
	}
	clear(r.queue[len(kept):])
	r.queue = kept
	var errs []error
	for _, lane := range lanes {
		if seqs := byLane[lane]; len(seqs) > 0 {
			if err := r.f.buf.Ack(Consumer, lane, seqs...); err != nil {
				errs = append(errs, err)
				r.more[lane] = true
			}
		}
	}
	return errors.Join(errs...)
}

// badRequest handles a 400: the listed events are dead letters and the
// others go again; a 400 listing none refuses the whole request.
func (r *runner) badRequest(ctx context.Context, batch []*event, resp response, now time.Time) {
	f := r.f
	rejected := resp.rejected(len(batch))
	if len(rejected) == 0 {
		r.refused(now, http.StatusBadRequest, describe(http.StatusBadRequest, resp))
		return
	}
	var dead []*event
	for i := range batch {
		why, ok := rejected[i]
		if !ok {
			continue
		}
		ev := batch[i]
		dl := f.deadLetter(ev.lane, ev.seq, ev.id, http.StatusBadRequest, "", "Amplitude rejected the event: "+why, ev.data, now)
		if err := f.dead.StoreDeadLetter(ctx, *dl); err != nil {
			r.temporary(now, 0, "storing a dead letter failed: "+err.Error(), nil)
			break
		}
		f.log.Warn("event dead-lettered", "insert_id", ev.id, "reason", dl.Reason)
		dead = append(dead, ev)
	}
	if len(dead) > 0 {
		if err := r.ack(dead); err != nil {
			f.rlog.Log(slog.LevelError, "ack", "acknowledging dead-lettered events failed", "err", err)
		}
		f.count(func(s *Stats) { s.DeadLettered += uint64(len(dead)) })
	}
	r.urgent = true
}

// tooLarge handles a 413: halve the batch, or give up on a single event.
func (r *runner) tooLarge(ctx context.Context, batch []*event, now time.Time) {
	f := r.f
	r.okStreak = 0
	r.urgent = true
	if len(batch) > 1 {
		r.batchLimit = max(1, len(batch)/2)
		f.log.Info("request too large, halving the batch", "events", len(batch), "limit", r.batchLimit)
		return
	}
	ev := batch[0]
	dl := f.deadLetter(ev.lane, ev.seq, ev.id, http.StatusRequestEntityTooLarge, "", "event too large for Amplitude (413)", ev.data, now)
	if err := f.dead.StoreDeadLetter(ctx, *dl); err != nil {
		r.temporary(now, 0, "storing a dead letter failed: "+err.Error(), nil)
		return
	}
	f.log.Warn("event dead-lettered", "insert_id", ev.id, "reason", dl.Reason)
	if err := r.ack(batch); err != nil {
		f.rlog.Log(slog.LevelError, "ack", "acknowledging dead-lettered events failed", "err", err)
	}
	f.count(func(s *Stats) { s.DeadLettered++ })
}

// throttled handles a 429: the named devices and users wait, the others go
// on at once.
func (r *runner) throttled(batch []*event, resp response, hdr http.Header, now time.Time) {
	f := r.f
	pause := f.opts.ThrottlePause
	if ra, ok := fwd.RetryAfter(hdr, now); ok {
		pause = min(max(ra, time.Second), maxRetryAfter)
	}
	until := now.Add(pause)
	reset := nextUTCMidnight(now)
	hold := func(m map[string]time.Time, id string, t time.Time) {
		if t.After(m[id]) {
			m[id] = t
		}
	}
	for id := range resp.ThrottledDevices {
		hold(r.pausedDev, id, until)
	}
	for id := range resp.ThrottledUsers {
		hold(r.pausedUser, id, until)
	}
	for id := range resp.QuotaDevices {
		hold(r.pausedDev, id, reset)
	}
	for id := range resp.QuotaUsers {
		hold(r.pausedUser, id, reset)
	}
	for _, i := range resp.ThrottledEvents {
		if i >= 0 && i < len(batch) && r.heldUntil(batch[i], now).IsZero() {
			batch[i].holdUntil = until
		}
	}
	// If nothing of this batch is held now, Amplitude named nobody we sent
	// (or nobody at all): everything waits, or we would ask again at once.
	anyHeld := false
	for _, ev := range batch {
		anyHeld = anyHeld || !r.heldUntil(ev, now).IsZero()
	}
	if !anyHeld {
		r.pauseAll = until
	}
	r.urgent = true
	msg := describe(http.StatusTooManyRequests, resp)
	f.count(func(s *Stats) { s.Throttled++; s.LastError = fwd.Clean(msg, f.opts.APIKey.Reveal()) })
	f.rlog.Log(slog.LevelWarn, "throttled", "Amplitude throttles; holding the named devices and users",
		"pause", pause, "devices", len(resp.ThrottledDevices), "users", len(resp.ThrottledUsers),
		"quota_devices", len(resp.QuotaDevices), "quota_users", len(resp.QuotaUsers), "eps_threshold", resp.EPSThreshold)
}

// nextUTCMidnight is when Amplitude's daily quota resets.
func nextUTCMidnight(now time.Time) time.Time {
	y, m, d := now.UTC().Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
}

// temporary handles a failure worth retrying: back off, honouring
// Retry-After.
func (r *runner) temporary(now time.Time, status int, msg string, hdr http.Header) {
	f := r.f
	r.attempt++
	d := f.opts.Backoff.Delay(r.attempt)
	if ra, ok := fwd.RetryAfter(hdr, now); ok && ra > d {
		d = min(ra, maxRetryAfter)
	}
	r.retryAt = now.Add(d)
	msg = fwd.Clean(msg, f.opts.APIKey.Reveal())
	f.count(func(s *Stats) { s.LastError = msg })
	f.rlog.Log(slog.LevelWarn, "retry", "sending to Amplitude failed, will retry",
		"status", status, "attempt", r.attempt, "retry_in", d, "err", msg)
}

// refused handles a permanent refusal of the whole request: failing, loud,
// events kept.
func (r *runner) refused(now time.Time, status int, msg string) {
	f := r.f
	r.failing = true
	r.attempt = 0
	r.retryAt = now.Add(f.opts.FailingRetry)
	msg = fwd.Clean(msg, f.opts.APIKey.Reveal())
	f.count(func(s *Stats) { s.LastError = msg })
	f.rlog.Log(slog.LevelError, "failing",
		"Amplitude refuses every request (check amplitude.api_key and amplitude.endpoint, then restart or reload vigil); events stay in the buffer",
		"status", status, "err", msg, "pending", len(r.queue), "next_try", r.retryAt)
}

// publish updates the state and gauges in Stats.
func (r *runner) publish(now time.Time) {
	state := forward.StateOK
	switch {
	case r.failing:
		state = forward.StateFailing
	case r.attempt > 0:
		state = forward.StateRetrying
	case r.held > 0 || now.Before(r.pauseAll):
		state = forward.StateThrottled
	}
	var oldest time.Time
	for _, ev := range r.queue {
		if oldest.IsZero() || ev.recTime.Before(oldest) {
			oldest = ev.recTime
		}
	}
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	s := &r.f.stats
	if s.State != state {
		s.State, s.Since = state, now
	}
	s.Pending, s.Held = len(r.queue), r.held
	s.Lag = 0
	if !oldest.IsZero() && now.After(oldest) {
		s.Lag = now.Sub(oldest)
	}
}
