package publish

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vigil-edge/vigil/buffer"
)

// readBatch bounds one live read from the buffer.
const readBatch = 256

// liveFeeder prepares the records appended after the split, as they come.
func (s *session) liveFeeder(ctx context.Context, sl *sessLane) error {
	buf, lane := s.p.buf, sl.meta.name
	cache := map[string]string{}
	cursor := sl.split
	batch := min(readBatch, sl.liveWin.size)
	for {
		notify := buf.Notify(lane)
		recs, err := buf.ReadFrom(lane, cursor+1, batch)
		if err != nil {
			return fmt.Errorf("read lane %s from %d: %w", lane, cursor+1, err)
		}
		if len(recs) == 0 {
			select {
			case <-notify:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		for _, r := range recs {
			ok, err := s.prepare(ctx, sl, sl.liveWin, sl.liveQ, r, false, cache)
			if err != nil || !ok {
				return err
			}
			cursor = r.Seq
		}
	}
}

// replayFeeder prepares the backlog: the records at or below the split
// that the consumer has not acknowledged, oldest first. The buffer's Read
// finds the first of them (the ack floor); from there the feeder reads by
// position, skipping what this process has acknowledged out of order on
// earlier connections (records acknowledged by an earlier process above its
// floor are sent again: duplicates with the same id). It refills its window
// one record per acknowledgement, so the connection never idles between
// batches: with a broker that has Nagle's algorithm on (mosquitto's
// default), an idle pause would hold the PUBACKs for a delayed-ACK timeout.
func (s *session) replayFeeder(ctx context.Context, sl *sessLane) error {
	buf, lane, win := s.p.buf, sl.meta.name, sl.replayWin
	first, err := buf.Read(s.p.opts.Consumer, lane, 1)
	if err != nil {
		return fmt.Errorf("read backlog of lane %s: %w", lane, err)
	}
	if len(first) == 0 || first[0].Seq > sl.split {
		return nil
	}
	sl.meta.acked.pruneBelow(first[0].Seq)
	cursor := first[0].Seq - 1 // highest backlog seq handled
	sl.backlog.Store(sl.split - cursor)
	defer sl.backlog.Store(0) // the rest, if any, was deleted or evicted
	cache := map[string]string{}
	batch := min(readBatch, win.size)
	for cursor < sl.split {
		recs, err := buf.ReadFrom(lane, cursor+1, batch)
		if err != nil {
			return fmt.Errorf("read backlog of lane %s from %d: %w", lane, cursor+1, err)
		}
		if len(recs) == 0 {
			return nil // the rest was deleted or evicted
		}
		for _, r := range recs {
			if r.Seq > sl.split {
				return nil
			}
			if !sl.meta.acked.contains(r.Seq) {
				ok, err := s.prepare(ctx, sl, win, sl.replayQ, r, true, cache)
				if err != nil || !ok {
					return err
				}
			}
			cursor = r.Seq
			sl.backlog.Store(sl.split - cursor)
		}
	}
	return nil
}

// prepare turns record r into a message in window w and queues it for the
// writer. A record that is not a JSON object is acknowledged and counted
// instead, so it cannot block the lane. ok is false when ctx ended.
func (s *session) prepare(ctx context.Context, sl *sessLane, w *window, q chan<- *outMsg, r buffer.Record, replayed bool, cache map[string]string) (ok bool, err error) {
	m, ok := w.acquire(ctx)
	if !ok {
		return false, nil
	}
	payload, key, rerr := rewrite(m.payload[:0], r.Data, r.Seq, replayed, sl.meta.key)
	if rerr != nil {
		w.release(m)
		return true, s.skipInvalid(sl, r, rerr)
	}
	m.payload, m.seq, m.replayed = payload, r.Seq, replayed
	m.topic = sl.meta.topic(key, cache)
	q <- m // never blocks: the queue holds a whole window
	s.signal()
	return true, nil
}

// topic returns the topic of a record whose key field is key.
func (l *laneMeta) topic(key []byte, cache map[string]string) string {
	if l.cache {
		if t, ok := cache[string(key)]; ok {
			return t
		}
	}
	b := make([]byte, 0, len(l.prefix)+len(key))
	b = append(b, l.prefix...)
	t := string(appendLevel(b, key))
	if l.cache {
		if len(cache) >= 1024 {
			clear(cache)
		}
		cache[string(key)] = t
	}
	return t
}

func (s *session) skipInvalid(sl *sessLane, r buffer.Record, cause error) error {
	lane := sl.meta.name
	if err := s.p.buf.Ack(s.p.opts.Consumer, lane, r.Seq); err != nil {
		return fmt.Errorf("ack invalid record %d of lane %s: %w", r.Seq, lane, err)
	}
	sl.meta.acked.add(r.Seq)
	sl.meta.invalid.Add(1)
	s.p.invalidLog.Log(slog.LevelError, "", "record cannot be published, skipped", "lane", lane, "seq", r.Seq, "err", cause)
	return nil
}
