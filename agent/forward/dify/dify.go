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
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/internal/fwd"
	"github.com/vigil-edge/vigil/agent/internal/throttle"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/secret"
	"github.com/vigil-edge/vigil/buffer"
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
type Buffer interface {
	Read(consumer, lane string, max int) ([]buffer.Record, error)
	Ack(consumer, lane string, seqs ...uint64) error
	Notify(lane string) <-chan struct{}
	Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error)
}

type registerer interface {
	RegisterConsumer(name string, lanes ...string) error
}

// Options configures a Forwarder. Start from DefaultOptions.
type Options struct {
	// BaseURL is the API base, e.g. https://api.dify.ai/v1 or
	// http://dify.local/v1.
	BaseURL string
	// APIKey is the workflow app's key. It is a secret: it goes into the
	// Authorization header and nowhere else.
	APIKey secret.Secret
	// ResponseMode is ModeBlocking or ModeStreaming.
	ResponseMode string
	// User is the end-user id sent with each run; empty means
	// "vigil-<alert's device>".
	User string
	// Inputs maps workflow inputs to text/templates over TemplateData,
	// with TemplateFuncs. The input alert_id
	// (the alert's id) is always sent, whatever the templates say.
	Inputs map[string]string
	// MinSeverity is the lowest alert severity sent: warning, major or
	// critical. Alerts below it are acknowledged and counted as Skipped.
	MinSeverity string
	// Timeout bounds one run request (blocking answer or whole stream).
	Timeout time.Duration
	// RequestTimeout bounds a lookup (logs, run status).
	RequestTimeout time.Duration
	// RateLimit is the most runs per period for the whole device; a zero
	// Count means unlimited. Alerts wait for their turn; none is dropped.
	RateLimit Rate
	// Burst is the token bucket's size; 0 means RateLimit.Count.
	Burst int
	// Cooldown is the least time, by the alerts' own timestamps, between
	// two runs for one stream; alerts inside it are acknowledged unsent and
	// counted. 0 disables it.
	Cooldown time.Duration
	// MaxConcurrency is the most alerts handled at once.
	MaxConcurrency int
	// MaxPending is the most alerts taken from the buffer and not yet done.
	MaxPending int
	// Backoff paces retries (429, failures before sending, ambiguous
	// failures, lookups).
	Backoff forward.Backoff
	// FailingRetry is how long the forwarder waits after a 401 (or 403,
	// 404) before trying again.
	FailingRetry time.Duration
	// LookupGrace: when a lookup after an ambiguous failure finds no run,
	// the forwarder looks again LookupGrace after the failure before it runs
	// the workflow, in case Dify was slow to log the run.
	LookupGrace time.Duration
	// PollInterval is how often a run found running is polled; PollTimeout
	// is when the forwarder stops waiting for it and stores a failed advice
	// (it never starts a second run).
	PollInterval, PollTimeout time.Duration
	// DeadLetters stores dead letters; nil means the buffer's lane
	// forward.LaneDeadLetter.
	DeadLetters forward.DeadLetterStore
	// HTTPClient makes the requests; nil means a default client (timeouts
	// come from Timeout and RequestTimeout).
	HTTPClient *http.Client
	// Clock is the clock; nil means forward.SystemClock.
	Clock forward.Clock
	// Logger receives the forwarder's log; nil discards it.
	Logger *slog.Logger
}

// DefaultOptions returns the defaults: Dify Cloud, blocking mode, the
// default inputs of the configuration (alert_id and a summary), alerts from
// major up, a 100 s run timeout, 15 s lookups, 6 runs a minute, a 5 min
// cooldown per stream, 2 runs at once, backoff from 1 s to 5 min, 5 min
// between tries when failing, a 30 s lookup grace, and runs found running
// polled every 5 s for up to 10 min. APIKey has no default.
func DefaultOptions() Options {
	return Options{
		BaseURL:        "https://api.dify.ai/v1",
		ResponseMode:   ModeBlocking,
		Inputs:         DefaultInputs(),
		MinSeverity:    record.SeverityMajor,
		Timeout:        100 * time.Second,
		RequestTimeout: 15 * time.Second,
		RateLimit:      Rate{Count: 6, Per: time.Minute},
		Cooldown:       5 * time.Minute,
		MaxConcurrency: 2,
		MaxPending:     64,
		Backoff:        forward.Backoff{Initial: time.Second, Max: 5 * time.Minute},
		FailingRetry:   5 * time.Minute,
		LookupGrace:    30 * time.Second,
		PollInterval:   5 * time.Second,
		PollTimeout:    10 * time.Minute,
	}
}

