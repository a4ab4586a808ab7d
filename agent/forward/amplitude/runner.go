package amplitude

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/internal/fwd"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

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
		if record.SeverityRank(x.Severity) < record.SeverityRank(f.opts.MinSeverity) || !x.ConfidentEnough(f.opts.MinConfidence) {
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
