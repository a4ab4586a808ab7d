package pipeline

import (
	"context"
	"slices"
	"time"

	"github.com/vigil-edge/vigil/agent/source"
)

// learnSample collects a learning stream's first samples and, when it has
// enough, trains its model off the shard's goroutine. Samples that arrive
// while it trains are held, in order (at most Options.LearnBacklog; the
// ones beyond are dropped as DropTrainingBacklog), and scored once the
// model is installed, so that the alerts do not depend on how fast the
// samples came.
func (st *streamState) learnSample(ctx context.Context, s *shard, in source.Input) {
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
	if st.training {
		if len(st.heldT) >= st.p.opts.LearnBacklog {
			st.skipped.Add(1)
			st.p.stats.drop(in.Source, DropTrainingBacklog, 1)
			return
		}
		if !st.order(in, vals) {
			return
		}
		st.held = append(st.held, vals...)
		st.heldT = append(st.heldT, in.Time)
		st.nheld.Store(int64(len(st.heldT)))
		return
	}
	if !st.order(in, vals) {
		return
	}
	st.samples = append(st.samples, append([]float64(nil), vals...))
	st.samplesT = append(st.samplesT, in.Time)
	st.learned.Store(int64(len(st.samples)))
	if len(st.samples) < st.spec.Learn {
		return
	}
	st.train(ctx, s)
}

// train fits the stream's model on its samples off the shard's goroutine
// and installs it on the shard's, then scores the samples held meanwhile.
func (st *streamState) train(ctx context.Context, s *shard) {
	samples, times, chans := st.samples, st.samplesT, st.channels
	st.samples, st.samplesT = nil, nil
	st.training = true
	s.training++
	st.mu.Lock()
	st.state = StateTraining
	st.mu.Unlock()
	st.p.log.Info("learning the stream's baseline", "stream", st.spec.Name, "samples", len(samples), "channels", len(chans))
	lctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(st.p.learnCtx, cancel)
	go func() {
		m, err := st.p.opts.Learner(lctx, st.spec.Name, chans, samples)
		stop()
		cancel()
		install := func() {
			s.training--
			st.training = false
			if err == nil {
				err = st.install(m)
			}
			if err != nil {
				st.mu.Lock()
				st.state, st.learnErr = StateFailed, err.Error()
				st.mu.Unlock()
				if st.p.learnCtx.Err() != nil {
					st.p.log.Info("learning stopped", "stream", st.spec.Name, "held_samples", len(st.heldT))
					return
				}
				st.p.log.Error("learning failed; collecting samples again", "stream", st.spec.Name, "err", err)
				// What was held is the start of the next attempt's samples.
				n := len(chans)
				for i, t := range st.heldT {
					st.samples = append(st.samples, slices.Clone(st.held[i*n:(i+1)*n]))
					st.samplesT = append(st.samplesT, t)
				}
				st.learned.Store(int64(len(st.samples)))
				st.dropHeld()
				return
			}
			st.p.log.Info("learnt model installed; scoring", "stream", st.spec.Name, "model", m.ID(), "held_samples", len(st.heldT))
			st.prime(samples, times, chans)
			st.scoreHeld(ctx, s, chans)
		}
		select {
		case s.ctl <- install:
		case <-ctx.Done():
		}
	}()
}

// prime puts the last samples the model learnt from (rows in the order of
// chans, taken at times) into its windower, one short of a window: the
// first window scored ends on the first sample after them, as on a device
// that keeps its history, and as `vigil eval` scores (agent/eval).
func (st *streamState) prime(samples [][]float64, times []time.Time, chans []string) {
	idx, ok := st.learntOrder(chans)
	if !ok || st.win == nil {
		return
	}
	for i := max(0, len(samples)-(st.length-1)); i < len(samples); i++ {
		for j, k := range idx {
			st.row[j] = samples[i][k]
		}
		st.win.Push(times[i], st.row, st.scratch) // fewer than a window: no window yet
	}
}

// learntOrder maps the model's channels (st.channels) to their places in
// chans, the order the stream's samples were collected in.
func (st *streamState) learntOrder(chans []string) ([]int, bool) {
	idx := make([]int, len(st.channels))
	for i, name := range st.channels {
		idx[i] = slices.Index(chans, name)
		if idx[i] < 0 {
			return nil, false
		}
	}
	return idx, true
}

// scoreHeld windows and scores the samples held while the stream trained
// (rows in the order of chans), in order.
func (st *streamState) scoreHeld(ctx context.Context, s *shard, chans []string) {
	defer st.dropHeld()
	n := len(chans)
	idx, ok := st.learntOrder(chans)
	if !ok {
		st.p.logRateLimited("the learnt model's channels are not the stream's: dropping the samples held while it trained",
			"stream", st.spec.Name, "model_channels", st.channels, "learnt_channels", chans, "samples", len(st.heldT))
		st.p.stats.drop(st.spec.Source, source.DropMissing, len(st.heldT))
		return
	}
	for i, t := range st.heldT {
		row := st.held[i*n : (i+1)*n]
		for j, k := range idx {
			st.row[j] = row[k]
		}
		if start, end, done := st.win.Push(t, st.row, st.scratch); done {
			copy(s.queue(st.model, st.sensorWindow(start, end)), st.scratch)
			if s.pending >= s.p.opts.MaxBatch {
				s.flush(ctx)
			}
		}
	}
}

func (st *streamState) dropHeld() {
	st.held, st.heldT = nil, nil
	st.nheld.Store(0)
}

// DropTrainingBacklog counts the samples that arrived while a stream
// trained its model beyond the Options.LearnBacklog it holds.
const DropTrainingBacklog source.DropReason = "training_backlog_full"
