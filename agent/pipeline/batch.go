package pipeline

import (
	"context"
	"time"

	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
)

// batch collects the windows of one model awaiting scoring.
type batch struct {
	model   Model
	windows []float64
	items   []pendingWindow
	scores  []float64
	errs    []float64
}

type pendingWindow struct {
	st         *streamState
	ks         *keyState // behaviour streams
	start, end time.Time
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
	t0 := time.Now()
	err := b.model.Score(ctx, b.windows, b.scores, b.errs)
	s.p.stats.observeInference(time.Since(t0), n)
	if err != nil {
		s.p.stats.drop("", "score_error", n)
		s.p.logRateLimited("scoring failed", "model", b.model.ID(), "windows", n, "err", err)
		return
	}
	for i, pw := range b.items {
		pw.st.scored(s, pw, b.model, b.scores[i], b.errs[i*nc:(i+1)*nc])
	}
}

func (s *shard) appendRecords(ctx context.Context, lane string, recs [][]byte) {
	if len(recs) == 0 {
		return
	}
	if _, err := s.p.opts.Buffer.Append(context.WithoutCancel(ctx), lane, recs...); err != nil {
		s.p.stats.drop("", source.DropReason("buffer_"+lane), len(recs))
		s.p.logRateLimited("appending to the buffer failed", "lane", lane, "records", len(recs), "err", err)
		return
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
