package pipeline

import (
	"slices"
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
// stream that was training its model when the reload came starts learning
// over (the training is abandoned with the old pipeline).
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
			continue
		}
		if st.adopt(o) {
			kept = append(kept, name)
		}
	}
	slices.Sort(kept)
	return kept
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
	st.det, st.win, st.clock = o.det, o.win, o.clock
	if st.det != nil {
		_ = st.det.SetThreshold(thr) // thr was valid for the new build's detector
	}
	if o.keys != nil {
		st.keys, st.lru = o.keys, o.lru
		st.nkeys.Store(o.nkeys.Load())
		for _, ks := range st.keys {
			_ = ks.det.SetThreshold(thr)
		}
	}
	return true
}
