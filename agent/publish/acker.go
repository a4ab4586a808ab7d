package publish

import (
	"context"
	"fmt"
)

// ackBatch bounds the sequence numbers of one buffer Ack.
const ackBatch = 256

// acker waits for the sent messages of a lane in send order and
// acknowledges them in the buffer in batches. A failed message ends the
// session: its record, and every record after it not yet acknowledged, is
// sent again on the next connection. When ctx ends it acknowledges what has
// already completed and abandons the rest.
func (s *session) acker(ctx context.Context, sl *sessLane) error {
	lane := sl.meta.name
	seqs := make([]uint64, 0, ackBatch)
	batch := make([]*outMsg, 0, ackBatch)
	var failed error
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		seqs = seqs[:0]
		var replayed uint64
		for _, m := range batch {
			seqs = append(seqs, m.seq)
			if m.replayed {
				replayed++
			}
		}
		if err := s.p.buf.Ack(s.p.opts.Consumer, lane, seqs...); err != nil {
			batch = batch[:0]
			return fmt.Errorf("ack lane %s: %w", lane, err)
		}
		sl.meta.acked.add(seqs...)
		sl.meta.published.Add(uint64(len(batch)))
		sl.meta.replayed.Add(replayed)
		for _, m := range batch {
			m.win.release(m)
		}
		batch = batch[:0]
		return nil
	}
	stopping := false
	for m := range sl.ackq {
		if failed != nil {
			continue // drain: nothing after a failure is acknowledged
		}
		select {
		case <-m.tok.Done():
		default:
			if stopping {
				continue
			}
			if err := flush(); err != nil {
				return err
			}
			select {
			case <-m.tok.Done():
			case <-ctx.Done():
				stopping = true
				continue
			}
		}
		if err := m.tok.Error(); err != nil {
			if !stopping {
				failed = fmt.Errorf("publish %s seq %d to %s: %w", lane, m.seq, m.topic, err)
				s.fail(failed)
			}
			continue
		}
		batch = append(batch, m)
		if len(batch) == cap(batch) || len(sl.ackq) == 0 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return failed
}
