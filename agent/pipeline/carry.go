package pipeline

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/record"
)

// Adopt carries over from old, a pipeline whose Run has returned, what a
// reload must not throw away, and returns the names of the streams whose
// state it took. Call it before p runs.
//
// The counters (inputs, scores, alerts, drops, and each stream's windows,
// alerts, key evictions and samples skipped while training) continue from
// old's, so that they only grow over the process's life. A stream of the
// same name whose model (name@version, window, hop, channels, threshold)
// and detector settings (kind, key, threshold, hysteresis, cooldown, bands,
// learning) did not change keeps its state: its detectors with their open
// episodes, its partial windows and timelines, its behaviour keys, or, when
// it is still collecting its first samples to learn from, those samples. A
// sensor stream whose model or threshold changed but whose windows did not
// (length, hop, channels) keeps its timeline and partial window, with a new
// detector: a model switch neither scores a window twice nor skips one. A
// stream that was training its model when the reload came starts learning
// over (the training is abandoned with the old pipeline).
//
// An episode open in old that p does not carry on (the stream's model,
// threshold or detector settings changed, or the stream is gone) is closed:
// Adopt appends a "closed" alert for it to p's buffer, with the old model's
// id and episode and a Reason that says why (a model switch, a settings
// change, a removed stream), so that no episode stays open for ever.
func (p *Pipeline) Adopt(old *Pipeline) []string {
	c, oc := &p.stats, &old.stats
	c.inputs.Add(oc.inputs.Load())
	c.scores.Add(oc.scores.Load())
	c.alerts.Add(oc.alerts.Load())
	c.batches.Add(oc.batches.Load())
	c.windows.Add(oc.windows.Load())
	oc.mu.Lock()
	c.mu.Lock()
	for k, n := range oc.drops {
		c.drops[k] += n
	}
	copy(c.lat.vals, oc.lat.vals)
	c.lat.n = oc.lat.n
	c.mu.Unlock()
	oc.mu.Unlock()

	var kept []string
	var closes [][]byte
	for name, o := range old.streams {
		if p.streams[name] == nil {
			closes = append(closes, o.closeOpen(nil, "stream removed from the config")...)
		}
	}
	for name, st := range p.streams {
		o := old.streams[name]
		if o == nil {
			continue
		}
		st.windows.Add(o.windows.Load())
		st.alerts.Add(o.alerts.Load())
		st.evicts.Add(o.evicts.Load())
		st.skipped.Add(o.skipped.Load())
		st.evictsOpen.Add(o.evictsOpen.Load())
		st.flips.Add(o.flips.Load())
		for i := range st.changes {
			st.changes[i].Add(o.changes[i].Load())
		}
		if !sameSettings(old.spec(name), p.spec(name), o, st) {
			closes = append(closes, o.closeOpen(st, switchReason(o, st))...)
			if sameWindows(o, st) {
				// Another model (or threshold) over the same windows: a
				// deployment, a promotion, a rollback. The timeline and
				// the partial window carry on, so that no window is
				// scored twice (a replay read again is late) or skipped;
				// the detector starts afresh, its episodes were the old
				// model's.
				st.win, st.clock, st.dups, st.ends = o.win, o.clock, o.dups, o.ends
			}
			if sameKeyWindows(o, st) {
				// The same for each key of a behaviour stream: its
				// events so far and its timeline carry on, under a
				// fresh detector of the new build.
				st.adoptKeys(o)
			}
			continue
		}
		if st.adopt(o) {
			kept = append(kept, name)
		}
	}
	if len(closes) > 0 {
		// Before p runs: the closes follow the old pipeline's last alerts
		// and precede the new one's first.
		p.appendAlerts(closes)
	}
	slices.Sort(kept)
	return kept
}

// appendAlerts appends alerts no window caused (Adopt's closes) to the
// buffer, counted like the shards' own.
func (p *Pipeline) appendAlerts(recs [][]byte) {
	if _, err := p.opts.Buffer.Append(context.Background(), record.LaneAlert, recs...); err != nil {
		p.stats.drop("", "buffer_"+record.LaneAlert, len(recs))
		p.logRateLimited("appending to the buffer failed", "lane", record.LaneAlert, "records", len(recs), "err", err)
		return
	}
	p.stats.alerts.Add(uint64(len(recs)))
}

// switchReason says why a stream's detector does not carry on into its
// new build st.
func switchReason(o, st *streamState) string {
	from, to := "", ""
	if o.model != nil {
		from = o.model.ID()
	}
	if st.model != nil {
		to = st.model.ID()
	}
	switch {
	case to == "":
		return fmt.Sprintf("model switched: %s is replaced by a model the stream learns", from)
	case from != to:
		return fmt.Sprintf("model switched: %s to %s", from, to)
	}
	return fmt.Sprintf("stream settings changed (threshold or detection) for %s", from)
}

