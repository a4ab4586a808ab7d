package pipeline

import (
	"container/list"
	"context"
	"fmt"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/agent/stream"
)

func eventKey(e *source.Event, key string) string {
	switch key {
	case "user_id", "":
		return e.UserID
	case "event_name":
		return e.Name
	}
	if v, ok := e.Properties[key].(string); ok {
		return v
	}
	return ""
}

// keyState returns the state of one key, creating it and forgetting the least
// recently seen key when the stream tracks too many (see evictKey).
func (st *streamState) keyState(ctx context.Context, s *shard, key string) *keyState {
	if ks, ok := st.keys[key]; ok {
		st.keyList(ks).MoveToFront(ks.elem)
		return ks
	}
	if len(st.keys) >= st.p.opts.MaxKeys {
		st.evictKey(ctx, s)
	}
	w, err := stream.NewWindower(st.length, st.hop, len(st.channels))
	if err != nil {
		return nil
	}
	ks, err := st.addKey(key, st.spec.Features(), w)
	if err != nil {
		st.p.logRateLimited("behaviour key detector", "stream", st.spec.Name, "err", err)
		return nil
	}
	return ks
}

// addKey starts tracking key, whose events go through feat into win, with
// a detector of the stream's settings, as the most recently seen key.
func (st *streamState) addKey(key string, feat Featurizer, win *stream.Windower) (*keyState, error) {
	do := st.spec.Detect
	do.Threshold = st.currentThreshold()
	det, err := detect.New(do)
	if err != nil {
		return nil, err
	}
	ks := &keyState{key: key, feat: feat, win: win, det: det, vec: make([]float64, len(st.channels))}
	ks.elem = st.lru.PushFront(ks)
	st.keys[key] = ks
	st.nkeys.Store(int64(len(st.keys)))
	return ks, nil
}

func (st *streamState) keyList(ks *keyState) *list.List {
	if ks.open {
		return st.lruOpen
	}
	return st.lru
}

// evictKey forgets the least recently seen key without an open episode,
// or, when every key has one, the least recently seen key, closing its
// episode with an alert that says why: an evicted key's episode would
// otherwise never close, and the key, seen again, would open a new one.
func (st *streamState) evictKey(ctx context.Context, s *shard) {
	if s.pending > 0 && (st.lru.Len() == 0 || st.lru.Back().Value.(*keyState).pending > 0) {
		// Score the pending windows first: they may open or close the
		// candidates' episodes, and a key's alerts stay in order.
		s.flush(ctx)
	}
	l := st.lru
	if l.Len() == 0 {
		l = st.lruOpen
	}
	old := l.Back().Value.(*keyState)
	l.Remove(old.elem)
	delete(st.keys, old.key)
	old.gone = true
	st.evicts.Add(1)
	st.nkeys.Store(int64(len(st.keys)))
	if !old.det.InEpisode() {
		return
	}
	st.evictsOpen.Add(1)
	end := old.clock.last
	res := old.det.CloseEpisode(end)
	p, mid := st.p, st.model.ID()
	st.alerts.Add(1)
	rec := encodeRecord(record.Alert{
		// Seq -1: no window's alert has this id, even one that ends at end.
		ID:          record.IDSeq(record.LaneAlert, p.opts.Device, st.spec.Name, old.key, end, mid, -1),
		TS:          end,
		Device:      p.opts.Device,
		Stream:      st.spec.Name,
		Key:         old.key,
		Kind:        st.spec.Kind,
		Threshold:   old.det.Threshold(),
		Severity:    res.Severity,
		Episode:     record.IDSeq("episode", p.opts.Device, st.spec.Name, old.key, res.EpisodeStart, mid, old.epSeq),
		Update:      res.Update,
		State:       res.Change.State(),
		Window:      record.Window{Start: end, End: end},
		TopFeatures: []record.Feature{},
		Model:       mid,
		Reason:      fmt.Sprintf("key evicted: the stream tracks at most %d keys and every one has an open episode; this one was seen least recently", p.opts.MaxKeys),
	})
	p.logRateLimited("evicted a behaviour key with an open episode: closed it", "stream", st.spec.Name, "key", old.key, "max_keys", p.opts.MaxKeys)
	s.appendRecords(ctx, record.LaneAlert, [][]byte{rec})
}
