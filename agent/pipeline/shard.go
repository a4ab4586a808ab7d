package pipeline

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
)

// Stream states, as reported in Stats and health.
const (
	StateScoring  = "scoring"
	StateLearning = "learning" // collecting its first samples
	StateTraining = "training" // fitting its model on them
	StateFailed   = "failed"   // learning failed; collecting again
)

type shardItem struct {
	st *streamState
	in source.Input
}

// shard owns the state of some streams and processes their inputs in order.
type shard struct {
	p       *Pipeline
	id      int
	in      chan shardItem
	ctl     chan func()
	streams []*streamState

	batches []*batch // one per model with pending windows, in first-use order
	pending int
	// training counts the streams fitting a model, whose installation the
	// shard waits for when its input is closed.
	training int
	handled  atomic.Uint64 // inputs taken from in (for the liveness probe)

	scoreRecs, alertRecs [][]byte
}

// batch collects the windows of one model awaiting scoring.
type batch struct {
	model   Model
	windows []float64
	items   []pendingWindow
	scores  []float64
	errs    []float64
	spans   []WindowSpan // Spans of the Score call
}

type pendingWindow struct {
	st         *streamState
	ks         *keyState // behaviour streams
	start, end time.Time
	seq        int // of the windows that end at end (endSeq)
	// stuck names the channel stuck at the window's end ("": none);
	// stuckRun is its run of stuckValue (sensor streams).
	stuck                string
	stuckRun, stuckLimit int
	stuckValue           float64
	// shifted names the channel whose level shift (models/shift) went
	// furthest over its limit in the window ("": none); shiftZ is its
	// shift over the last shiftRecent samples, shiftRatio how many times
	// its limit.
	shifted            string
	shiftRecent        int
	shiftZ, shiftRatio float64
}

func newShard(p *Pipeline, id int) *shard {
	return &shard{p: p, id: id, in: make(chan shardItem, p.opts.Queue), ctl: make(chan func(), 16)}
}

func (s *shard) run(ctx context.Context) error {
	for {
		select {
		case it, ok := <-s.in:
			if !s.take(ctx, it, ok) {
				return nil
			}
			// Take whatever else is queued, up to a batch, then score it all.
		drain:
			for s.pending < s.p.opts.MaxBatch {
				select {
				case it, ok := <-s.in:
					if !s.take(ctx, it, ok) {
						return nil
					}
				default:
					break drain
				}
			}
			s.flush(ctx)
		case f := <-s.ctl:
			s.flush(ctx)
			f()
			s.flush(ctx) // what f queued (a learnt model's held samples)
		case <-ctx.Done():
			return nil
		}
	}
}

// take handles an item received from the input (ok as the receive gave
// it). It reports false when the input is closed: then the shard has
// finished and run returns.
func (s *shard) take(ctx context.Context, it shardItem, ok bool) bool {
	if !ok {
		s.finish(ctx)
		return false
	}
	s.handle(ctx, it)
	return true
}

// finish scores what is pending once the input is closed. A stream still
// training keeps the shard running until its model is installed and the
// samples held meanwhile are scored (or learning is stopped, or ctx ends):
// a source that ends while a stream trains does not strand it.
func (s *shard) finish(ctx context.Context) {
	s.flush(context.WithoutCancel(ctx))
	for s.training > 0 {
		select {
		case f := <-s.ctl:
			f()
			s.flush(context.WithoutCancel(ctx))
		case <-ctx.Done():
			return
		}
	}
}

// handle applies one input to its stream and queues any window it completes.
func (s *shard) handle(ctx context.Context, it shardItem) {
	s.handled.Add(1)
	st := it.st
	if it.in.Event != nil {
		st.handleEvent(ctx, s, it.in)
		return
	}
	st.handleSample(ctx, s, it.in)
}