// closeOpen closes the open episodes of o, a stream of a pipeline whose
// Run has returned and whose detection state does not carry on (into st,
// nil when the stream is gone), as key eviction does: a "closed" alert at
// the end of the stream's (or key's) timeline, under o's model, with id
// seq -1 (no window's alert has it). It returns the encoded alerts.
func (o *streamState) closeOpen(st *streamState, reason string) [][]byte {
	if o.model == nil {
		return nil // learning: no detector, no episode
	}
	p, mid := o.p, o.model.ID()
	var out [][]byte
	one := func(det *detect.Detector, key string, end time.Time, epSeq int) {
		if det == nil || !det.InEpisode() {
			return
		}
		res := det.CloseEpisode(end)
		if st != nil {
			st.alerts.Add(1)
			st.changes[detect.Close].Add(1)
		}
		out = append(out, encodeRecord(record.Alert{
			ID:          record.IDSeq(record.LaneAlert, p.opts.Device, o.spec.Name, key, end, mid, -1),
			TS:          end,
			Device:      p.opts.Device,
			Stream:      o.spec.Name,
			Key:         key,
			Kind:        o.spec.Kind,
			Threshold:   det.Threshold(),
			Severity:    res.Severity,
			Episode:     record.IDSeq("episode", p.opts.Device, o.spec.Name, key, res.EpisodeStart, mid, epSeq),
			Update:      res.Update,
			State:       res.Change.State(),
			Window:      record.Window{Start: end, End: end},
			TopFeatures: []record.Feature{},
			Model:       mid,
			Reason:      reason,
		}))
	}
	one(o.det, "", o.clock.last, o.epSeq)
	keys := make([]string, 0, len(o.keys))
	for k := range o.keys {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a stable order of the closes
	for _, k := range keys {
		ks := o.keys[k]
		one(ks.det, k, ks.clock.last, ks.epSeq)
	}
	return out
}

// spec returns the spec a stream was built from (before any SetThreshold).
func (p *Pipeline) spec(name string) StreamSpec {
	for _, s := range p.opts.Streams {
		if s.Name == name {
			return s
		}
	}
	return StreamSpec{}
}

// sameSettings reports whether two builds of a stream score and detect
// alike, so that one's state is valid for the other.
func sameSettings(a, b StreamSpec, o, st *streamState) bool {
	// The built specs hold the defaults New filled in.
	x, y := o.spec, st.spec
	if x.Kind != y.Kind || x.Key != y.Key || x.Detect != y.Detect || x.Learn != y.Learn ||
		a.Threshold != b.Threshold || !slices.Equal(a.Channels, b.Channels) {
		return false
	}
	if (o.model == nil) != (st.model == nil) {
		return false
	}
	if st.model == nil {
		return true
	}
	return o.modelID == st.modelID && o.length == st.length && o.hop == st.hop &&
		slices.Equal(o.channels, st.channels) && o.model.Threshold() == st.model.Threshold()
}

// sameKeyWindows reports whether two builds of a behaviour stream key
// events the same way and cut the same windows of the same features,
// whatever model scores them.
func sameKeyWindows(o, st *streamState) bool {
	return o.model != nil && st.model != nil && o.keys != nil && st.keys != nil &&
		o.spec.Kind == KindBehaviour && st.spec.Kind == KindBehaviour && o.spec.Key == st.spec.Key &&
		o.length == st.length && o.hop == st.hop && slices.Equal(o.channels, st.channels)
}

// adoptKeys takes the keys of o, a build of the stream whose detection does
// not carry on (closeOpen closed their episodes): each key keeps its
// features, partial window and timeline, with a detector of st's settings,
// in the order of recency o kept (keys whose episode was open count as
// the most recent).
func (st *streamState) adoptKeys(o *streamState) {
	for _, l := range []*list.List{o.lru, o.lruOpen} {
		for e := l.Back(); e != nil && len(st.keys) < st.p.opts.MaxKeys; e = e.Prev() {
			ks := e.Value.(*keyState)
			nk, err := st.addKey(ks.key, ks.feat, ks.win)
			if err != nil {
				return // st's detector options were validated when it was built
			}
			nk.clock, nk.ends = ks.clock, ks.ends
		}
	}
}

// sameWindows reports whether two builds of a sensor stream cut the same
// windows (length, hop, channels), whatever model scores them.
func sameWindows(o, st *streamState) bool {
	return o.model != nil && st.model != nil && o.win != nil && st.win != nil &&
		o.spec.Kind == KindSensor && st.spec.Kind == KindSensor &&
		o.length == st.length && o.hop == st.hop && slices.Equal(o.channels, st.channels)
}

// adopt takes o's detection or learning state; st is freshly built and not
// running. It reports whether there was state to take.
func (st *streamState) adopt(o *streamState) bool {
	if st.model == nil {
		o.mu.Lock()
		state, learnErr := o.state, o.learnErr
		o.mu.Unlock()
		if state == StateTraining {
			return false
		}
		st.samples, st.samplesT, st.channels, st.row, st.clock = o.samples, o.samplesT, o.channels, o.row, o.clock
		st.learned.Store(int64(len(st.samples)))
		st.mu.Lock()
		st.state, st.learnErr = state, learnErr
		st.mu.Unlock()
		return true
	}
	// Detectors carry the threshold in force; the new build's applies
	// (a reload resets a threshold set by command to the configured one).
	thr := st.currentThreshold()
	// The duplicate filter and the window-end sequence go with the
	// timeline: a source read again from its start (a replay) offers the
	// last sample taken again, at the timeline's time, which is no later.
	st.det, st.win, st.clock, st.dups, st.ends = o.det, o.win, o.clock, o.dups, o.ends
	if st.det != nil {
		_ = st.det.SetThreshold(thr) // thr was valid for the new build's detector
	}
	if o.keys != nil {
		st.keys, st.lru, st.lruOpen = o.keys, o.lru, o.lruOpen
		st.nkeys.Store(o.nkeys.Load())
		for _, ks := range st.keys {
			_ = ks.det.SetThreshold(thr)
		}
	}
	return true
}
