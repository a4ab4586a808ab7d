// Package dify asks a Dify workflow for advice on Vigil's alerts and stores
// the outputs as advice records in the buffer, from where the MQTT
// publisher publishes them on advice/<alert_id> and the Amplitude forwarder
// sends them as vigil_ai_advice events.
//
// The Forwarder is a buffer consumer (consumer "dify" of the lane "alert").
// For each alert at or above Options.MinSeverity that is not in its
// stream's cooldown it runs the workflow (POST {base}/workflows/run), within
// a global rate limit and a maximum concurrency, in blocking or streaming
// mode, and appends an advice record (record.Advice, id AdviceID(alert id))
// to the lane "advice": with the outputs when the run succeeded, with the
// status and error when it failed or was stopped. The alert is acknowledged
// only after its advice (or its dead letter) is stored.
//
// Dify has no idempotency key and a repeated POST runs (and bills) the
// workflow again, so the forwarder never runs a workflow twice for one
// alert:
//
//   - the alert id is always an input (alert_id), so a run can be found
//     with GET /workflows/logs?keyword=<alert id>;
//   - before the first POST for an alert, an entry goes to the journal lane
//     ("dify-journal"); once the alert is done (advice or dead letter
//     stored) a "done" entry replaces it, written before the alert is
//     acknowledged. After a restart, an alert with an open entry is looked
//     up before anything else, so a crash between "request sent" and
//     "advice stored" is resolved by the lookup; an alert with a done entry
//     is never run again, even when a source re-scores its input after the
//     crash and the same alert (same id) is appended again. The newest
//     maxFinished done entries are kept; older ones are acknowledged;
//   - a POST is repeated at once only when it provably never reached Dify
//     (no connection was made: DNS, connection refused) or Dify refused it
//     with 429 (also inside a stream), honouring Retry-After;
//   - after an ambiguous failure (timeout, connection reset after sending,
//     5xx, a stream cut before workflow_finished) the alert is looked up:
//     a succeeded or failed run is taken as the outcome (its outputs fetched
//     with GET /workflows/run/{id}), a running one is polled, and only when
//     no run exists (twice, LookupGrace apart) is the workflow run again.
//
// 400 answers are permanent: the alert becomes a dead letter with Dify's
// code and message. 401 (and 403, 404: a wrong key or URL) makes the
// forwarder "failing", loudly; as for Amplitude's invalid key, the alerts
// stay in the buffer and go once the configuration is fixed.
package dify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/internal/fwd"
	"github.com/vigil-edge/vigil/agent/internal/throttle"
	"github.com/vigil-edge/vigil/agent/record"
)

// Names in the buffer.
const (
	// Consumer is the forwarder's consumer name.
	Consumer = "dify"
	// LaneJournal is the lane of the forwarder's journal: one entry per
	// alert whose run may have been requested, acknowledged when the alert
	// is done. The buffer must be configured with it (durability sync).
	LaneJournal = "dify-journal"
)

// Lanes returns the lanes the forwarder consumes as Consumer: alert and
// LaneJournal. Register the consumer on them before anything is appended
// (Run registers too, but an alert that every consumer registered at the
// time has acknowledged is deleted, and a later consumer never sees it).
func Lanes() []string { return []string{record.LaneAlert, LaneJournal} }

// Response modes.
const (
	ModeBlocking  = "blocking"
	ModeStreaming = "streaming"
)

// maxRetryAfter caps a Retry-After header.
const maxRetryAfter = time.Hour

// AdviceID is the id of the advice record for an alert.
func AdviceID(alertID string) string { return "adv-" + alertID }

// Buffer is what the forwarder needs of the buffer. *buffer.Badger and
// *buffer.Memory have it. If the buffer also has RegisterConsumer, Run
// registers the consumer on the alert and journal lanes.
type Buffer = forward.Buffer

// Stats is a snapshot of the forwarder's state and counters, for health
// and /metrics. It holds no secret.
type Stats struct {
	// State is ok, retrying, throttled or failing.
	State forward.State
	// Since is when State began (as first seen by Stats).
	Since time.Time
	// LastError describes the last failure (without secrets).
	LastError string
	// Lag is the age of the oldest alert taken and not yet done.
	Lag time.Duration
	// Pending is the number of alerts taken and not yet done.
	Pending int
	// Runs counts POST /workflows/run requests.
	Runs uint64
	// Succeeded and Failed count advice stored, by the run's outcome
	// (failed or stopped count as Failed).
	Succeeded, Failed uint64
	// Recovered counts outcomes found by a lookup instead of a new run.
	Recovered uint64
	// Skipped counts alerts below MinSeverity; CooldownSkipped those in
	// their stream's cooldown; Duplicates records of an alert already
	// handled. All are acknowledged without a run.
	Skipped, CooldownSkipped, Duplicates uint64
	// DeadLettered counts alerts given up on (Dify's 400, undecodable).
	DeadLettered uint64
	// Acked counts alerts acknowledged after their advice was stored.
	Acked uint64
	// Requests counts HTTP requests of any kind; Retries runs or lookups
	// repeated after a failure; Throttled 429 answers; Lookups log searches.
	Requests, Retries, Throttled, Lookups uint64
}

