package pipeline

import (
	"context"

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

	scoreRecs, alertRecs [][]byte
}

func newShard(p *Pipeline, id int) *shard {
	return &shard{p: p, id: id, in: make(chan shardItem, p.opts.Queue), ctl: make(chan func(), 16)}
}

func (s *shard) run(ctx context.Context) error {
	for {
		select {
		case it, ok := <-s.in:
			if !ok {
				s.flush(context.WithoutCancel(ctx))
				return nil
			}
			s.handle(ctx, it)
			// Take whatever else is queued, up to a batch, then score it all.
		drain:
			for s.pending < s.p.opts.MaxBatch {
				select {
				case it, ok := <-s.in:
					if !ok {
						s.flush(context.WithoutCancel(ctx))
						return nil
					}
					s.handle(ctx, it)
				default:
					break drain
				}
			}
			s.flush(ctx)
		case f := <-s.ctl:
			s.flush(ctx)
			f()
		case <-ctx.Done():
			return nil
		}
	}
}

// handle applies one input to its stream and queues any window it completes.
func (s *shard) handle(ctx context.Context, it shardItem) {
	st := it.st
	if it.in.Event != nil {
		st.handleEvent(s, it.in)
		return
	}
	st.handleSample(ctx, s, it.in)
}
