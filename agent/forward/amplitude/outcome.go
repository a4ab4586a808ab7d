package amplitude

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/internal/fwd"
)

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
