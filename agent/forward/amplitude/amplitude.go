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
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/internal/fwd"
	"github.com/vigil-edge/vigil/agent/record"
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
type Buffer = forward.Buffer

// lanes are the lanes the forwarder consumes, in the order it reads them.
var lanes = []string{record.LaneAlert, record.LaneAdvice}

// Lanes returns the lanes the forwarder consumes as Consumer: alert and
// advice. Register the consumer on them before anything is appended (Run
// registers too, but a record that every consumer registered at the time
// has acknowledged is deleted, and a later consumer never sees it).
func Lanes() []string { return append([]string(nil), lanes...) }

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
	d := opts.Deps.WithDefaults(buf, &http.Client{Timeout: opts.Timeout}, "forward/amplitude")
	f := &Forwarder{buf: buf, opts: opts, url: opts.URL(), dead: d.DeadLetters, client: d.HTTPClient, clock: d.Clock, log: d.Logger}
	f.keyJSON, _ = json.Marshal(opts.APIKey.Reveal())
	f.overhead = len(f.body(nil))
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
	if err := forward.Register(f.buf, Consumer, lanes...); err != nil {
		return fmt.Errorf("amplitude: %w", err)
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