// validate reports every problem with o at once, naming each field, and
// parses the input templates. It never includes the API key.
func (o *Options) validate() (map[string]*template.Template, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("Options.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if u, err := url.Parse(o.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("BaseURL", "want an http or https URL, got %q", o.BaseURL)
	}
	if o.APIKey == "" {
		bad("APIKey", "required")
	}
	if o.ResponseMode != ModeBlocking && o.ResponseMode != ModeStreaming {
		bad("ResponseMode", "want %s or %s, got %q", ModeBlocking, ModeStreaming, o.ResponseMode)
	}
	if strings.ContainsFunc(o.User, func(r rune) bool { return r < ' ' }) {
		bad("User", "has control characters")
	}
	tmpls, err := ParseInputs(o.Inputs)
	if err != nil {
		bad("Inputs", "%v", err)
	}
	if record.SeverityRank(o.MinSeverity) == 0 {
		bad("MinSeverity", "want warning, major or critical, got %q", o.MinSeverity)
	}
	for name, d := range map[string]time.Duration{
		"Timeout": o.Timeout, "RequestTimeout": o.RequestTimeout, "FailingRetry": o.FailingRetry,
		"PollInterval": o.PollInterval, "PollTimeout": o.PollTimeout,
	} {
		if d <= 0 {
			bad(name, "must be positive, got %v", d)
		}
	}
	if o.RateLimit.Count < 0 || (o.RateLimit.Count > 0 && o.RateLimit.Per <= 0) {
		bad("RateLimit", "want a positive count per positive period, or 0, got %v", o.RateLimit)
	}
	if o.Burst < 0 {
		bad("Burst", "must not be negative, got %d", o.Burst)
	}
	if o.Cooldown < 0 {
		bad("Cooldown", "must not be negative, got %v", o.Cooldown)
	}
	if o.LookupGrace < 0 {
		bad("LookupGrace", "must not be negative, got %v", o.LookupGrace)
	}
	if o.MaxConcurrency < 1 {
		bad("MaxConcurrency", "must be at least 1, got %d", o.MaxConcurrency)
	}
	if o.MaxPending < o.MaxConcurrency {
		bad("MaxPending", "must be at least MaxConcurrency (%d), got %d", o.MaxConcurrency, o.MaxPending)
	}
	if err := o.Backoff.Validate("Options.Backoff"); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("dify: invalid options: %w", errors.Join(errs...))
	}
	return tmpls, nil
}

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
	f := &Forwarder{
		buf: buf, opts: opts, base: strings.TrimRight(opts.BaseURL, "/"), tmpls: tmpls,
		dead: opts.DeadLetters, client: opts.HTTPClient, clock: opts.Clock,
		inflight: map[uint64]time.Time{}, opened: make(chan struct{}),
	}
	if f.dead == nil {
		f.dead = forward.BufferDeadLetters{Buffer: buf}
	}
	if f.client == nil {
		f.client = &http.Client{}
	}
	if f.clock == nil {
		f.clock = forward.SystemClock{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f.log = log.With("component", "forward/dify")
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

// journalEntry is a record of the journal lane.
type journalEntry struct {
	AlertID  string    `json:"alert_id"`
	AlertSeq uint64    `json:"alert_seq"`
	TS       time.Time `json:"ts"`
	// Done marks an alert handled for good: its advice or dead letter is
	// stored.
	Done bool `json:"done,omitempty"`
}

// doneEntry is a handled alert's id and the journal record that says so.
type doneEntry struct {
	id  string
	seq uint64 // 0: not journaled (nothing to acknowledge)
}

// journaled is what the journal holds for one alert.
type journaled struct {
	alertSeq uint64
	seqs     []uint64  // journal records to acknowledge when done
	at       time.Time // the earliest entry: when a run was first requested
}

// job is one alert for a worker.
type job struct {
	seq     uint64
	alert   *record.Alert
	journal *journaled // nil: no run was ever requested for it
}

// done is a worker's report that it finished with an alert.
type done struct {
	seq     uint64
	alertID string
	ok      bool   // handled (acknowledged); false: left in the buffer
	doneSeq uint64 // the journal's done entry, when ok
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
	if r, ok := f.buf.(registerer); ok {
		if err := r.RegisterConsumer(Consumer, Lanes()...); err != nil {
			return fmt.Errorf("dify: %w", err)
		}
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

	work := make(chan job, f.opts.MaxPending)
	dones := make(chan done, f.opts.MaxPending)
	var wg sync.WaitGroup
	for range f.opts.MaxConcurrency {
		wg.Go(func() {
			for j := range work {
				ok, doneSeq := f.handle(ctx, j)
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

// loadJournal reads the journal: the open entries by alert id, and the
// handled alerts, oldest first. Open entries of a handled alert (a crash
// came between its done entry and their acknowledgement) are
// acknowledged.
func (f *Forwarder) loadJournal() (map[string]*journaled, []doneEntry, error) {
	recs, err := f.buf.Read(Consumer, LaneJournal, 1<<20)
	if err != nil {
		return nil, nil, fmt.Errorf("read journal: %w", err)
	}
	out := map[string]*journaled{}
	var finished []doneEntry
	isDone := map[string]bool{}
	var junk []uint64
	for _, rec := range recs {
		var e journalEntry
		if json.Unmarshal(rec.Data, &e) != nil || e.AlertID == "" {
			junk = append(junk, rec.Seq)
			continue
		}
		if e.Done {
			finished = append(finished, doneEntry{id: e.AlertID, seq: rec.Seq})
			isDone[e.AlertID] = true
			continue
		}
		j := out[e.AlertID]
		if j == nil {
			j = &journaled{alertSeq: e.AlertSeq, at: e.TS}
			out[e.AlertID] = j
		}
		j.seqs = append(j.seqs, rec.Seq)
		if e.TS.Before(j.at) {
			j.at = e.TS
		}
	}
	if len(junk) > 0 {
		f.log.Warn("dropping undecodable journal entries", "count", len(junk))
	}
	for id, j := range out {
		if isDone[id] {
			junk = append(junk, j.seqs...)
			delete(out, id)
		}
	}
	if len(junk) > 0 {
		if err := f.buf.Ack(Consumer, LaneJournal, junk...); err != nil {
			return nil, nil, fmt.Errorf("ack journal: %w", err)
		}
	}
	return out, finished, nil
}

// dispatcher reads alerts and hands them to the workers. It owns its maps.
type dispatcher struct {
	f        *Forwarder
	journal  map[string]*journaled
	work     chan<- job
	dones    <-chan done
	taken    map[uint64]bool      // alert seqs taken and not done
	active   map[string]bool      // alert ids being handled
	finished map[string]bool      // alert ids handled (journaled ones survive restarts)
	order    []doneEntry          // finished ids, oldest first (bounded)
	lastRun  map[string]time.Time // stream → timestamp of its last dispatched alert
	notify   <-chan struct{}
	more     bool
	cleaned  bool // stale journal entries dropped
	retry    time.Time
	attempt  int
}

// maxFinished bounds the memory of handled alert ids.
const maxFinished = 4096

func (d *dispatcher) loop(ctx context.Context) {
	f := d.f
	for {
		if ctx.Err() != nil {
			return
		}
		room := f.opts.MaxPending - len(d.taken)
		now := f.clock.Now()
		if room > 0 && !now.Before(d.retry) && d.due() {
			d.fill(ctx, room)
			continue
		}
		var wake <-chan struct{}
		if room > 0 && !now.Before(d.retry) {
			wake = d.notify
		}
		var tc <-chan time.Time
		var t forward.Timer
		if now.Before(d.retry) {
			t = f.clock.NewTimer(d.retry.Sub(now))
			tc = t.C()
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-tc:
		case dn := <-d.dones:
			d.finish(dn)
		}
		if t != nil {
			t.Stop()
		}
	}
}

func (d *dispatcher) due() bool {
	if d.notify == nil || d.more {
		return true
	}
	select {
	case <-d.notify:
		return true
	default:
		return false
	}
}

func (d *dispatcher) finish(dn done) {
	delete(d.taken, dn.seq)
	delete(d.active, dn.alertID)
	d.f.mu.Lock()
	delete(d.f.inflight, dn.seq)
	d.f.mu.Unlock()
	if !dn.ok {
		d.more = true // left in the buffer: read it again
		return
	}
	delete(d.journal, dn.alertID)
	d.remember(doneEntry{id: dn.alertID, seq: dn.doneSeq})
}

// remember adds a handled alert to the bounded memory of handled alerts;
// the journal record of one it forgets is acknowledged.
func (d *dispatcher) remember(e doneEntry) {
	if d.finished[e.id] {
		if e.seq != 0 { // a second done entry for it: not needed
			d.forget(e.seq)
		}
		return
	}
	d.finished[e.id] = true
	d.order = append(d.order, e)
	if len(d.order) > maxFinished {
		old := d.order[0]
		delete(d.finished, old.id)
		d.order = d.order[1:]
		if old.seq != 0 {
			d.forget(old.seq)
		}
	}
}

func (d *dispatcher) forget(seq uint64) {
	if err := d.f.buf.Ack(Consumer, LaneJournal, seq); err != nil {
		d.f.rlog.Log(slog.LevelError, "buffer", "acknowledging a done journal entry failed", "err", err)
	}
}

// bufferError backs off reading after the buffer failed.
func (d *dispatcher) bufferError(op string, err error) {
	d.attempt++
	delay := d.f.opts.Backoff.Delay(d.attempt)
	d.retry = d.f.clock.Now().Add(delay)
	d.more = true
	d.f.rlog.Log(slog.LevelError, "buffer", "buffer "+op+" failed", "retry_in", delay, "err", err)
}

// fill reads new alerts and decides about each.
func (d *dispatcher) fill(ctx context.Context, room int) {
	f := d.f
	ch := f.buf.Notify(record.LaneAlert)
	max := len(d.taken) + room
	recs, err := f.buf.Read(Consumer, record.LaneAlert, max)
	if err != nil {
		d.bufferError("read", err)
		return
	}
	d.notify, d.more, d.attempt = ch, len(recs) == max, 0
	if !d.cleaned {
		d.cleanJournal(recs)
	}
	for _, rec := range recs {
		if d.taken[rec.Seq] {
			continue
		}
		if !d.take(ctx, rec) {
			return
		}
	}
}

// cleanJournal drops journal entries whose alert is no longer in the
// buffer (acknowledged before the entry was, or evicted).
func (d *dispatcher) cleanJournal(recs []buffer.Record) {
	d.cleaned = true
	present := make(map[uint64]bool, len(recs))
	var last uint64
	for _, r := range recs {
		present[r.Seq] = true
		last = r.Seq
	}
	var stale []uint64
	for id, j := range d.journal {
		if !present[j.alertSeq] && (j.alertSeq <= last || !d.more) {
			stale = append(stale, j.seqs...)
			delete(d.journal, id)
		}
	}
	if len(stale) > 0 {
		if err := d.f.buf.Ack(Consumer, LaneJournal, stale...); err != nil {
			d.f.rlog.Log(slog.LevelError, "buffer", "acknowledging stale journal entries failed", "err", err)
		}
	}
}

// take decides about one alert: hand it to a worker, or acknowledge it
// unsent. It returns false when the buffer failed.
func (d *dispatcher) take(ctx context.Context, rec buffer.Record) bool {
	f := d.f
	v, err := record.Decode(record.LaneAlert, rec.Data)
	if err != nil {
		dl := f.deadLetter(rec.Seq, "", 0, "", "undecodable alert: "+err.Error(), nil)
		if err := f.dead.StoreDeadLetter(ctx, dl); err != nil {
			d.bufferError("store dead letter", err)
			return false
		}
		f.count(func(s *Stats) { s.DeadLettered++ })
		return d.ack(rec.Seq)
	}
	a := v.(*record.Alert)
	j := d.journal[a.ID]
	var skip *uint64
	switch {
	case j != nil && !d.active[a.ID]:
		// A run may have been requested before a restart: resolve it,
		// whatever the severity and cooldown say now.
	case d.active[a.ID] || d.finished[a.ID] || a.ID == "":
		skip = &f.stats.Duplicates
	case record.SeverityRank(a.Severity) < record.SeverityRank(f.opts.MinSeverity):
		skip = &f.stats.Skipped
	case d.inCooldown(a):
		skip = &f.stats.CooldownSkipped
	}
	if skip != nil {
		f.count(func(*Stats) { *skip++ })
		return d.ack(rec.Seq)
	}
	d.lastRun[a.Stream] = a.TS
	d.taken[rec.Seq] = true
	d.active[a.ID] = true
	f.mu.Lock()
	f.inflight[rec.Seq] = rec.Time
	f.mu.Unlock()
	d.work <- job{seq: rec.Seq, alert: a, journal: j}
	return true
}

func (d *dispatcher) inCooldown(a *record.Alert) bool {
	cd := d.f.opts.Cooldown
	last, ok := d.lastRun[a.Stream]
	if cd <= 0 || !ok {
		return false
	}
	gap := a.TS.Sub(last)
	return gap < cd && gap > -cd
}

func (d *dispatcher) ack(seq uint64) bool {
	if err := d.f.buf.Ack(Consumer, record.LaneAlert, seq); err != nil {
		d.bufferError("ack", err)
		return false
	}
	return true
}

func (f *Forwarder) deadLetter(seq uint64, alertID string, status int, code, reason string, inputs map[string]any) forward.DeadLetter {
	id := fmt.Sprintf("%s/%s/%d", Consumer, record.LaneAlert, seq)
	if alertID != "" {
		id = Consumer + "/" + record.LaneAlert + "/" + alertID
	}
	var ev json.RawMessage
	if inputs != nil {
		ev, _ = json.Marshal(map[string]any{"inputs": inputs})
	}
	return forward.DeadLetter{
		ID: id, TS: f.clock.Now(), Consumer: Consumer, Lane: record.LaneAlert, Seq: seq, RecordID: alertID,
		Status: status, Code: code, Reason: f.clean(reason), Event: ev,
	}
}

// handle resolves one alert and stores the result. It reports whether the
// alert was acknowledged.
func (f *Forwarder) handle(ctx context.Context, j job) (ok bool, doneSeq uint64) {
	if ctx.Err() != nil {
		return false, 0
	}
	adv, dl := f.process(ctx, &j)
	if adv == nil && dl == nil {
		return false, 0 // ctx ended: the journal lets the next start resume
	}
	store := func() error {
		if dl != nil {
			return f.dead.StoreDeadLetter(ctx, *dl)
		}
		data, err := json.Marshal(adv)
		if err != nil {
			return err
		}
		_, err = f.buf.Append(ctx, record.LaneAdvice, data)
		return err
	}
	for attempt := 1; ; attempt++ {
		err := store()
		if err == nil {
			break
		}
		f.rlog.Log(slog.LevelError, "buffer", "storing advice failed", "alert_id", j.alert.ID, "err", err)
		if !fwd.Wait(ctx, f.clock, f.opts.Backoff.Delay(attempt), nil) {
			return false, 0
		}
	}
	switch {
	case dl != nil:
		f.count(func(s *Stats) { s.DeadLettered++ })
		f.log.Warn("alert dead-lettered", "alert_id", j.alert.ID, "status", dl.Status, "code", dl.Code, "reason", dl.Reason)
	case adv.Status == "succeeded" || adv.Status == "partial-succeeded":
		f.count(func(s *Stats) { s.Succeeded++ })
		f.log.Debug("advice stored", "alert_id", j.alert.ID, "workflow_run_id", adv.WorkflowRunID)
	default:
		f.count(func(s *Stats) { s.Failed++ })
		f.log.Warn("workflow run did not succeed", "alert_id", j.alert.ID, "workflow_run_id", adv.WorkflowRunID, "status", adv.Status, "error", adv.Error)
	}
	// The done entry goes before the alert's acknowledgement: after a
	// crash between the two the alert is read again and skipped.
	for attempt := 1; ; attempt++ {
		var err error
		if doneSeq, err = f.writeDone(ctx, j.alert, j.seq); err == nil {
			break
		}
		f.rlog.Log(slog.LevelError, "buffer", "writing the journal failed", "alert_id", j.alert.ID, "err", err)
		if !fwd.Wait(ctx, f.clock, f.opts.Backoff.Delay(attempt), nil) {
			return false, 0
		}
	}
	if err := f.buf.Ack(Consumer, record.LaneAlert, j.seq); err != nil {
		// Read again later, the alert is skipped as done.
		f.rlog.Log(slog.LevelError, "buffer", "acknowledging an alert failed", "alert_id", j.alert.ID, "err", err)
		return true, doneSeq
	}
	f.count(func(s *Stats) { s.Acked++ })
	var seqs []uint64
	if j.journal != nil {
		seqs = j.journal.seqs
	}
	if len(seqs) > 0 {
		if err := f.buf.Ack(Consumer, LaneJournal, seqs...); err != nil {
			f.rlog.Log(slog.LevelError, "buffer", "acknowledging a journal entry failed", "alert_id", j.alert.ID, "err", err)
		}
	}
	return true, doneSeq
}

// process finds the outcome of an alert's run, running the workflow at
// most once. It returns the advice to store, or a dead letter, or neither
// when ctx ended.
func (f *Forwarder) process(ctx context.Context, j *job) (*record.Advice, *forward.DeadLetter) {
	a := j.alert
	inputs, err := f.inputs(a, j.seq)
	if err != nil {
		dl := f.deadLetter(j.seq, a.ID, 0, "", "input template: "+err.Error(), nil)
		return nil, &dl
	}
	req := runRequest{Inputs: inputs, ResponseMode: f.opts.ResponseMode, User: f.user(a)}
	lookFirst := j.journal != nil // a run may exist
	var ambiguousAt time.Time
	if j.journal != nil {
		ambiguousAt = j.journal.at
	}
	runID := ""
	graced := false
	attempt := 0
	for ctx.Err() == nil {
		if !f.waitGate(ctx) {
			return nil, nil
		}
		if lookFirst {
			res, cerr := f.recover(ctx, a.ID, runID)
			switch {
			case cerr == nil && res != nil:
				f.count(func(s *Stats) { s.Recovered++ })
				f.healthy()
				return f.advice(a, *res), nil
			case cerr == nil:
				// No run for this alert. Look once more after the grace
				// period, in case Dify logs runs late; then run.
				if wait := ambiguousAt.Add(f.opts.LookupGrace).Sub(f.clock.Now()); wait > 0 && !graced {
					graced = true
					if !fwd.Wait(ctx, f.clock, wait, nil) {
						return nil, nil
					}
					continue
				}
				f.healthy()
				lookFirst = false
			default:
				attempt++
				if !f.pause(ctx, a.ID, cerr, attempt) {
					return nil, nil
				}
				continue
			}
		}
		if !f.limiter.Wait(ctx, f.clock) || !f.waitGate(ctx) {
			return nil, nil
		}
		if j.journal == nil {
			jr, err := f.writeJournal(ctx, a, j.seq)
			if err != nil {
				attempt++
				f.rlog.Log(slog.LevelError, "buffer", "writing the journal failed", "alert_id", a.ID, "err", err)
				if !fwd.Wait(ctx, f.clock, f.opts.Backoff.Delay(attempt), nil) {
					return nil, nil
				}
				continue
			}
			j.journal = jr
		}
		if attempt > 0 {
			f.count(func(s *Stats) { s.Retries++ })
		}
		res, cerr := f.run(ctx, req)
		if ctx.Err() != nil {
			return nil, nil
		}
		if cerr == nil {
			f.healthy()
			if terminal(res.Status) {
				return f.advice(a, res), nil
			}
			// Still running (blocking mode cut short): follow the run.
			runID, lookFirst, ambiguousAt, graced = res.ID, true, f.clock.Now(), false
			continue
		}
		switch cerr.kind {
		case permanent:
			f.healthy() // Dify read the request: the key and the app are fine
			dl := f.deadLetter(j.seq, a.ID, cerr.status, cerr.code, "Dify refused the run: "+cerr.msg, inputs)
			return nil, &dl
		case ambiguous:
			runID, lookFirst, ambiguousAt, graced = cerr.runID, true, f.clock.Now(), false
		}
		attempt++
		if !f.pause(ctx, a.ID, cerr, attempt) {
			return nil, nil
		}
	}
	return nil, nil
}

// recover looks for the run of an alert: the run runID if known, else the
// runs the logs find for the alert id. It waits for a running run to end.
// It returns nil without error when there is no run.
func (f *Forwarder) recover(ctx context.Context, alertID, runID string) (*runResult, *callError) {
	if runID != "" {
		r, found, cerr := f.getRun(ctx, runID)
		if cerr != nil {
			return nil, cerr
		}
		if found {
			return f.settle(ctx, r)
		}
	}
	entries, cerr := f.findRuns(ctx, alertID)
	if cerr != nil {
		return nil, cerr
	}
	rank := func(status string) int {
		switch {
		case status == "succeeded" || status == "partial-succeeded":
			return 3
		case !terminal(status):
			return 2
		}
		return 1
	}
	var best *runResult
	for i, e := range entries {
		if i == 20 {
			break
		}
		r, found, cerr := f.getRun(ctx, e.WorkflowRun.ID)
		if cerr != nil {
			return nil, cerr
		}
		// The keyword may match another run's inputs or outputs: only a run
		// whose alert_id input is this alert counts.
		if !found || (r.Inputs != nil && fmt.Sprint(r.Inputs["alert_id"]) != alertID) {
			continue
		}
		if best == nil || rank(r.Status) > rank(best.Status) {
			best = &r
		}
	}
	if best == nil {
		return nil, nil
	}
	return f.settle(ctx, *best)
}

// settle polls a run until it ends, or until PollTimeout, after which it is
// reported as failed (and never run again).
func (f *Forwarder) settle(ctx context.Context, r runResult) (*runResult, *callError) {
	deadline := f.clock.Now().Add(f.opts.PollTimeout)
	for !terminal(r.Status) {
		if !f.clock.Now().Before(deadline) {
			r.Error = fmt.Sprintf("run still %s after %v; Vigil stopped waiting and will not run the workflow again for this alert", r.Status, f.opts.PollTimeout)
			r.Status = "failed"
			break
		}
		if !fwd.Wait(ctx, f.clock, f.opts.PollInterval, nil) {
			return nil, &callError{kind: ambiguous, msg: "shutting down"}
		}
		next, found, cerr := f.getRun(ctx, r.ID)
		if cerr != nil {
			return nil, cerr
		}
		if found {
			r = next
		}
	}
	return &r, nil
}

// pause waits after a failure, as its kind says, and keeps the state and
// the log up to date. A 429 or a refused key closes the gate for every
// worker (Dify throttles or refuses the app, not one alert); other failures
// back off this worker only. It reports whether ctx is still alive.
func (f *Forwarder) pause(ctx context.Context, alertID string, e *callError, attempt int) bool {
	d := f.opts.Backoff.Delay(attempt)
	if e.retryAfter > d {
		d = min(e.retryAfter, maxRetryAfter)
	}
	level, key, msg := slog.LevelWarn, "retry", "Dify call failed, will retry"
	switch e.kind {
	case unauthorized:
		d = f.opts.FailingRetry
		level, key, msg = slog.LevelError, "failing", "Dify refuses the API key or URL (check dify.api_key and dify.base_url, then restart or reload vigil); alerts stay in the buffer"
	case throttled:
		key, msg = "throttled", "Dify throttles runs, will retry"
	}
	f.rlog.Log(level, key, msg, "alert_id", alertID, "kind", e.kind.String(), "status", e.status, "code", e.code, "err", e.msg, "retry_in", d)
	now := f.clock.Now()
	f.mu.Lock()
	f.stats.LastError = e.Error()
	switch e.kind {
	case unauthorized, throttled:
		f.failing = f.failing || e.kind == unauthorized
		if e.kind == throttled {
			f.stats.Throttled++
		}
		f.holdUntil = now.Add(d)
		f.mu.Unlock()
		return f.waitGate(ctx)
	}
	if !f.holdUntil.IsZero() {
		// This was the probe through the gate: its answer says nothing
		// about throttling or the key, so let the next worker try.
		f.holdUntil = now
	}
	f.retrying++
	f.mu.Unlock()
	ok := fwd.Wait(ctx, f.clock, d, nil)
	f.mu.Lock()
	f.retrying--
	f.mu.Unlock()
	return ok
}

// waitGate waits until no 429 or refused key holds requests back. When the
// gate opens, the first worker through it takes the next request alone: it
// pushes the gate back by a probe's length, and its answer opens the gate
// (success) or closes it again (429, 401).
func (f *Forwarder) waitGate(ctx context.Context) bool {
	for {
		now := f.clock.Now()
		f.mu.Lock()
		until, opened := f.holdUntil, f.opened
		if !now.Before(until) {
			if f.failing || !until.IsZero() {
				f.holdUntil = now.Add(f.opts.Timeout + 2*f.opts.RequestTimeout)
			}
			f.mu.Unlock()
			return ctx.Err() == nil
		}
		f.mu.Unlock()
		if !fwd.Wait(ctx, f.clock, until.Sub(now), opened) {
			return false
		}
	}
}

// healthy notes that Dify answered as it should: the gate opens for all.
func (f *Forwarder) healthy() {
	f.mu.Lock()
	was := f.failing
	f.failing = false
	if !f.holdUntil.IsZero() {
		f.holdUntil = time.Time{}
		close(f.opened)
		f.opened = make(chan struct{})
	}
	f.mu.Unlock()
	if was {
		f.log.Info("Dify accepts the API key again")
		f.rlog.Reset("failing")
	}
}

// writeJournal records that a run for the alert is about to be requested.
func (f *Forwarder) writeJournal(ctx context.Context, a *record.Alert, seq uint64) (*journaled, error) {
	now := f.clock.Now()
	data, err := json.Marshal(journalEntry{AlertID: a.ID, AlertSeq: seq, TS: now})
	if err != nil {
		return nil, err
	}
	seqs, err := f.buf.Append(ctx, LaneJournal, data)
	if err != nil {
		return nil, err
	}
	return &journaled{alertSeq: seq, seqs: seqs, at: now}, nil
}

// writeDone records that the alert is handled for good and returns the
// record's sequence number.
func (f *Forwarder) writeDone(ctx context.Context, a *record.Alert, seq uint64) (uint64, error) {
	data, err := json.Marshal(journalEntry{AlertID: a.ID, AlertSeq: seq, TS: f.clock.Now(), Done: true})
	if err != nil {
		return 0, err
	}
	seqs, err := f.buf.Append(ctx, LaneJournal, data)
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}

// user is the end-user id of the runs for an alert.
func (f *Forwarder) user(a *record.Alert) string {
	if f.opts.User != "" {
		return f.opts.User
	}
	return "vigil-" + a.Device
}

// inputs renders the input templates for an alert and adds alert_id.
func (f *Forwarder) inputs(a *record.Alert, seq uint64) (map[string]any, error) {
	model, version, _ := strings.Cut(a.Model, "@")
	end := a.Window.End
	if end.IsZero() {
		end = a.TS
	}
	data := TemplateData{
		ID: a.ID, Seq: seq, Device: a.Device, Stream: a.Stream, Kind: a.Kind, Key: a.Key,
		Time: end, WindowStart: a.Window.Start, WindowEnd: a.Window.End,
		Score: a.Score, Threshold: a.Threshold, Severity: a.Severity, Episode: a.Episode,
		Model: model, ModelVersion: version, Replayed: a.Replayed,
	}
	for _, ft := range a.TopFeatures {
		data.TopFeatures = append(data.TopFeatures, ft.Name)
	}
	out := make(map[string]any, len(f.tmpls)+1)
	for name, t := range f.tmpls {
		var b strings.Builder
		if err := t.Execute(&b, data); err != nil {
			return nil, fmt.Errorf("input %s: %w", name, err)
		}
		out[name] = b.String()
	}
	out["alert_id"] = a.ID
	return out, nil
}

// advice builds the advice record of a run's outcome.
func (f *Forwarder) advice(a *record.Alert, r runResult) *record.Advice {
	adv := &record.Advice{
		ID: AdviceID(a.ID), TS: f.clock.Now(), AlertID: a.ID, Device: a.Device, Stream: a.Stream,
		Severity: a.Severity, WorkflowRunID: r.ID, Status: r.Status, Outputs: r.Outputs,
		Error: f.clean(r.Error), ElapsedTime: r.Elapsed, Replayed: a.Replayed,
	}
	if a.Kind == "behaviour" {
		adv.Key = a.Key // the user id, for Amplitude's user_id
	}
	return adv
}

// Rate is a count per period; a zero Count means unlimited. The
// configuration's rate (config.Rate, "6/min") converts to it.
type Rate struct {
	Count int
	Per   time.Duration
}

// Unlimited reports whether the rate sets no limit.
func (r Rate) Unlimited() bool { return r.Count == 0 }

// Interval is the mean time between events at this rate (0 when unlimited).
func (r Rate) Interval() time.Duration {
	if r.Count == 0 {
		return 0
	}
	return r.Per / time.Duration(r.Count)
}

// String writes the rate as the configuration reads it: 6/min, 10/s,
// 3/30s, 0.
func (r Rate) String() string {
	if r.Count == 0 {
		return "0"
	}
	unit := r.Per.String()
	switch r.Per {
	case time.Second:
		unit = "s"
	case time.Minute:
		unit = "min"
	case time.Hour:
		unit = "h"
	}
	return fmt.Sprintf("%d/%s", r.Count, unit)
}

// newBucket returns a token bucket for rate, or nil for no limit.
func newBucket(rate Rate, burst int) *throttle.Bucket {
	if rate.Unlimited() {
		return nil
	}
	if burst == 0 {
		burst = rate.Count
	}
	return throttle.NewBucket(rate.Interval(), burst)
}