func (s *shard) queue(m Model, pw pendingWindow) []float64 {
	var b *batch
	for _, x := range s.batches {
		if x.model == m {
			b = x
			break
		}
	}
	if b == nil {
		b = &batch{model: m}
		s.batches = append(s.batches, b)
	}
	length, _ := m.Window()
	n := length * len(m.Channels())
	off := len(b.windows)
	b.windows = append(b.windows, make([]float64, n)...)
	b.items = append(b.items, pw)
	s.pending++
	return b.windows[off : off+n]
}

// flush scores every pending window, runs detection in order, and appends
// the records to the buffer.
func (s *shard) flush(ctx context.Context) {
	if s.pending == 0 {
		return
	}
	s.scoreRecs, s.alertRecs = s.scoreRecs[:0], s.alertRecs[:0]
	for _, b := range s.batches {
		s.scoreBatch(ctx, b)
		b.windows, b.items = b.windows[:0], b.items[:0]
	}
	s.pending = 0
	s.appendRecords(ctx, record.LaneScore, s.scoreRecs)
	s.appendRecords(ctx, record.LaneAlert, s.alertRecs)
}

func (s *shard) scoreBatch(ctx context.Context, b *batch) {
	n := len(b.items)
	if n == 0 {
		return
	}
	nc := len(b.model.Channels())
	b.scores = grow(b.scores, n)
	b.errs = grow(b.errs, n*nc)
	var sctx context.Context
	b.spans, sctx = withSpans(ctx, b.spans, b.items)
	t0 := time.Now()
	err := b.model.Score(sctx, b.windows, b.scores, b.errs)
	s.p.stats.observeInference(time.Since(t0), n)
	if err != nil && n > 1 && ctx.Err() == nil {
		// One window the model cannot score must not take the others of
		// the batch down with it: score them one by one.
		per := len(b.windows) / n
		for i, pw := range b.items {
			one := context.WithValue(ctx, spansKey{}, b.spans[i:i+1])
			if err := b.model.Score(one, b.windows[i*per:(i+1)*per], b.scores[i:i+1], b.errs[i*nc:(i+1)*nc]); err != nil {
				s.scoreFailed(b.model, pw, err)
				continue
			}
			pw.st.scored(s, pw, b.model, b.scores[i], b.errs[i*nc:(i+1)*nc])
		}
		return
	}
	if err != nil {
		for _, pw := range b.items {
			s.scoreFailed(b.model, pw, err)
		}
		return
	}
	for i, pw := range b.items {
		pw.st.scored(s, pw, b.model, b.scores[i], b.errs[i*nc:(i+1)*nc])
	}
}

// DropScoreError counts the windows a model failed to score, under the
// source of their stream.
const DropScoreError source.DropReason = "score_error"

func (s *shard) scoreFailed(m Model, pw pendingWindow, err error) {
	if pw.ks != nil {
		pw.ks.pending--
	}
	s.p.stats.drop(pw.st.spec.Source, DropScoreError, 1)
	s.p.logRateLimited("scoring a window failed", "stream", pw.st.spec.Name, "model", m.ID(), "window_end", pw.end.UTC(), "err", err)
}

func (s *shard) appendRecords(ctx context.Context, lane string, recs [][]byte) {
	if len(recs) == 0 {
		return
	}
	if _, err := s.p.opts.Buffer.Append(context.WithoutCancel(ctx), lane, recs...); err != nil {
		s.p.stats.drop("", source.DropReason("buffer_"+lane), len(recs))
		msg := lane + ": " + err.Error()
		s.p.stats.appendErr.Store(&msg)
		s.p.logRateLimited("appending to the buffer failed", "lane", lane, "records", len(recs), "err", err)
		return
	}
	if s.p.stats.appendErr.Load() != nil {
		s.p.stats.appendErr.Store(nil)
	}
	if lane == record.LaneScore {
		s.p.stats.scores.Add(uint64(len(recs)))
	} else {
		s.p.stats.alerts.Add(uint64(len(recs)))
	}
}

func grow(b []float64, n int) []float64 {
	if cap(b) < n {
		return make([]float64, n)
	}
	return b[:n]
}
