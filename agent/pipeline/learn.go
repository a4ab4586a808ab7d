package pipeline

import (
	"context"

	"github.com/vigil-edge/vigil/agent/source"
)

// learnSample collects a learning stream's first samples and, when it has
// enough, trains its model off the shard's goroutine.
func (st *streamState) learnSample(ctx context.Context, s *shard, in source.Input) {
	st.mu.Lock()
	state := st.state
	st.mu.Unlock()
	if state == StateTraining {
		st.skipped.Add(1)
		return
	}
	if st.channels == nil {
		st.channels = st.spec.Channels
		if st.channels == nil {
			st.channels = append([]string(nil), in.Channels...)
		}
		st.row = make([]float64, len(st.channels))
	}
	vals, ok := st.mapChannels(in)
	if !ok {
		st.p.stats.drop(in.Source, source.DropMissing, 1)
		return
	}
	if !st.order(in.Source, in.Time) {
		return
	}
	st.samples = append(st.samples, append([]float64(nil), vals...))
	st.learned.Store(int64(len(st.samples)))
	if len(st.samples) < st.spec.Learn {
		return
	}
	samples, chans := st.samples, st.channels
	st.samples = nil
	st.mu.Lock()
	st.state = StateTraining
	st.mu.Unlock()
	st.p.log.Info("learning the stream's baseline", "stream", st.spec.Name, "samples", len(samples), "channels", len(chans))
	go func() {
		m, err := st.p.opts.Learner(ctx, st.spec.Name, chans, samples)
		install := func() {
			if err == nil {
				err = st.install(m)
			}
			if err != nil {
				st.mu.Lock()
				st.state, st.learnErr = StateFailed, err.Error()
				st.mu.Unlock()
				st.p.log.Error("learning failed; collecting samples again", "stream", st.spec.Name, "err", err)
				return
			}
			st.clock = timeline{}
			st.p.log.Info("learnt model installed; scoring", "stream", st.spec.Name, "model", m.ID())
		}
		select {
		case s.ctl <- install:
		case <-ctx.Done():
		}
	}()
}