// Forwarder runs the Dify workflow for alerts from the buffer.
type Forwarder struct {
	buf     Buffer
	opts    Options
	base    string
	tmpls   map[string]*template.Template
	dead    forward.DeadLetterStore
	client  *http.Client
	clock   forward.Clock
	log     *slog.Logger
	rlog    *fwd.RateLog
	limiter *throttle.Bucket

	running sync.Mutex // held by Run

	mu        sync.Mutex
	stats     Stats
	failing   bool                 // Dify refused the key (401/403/404) and has not accepted it since
	holdUntil time.Time            // the gate: no request before this (429, failing)
	opened    chan struct{}        // closed when the gate opens early (a success)
	retrying  int                  // workers in backoff after a temporary failure
	inflight  map[uint64]time.Time // alert seq → append time
	lastState forward.State
}

// New returns a forwarder over buf. It checks opts; Run does the work.
func New(buf Buffer, opts Options) (*Forwarder, error) {
	if buf == nil {
		return nil, errors.New("dify: nil buffer")
	}
	tmpls, err := opts.validate()
	if err != nil {
		return nil, err
	}
	d := opts.Deps.WithDefaults(buf, &http.Client{}, "forward/dify")
	f := &Forwarder{
		buf: buf, opts: opts, base: strings.TrimRight(opts.BaseURL, "/"), tmpls: tmpls,
		dead: d.DeadLetters, client: d.HTTPClient, clock: d.Clock, log: d.Logger,
		inflight: map[uint64]time.Time{}, opened: make(chan struct{}),
	}
	f.rlog = fwd.NewRateLog(f.log, f.clock, time.Minute)
	f.limiter = newBucket(opts.RateLimit, opts.Burst)
	f.lastState = forward.StateOK
	f.stats.Since = f.clock.Now()
	return f, nil
}

// Stats returns a snapshot of the forwarder's state and counters.
func (f *Forwarder) Stats() Stats {
	now := f.clock.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	state := forward.StateOK
	switch {
	case f.failing:
		state = forward.StateFailing
	case now.Before(f.holdUntil):
		state = forward.StateThrottled
	case f.retrying > 0:
		state = forward.StateRetrying
	}
	if state != f.lastState {
		f.lastState, f.stats.Since = state, now
	}
	s := f.stats
	s.State = state
	s.Pending = len(f.inflight)
	for _, t := range f.inflight {
		if d := now.Sub(t); d > s.Lag {
			s.Lag = d
		}
	}
	return s
}

func (f *Forwarder) count(fn func(s *Stats)) {
	f.mu.Lock()
	fn(&f.stats)
	f.mu.Unlock()
}

// Run forwards until ctx ends, then returns nil once the in-flight work has
// stopped. It returns an error only when it cannot start. It registers
// Consumer on Lanes if the buffer can, but the wiring should do so before
// the producers start (see Lanes).
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.TryLock() {
		return errors.New("dify: Run called twice")
	}
	defer f.running.Unlock()
	if err := forward.Register(f.buf, Consumer, Lanes()...); err != nil {
		return fmt.Errorf("dify: %w", err)
	}
	if _, ok := f.dead.(forward.BufferDeadLetters); ok {
		if _, err := f.buf.Append(ctx, forward.LaneDeadLetter); err != nil && ctx.Err() == nil {
			return fmt.Errorf("dify: dead-letter lane: %w", err)
		}
	}
	journal, finished, err := f.loadJournal()
	if err != nil {
		return fmt.Errorf("dify: %w", err)
	}
	f.log.Info("forwarding alerts to Dify", "base_url", f.base, "mode", f.opts.ResponseMode,
		"min_severity", f.opts.MinSeverity, "rate_limit", f.opts.RateLimit.String(), "resuming", len(journal),
		"remembered", len(finished))

	// The alerts being handled when ctx ends finish under hctx, which ends
	// ShutdownGrace later (see Options.ShutdownGrace).
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	stopGrace := context.AfterFunc(ctx, func() {
		if f.opts.ShutdownGrace <= 0 {
			hcancel()
			return
		}
		time.AfterFunc(f.opts.ShutdownGrace, hcancel)
	})
	defer stopGrace()
	work := make(chan job, f.opts.MaxPending)
	dones := make(chan done, f.opts.MaxPending)
	var wg sync.WaitGroup
	for range f.opts.MaxConcurrency {
		wg.Go(func() {
			for j := range work {
				if ctx.Err() != nil { // taken, not started: the next start takes it
					dones <- done{seq: j.seq, alertID: j.alert.ID}
					continue
				}
				ok, doneSeq := f.handle(hctx, j)
				dones <- done{seq: j.seq, alertID: j.alert.ID, ok: ok, doneSeq: doneSeq}
			}
		})
	}
	d := &dispatcher{f: f, journal: journal, work: work, dones: dones, taken: map[uint64]bool{},
		active: map[string]bool{}, finished: map[string]bool{}, lastRun: map[string]time.Time{}}
	for _, e := range finished {
		d.remember(e)
	}
	d.loop(ctx)
	close(work)
	wg.Wait()
	f.mu.Lock()
	clear(f.inflight)
	f.mu.Unlock()
	return nil
}
