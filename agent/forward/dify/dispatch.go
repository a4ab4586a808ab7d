package dify

import (
	"context"
	"log/slog"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

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
	case record.SeverityRank(a.Severity) < record.SeverityRank(f.opts.MinSeverity) || !a.ConfidentEnough(f.opts.MinConfidence):
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
