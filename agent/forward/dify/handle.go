package dify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/internal/fwd"
	"github.com/vigil-edge/vigil/agent/record"
)

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
	// probing: this worker took the probe through a gate that had been
	// closed; it passes the gate it pushed back itself until Dify answers.
	probing := false
	gate := func() bool {
		if probing {
			return ctx.Err() == nil
		}
		ok, p := f.waitGate(ctx)
		probing = p
		return ok
	}
	for ctx.Err() == nil {
		if !gate() {
			return nil, nil
		}
		if lookFirst {
			res, cerr := f.recover(ctx, a.ID, runID)
			probing = false // the answer opened or closed the gate
			switch {
			case cerr == nil && res != nil:
				f.count(func(s *Stats) { s.Recovered++ })
				f.healthy()
				return f.advice(a, *res), nil
			case cerr == nil:
				f.healthy()
				// No run for this alert. Look once more after the grace
				// period, in case Dify logs runs late; then run.
				if wait := ambiguousAt.Add(f.opts.LookupGrace).Sub(f.clock.Now()); wait > 0 && !graced {
					graced = true
					if !fwd.Wait(ctx, f.clock, wait, nil) {
						return nil, nil
					}
					continue
				}
				lookFirst = false
			default:
				attempt++
				if !f.pause(ctx, a.ID, cerr, attempt) {
					return nil, nil
				}
				continue
			}
		}
		if !f.limiter.Wait(ctx, f.clock) || !gate() {
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
		probing = false
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
// worker (Dify throttles or refuses the app, not one alert), and the
// caller waits at the gate; other failures back off this worker only. It
// reports whether ctx is still alive.
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
		return ctx.Err() == nil
	}
	if !f.holdUntil.IsZero() {
		// This was the probe through the gate: its answer says nothing
		// about throttling or the key, so let the next worker try now.
		f.holdUntil = now
		f.wakeGate()
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
// gate opens, the first worker through it takes the next request alone
// (probe is true): it pushes the gate back by a probe's length, and its
// answer opens the gate (success), closes it again (429, 401) or lets the
// next worker probe (another failure). ok is false when ctx ended.
func (f *Forwarder) waitGate(ctx context.Context) (ok, probe bool) {
	for {
		now := f.clock.Now()
		f.mu.Lock()
		until, opened := f.holdUntil, f.opened
		if !now.Before(until) {
			if f.failing || !until.IsZero() {
				f.holdUntil = now.Add(f.opts.Timeout + 2*f.opts.RequestTimeout)
				probe = true
			}
			f.mu.Unlock()
			return ctx.Err() == nil, probe
		}
		f.mu.Unlock()
		if !fwd.Wait(ctx, f.clock, until.Sub(now), opened) {
			return false, false
		}
	}
}

// wakeGate wakes the workers waiting at the gate to look at it again;
// f.mu is held.
func (f *Forwarder) wakeGate() {
	close(f.opened)
	f.opened = make(chan struct{})
}

// healthy notes that Dify answered as it should: the gate opens for all.
func (f *Forwarder) healthy() {
	f.mu.Lock()
	was := f.failing
	f.failing = false
	if !f.holdUntil.IsZero() {
		f.holdUntil = time.Time{}
		f.wakeGate()
	}
	f.mu.Unlock()
	if was {
		f.log.Info("Dify accepts the API key again")
		f.rlog.Reset("failing")
	}
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
