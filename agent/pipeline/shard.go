package pipeline

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/agent/stream"
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
}

type pendingWindow struct {
	st         *streamState
	ks         *keyState // behaviour streams
	start, end time.Time
	seq        int // of the windows that end at end (endSeq)
}

func newShard(p *Pipeline, id int) *shard {
	return &shard{p: p, id: id, in: make(chan shardItem, p.opts.Queue), ctl: make(chan func(), 16)}
}

func (s *shard) run(ctx context.Context) error {
	for {
		select {
		case it, ok := <-s.in:
			if !ok {
				s.finish(ctx)
				return nil
			}
			s.handle(ctx, it)
			// Take whatever else is queued, up to a batch, then score it all.
		drain:
			for s.pending < s.p.opts.MaxBatch {
				select {
				case it, ok := <-s.in:
					if !ok {
						s.finish(ctx)
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
			s.flush(ctx) // what f queued (a learnt model's held samples)
		case <-ctx.Done():
			return nil
		}
	}
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
	t0 := time.Now()
	err := b.model.Score(ctx, b.windows, b.scores, b.errs)
	s.p.stats.observeInference(time.Since(t0), n)
	if err != nil && n > 1 && ctx.Err() == nil {
		// One window the model cannot score must not take the others of
		// the batch down with it: score them one by one.
		per := len(b.windows) / n
		for i, pw := range b.items {
			if err := b.model.Score(ctx, b.windows[i*per:(i+1)*per], b.scores[i:i+1], b.errs[i*nc:(i+1)*nc]); err != nil {
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

// streamState is one stream's state, owned by its shard's goroutine except
// for the fields under mu, which Stats reads.
type streamState struct {
	p     *Pipeline
	spec  StreamSpec
	shard *shard

	model    Model
	channels []string // the model's channel order
	length   int
	hop      int
	det      *detect.Detector
	win      *stream.Windower
	clock    timeline
	dups     dupFilter
	ends     endSeq
	epSeq    int // seq of the window that opened the detector's episode

	// Input channel order → model order, cached per Channels slice.
	mapFrom *string
	mapIdx  []int
	row     []float64
	scratch []float64 // the window being cut, before it joins a batch

	keys    map[string]*keyState
	lru     *list.List // keys without an open episode, most recently seen first
	lruOpen *list.List // keys with an open episode, evicted only when lru is empty
	evicts  atomic.Uint64
	// evictsOpen counts the evictions that closed an open episode.
	evictsOpen atomic.Uint64
	nkeys      atomic.Int64
	learned    atomic.Int64 // samples collected for learning

	samples  [][]float64 // learning
	training bool        // a model is being fitted on samples
	held     []float64   // samples that arrived meanwhile, rows in the learning channels' order
	heldT    []time.Time
	nheld    atomic.Int64

	mu        sync.Mutex
	state     string
	modelID   string
	threshold float64
	learnErr  string
	// confThreshold is the configured threshold (0: the model's): the
	// reference that bounds a threshold set at run time.
	confThreshold float64
	windows       atomic.Uint64
	alerts        atomic.Uint64
	skipped       atomic.Uint64                   // samples dropped while training (backlog full)
	changes       [detect.Close + 1]atomic.Uint64 // alerts by detect.Change
	flips         atomic.Uint64                   // anomalies that continued an episode waiting to close
}

type keyState struct {
	key   string
	feat  Featurizer
	win   *stream.Windower
	det   *detect.Detector
	vec   []float64
	clock timeline
	ends  endSeq
	epSeq int
	elem  *list.Element // in lru, or in lruOpen when open
	open  bool
	gone  bool // evicted
	// pending counts the key's windows queued and not yet scored.
	pending int
}

func newStreamState(p *Pipeline, spec StreamSpec) (*streamState, error) {
	st := &streamState{p: p, spec: spec, confThreshold: spec.Threshold}
	switch spec.Kind {
	case KindSensor, "":
		st.spec.Kind = KindSensor
	case KindBehaviour:
		if spec.Key == "" {
			spec.Key = "user_id"
			st.spec.Key = spec.Key
		}
		if spec.Features == nil {
			return nil, errors.New("behaviour stream without a feature function")
		}
		st.keys = map[string]*keyState{}
		st.lru, st.lruOpen = list.New(), list.New()
	default:
		return nil, fmt.Errorf("unknown kind %q", spec.Kind)
	}
	if st.spec.TopFeatures <= 0 {
		st.spec.TopFeatures = 3
	}
	if st.spec.Detect.N == 0 {
		d := detect.DefaultOptions()
		d.Threshold = st.spec.Detect.Threshold
		st.spec.Detect = d
	}
	switch {
	case spec.Model != nil:
		if err := st.install(spec.Model); err != nil {
			return nil, err
		}
	case spec.Learn > 0:
		if spec.Kind == KindBehaviour {
			return nil, errors.New("behaviour streams cannot learn on the device yet; give them a model")
		}
		if p.opts.Learner == nil {
			return nil, errors.New("learn is set but the pipeline has no Learner")
		}
		st.state = StateLearning
	default:
		return nil, errors.New("no model and no learn")
	}
	return st, nil
}

// install makes m the stream's model. It runs on the shard's goroutine (or
// before Run).
func (st *streamState) install(m Model) error {
	length, hop := m.Window()
	chans := m.Channels()
	thr := m.Threshold()
	if st.spec.Threshold > 0 {
		thr = st.spec.Threshold
	}
	do := st.spec.Detect
	do.Threshold = thr
	det, err := detect.New(do)
	if err != nil {
		return fmt.Errorf("model %s: %w", m.ID(), err)
	}
	if st.spec.Kind == KindSensor {
		w, err := stream.NewWindower(length, hop, len(chans))
		if err != nil {
			return fmt.Errorf("model %s: %w", m.ID(), err)
		}
		st.win = w
	}
	st.model, st.channels, st.length, st.hop, st.det = m, chans, length, hop, det
	st.row = make([]float64, len(chans))
	st.scratch = make([]float64, length*len(chans))
	st.mapFrom = nil
	if st.keys != nil {
		for _, ks := range st.keys {
			ks.gone = true // its pending windows must not touch the new lists
		}
		clear(st.keys)
		st.lru.Init()
		st.lruOpen.Init()
		st.nkeys.Store(0)
	}
	st.mu.Lock()
	st.state, st.modelID, st.threshold, st.learnErr = StateScoring, m.ID(), thr, ""
	st.mu.Unlock()
	return nil
}

// MaxThresholdFactor bounds a threshold set at run time (set-threshold):
// within this factor, either way, of the stream's reference threshold (the
// configured one, else its model's calibrated one). Far above it detection
// is off in all but name; far below it every window is an alert.
const MaxThresholdFactor = 100

func (st *streamState) setThreshold(t float64) error {
	ref := st.confThreshold
	if ref <= 0 && st.model != nil {
		ref = st.model.Threshold()
	}
	switch {
	case ref <= 0 || math.IsInf(ref, 0) || math.IsNaN(ref):
		return fmt.Errorf("stream %s has no model yet (learning): set its threshold once it scores", st.spec.Name)
	case t > ref*MaxThresholdFactor || t < ref/MaxThresholdFactor:
		return fmt.Errorf("threshold %g for stream %s is out of bounds %g..%g: at most %d× above or below its reference threshold %g (the configured one, else the model's calibrated one)",
			t, st.spec.Name, ref/MaxThresholdFactor, ref*MaxThresholdFactor, MaxThresholdFactor, ref)
	}
	if st.det != nil {
		if err := st.det.SetThreshold(t); err != nil {
			return err
		}
	}
	for _, ks := range st.keys {
		if err := ks.det.SetThreshold(t); err != nil {
			return err
		}
	}
	st.spec.Threshold = t
	st.mu.Lock()
	st.threshold = t
	st.mu.Unlock()
	return nil
}

// order checks a sample's time against the stream's timeline, counts a
// late, out-of-order or duplicate one, and follows a clock that stepped
// back (see timeline.admit): the partial window is dropped, the step is
// logged and counted once under the drop reason "clock_step", and scoring
// resumes. Samples that share a time are taken in arrival order unless
// they are duplicates (see dupFilter).
func (st *streamState) order(in source.Input, vals []float64) bool {
	t := in.Time
	if in.ID != "" && st.dups.seenID(in.ID) {
		// Before the timeline: a duplicate does not move it.
		st.p.stats.drop(in.Source, source.DropDuplicate, 1)
		return false
	}
	from := st.clock.last
	reason, stepped := st.clock.admit(t, st.spec.MaxLateness, true, clockStepSamples(st.length))
	if stepped {
		st.followStep(in.Source, "", from, t)
		if st.win != nil {
			st.win.Reset()
		}
		st.dups.reset()
	} else if reason != "" {
		st.p.stats.drop(in.Source, reason, 1)
		return false
	}
	if st.dups.duplicate(t, in.ID, vals) {
		st.p.stats.drop(in.Source, source.DropDuplicate, 1)
		return false
	}
	return true
}

// followStep logs and counts a clock step back that the stream, or its
// key when key is not empty, has followed from from to t.
func (st *streamState) followStep(src, key string, from, t time.Time) {
	args := []any{"stream", st.spec.Name, "from", from.UTC(), "to", t.UTC(), "late_inputs_dropped", clockStepSamples(st.length) - 1}
	if key != "" {
		args = append(args, "key", key)
	}
	st.p.logRateLimited("the inputs' clock stepped back: taking the new timeline", args...)
	st.p.stats.drop(src, DropClockStep, 1)
}

// timeline is the newest time a stream, or one key of a behaviour
// stream, has taken, and the run of late inputs that may be its clock
// stepping back.
type timeline struct {
	last time.Time
	// A run of late inputs, each no older than the one before, from
	// stepFirst to stepLast.
	stepRun             int
	stepFirst, stepLast time.Time
}

// admit checks t against the timeline: it returns the reason to drop t,
// or "" and moves the timeline to t. equalOK admits a time equal to the
// newest (inputs may share a timestamp; the pipeline always sets it, and
// tells duplicates by other means).
//
// A clock that steps back (an NTP correction on a device that stamps
// inputs on arrival, or on the kiosk that stamps a user's events) would
// make every later input late until the clock passes the newest time
// seen. So when need late inputs in a row each come no earlier than the
// one before, and the last after the first (coarse timestamps repeat; a
// stuck clock never moves), admit takes the last of them as the new
// timeline and reports stepped; the late ones before it were dropped as
// late.
func (tl *timeline) admit(t time.Time, maxLateness time.Duration, equalOK bool, need int) (reason source.DropReason, stepped bool) {
	if tl.last.IsZero() || t.After(tl.last) || (equalOK && t.Equal(tl.last)) {
		tl.stepRun = 0
		tl.last = t
		return "", false
	}
	switch {
	case t.Equal(tl.last):
		return source.DropDuplicate, false
	case maxLateness <= 0 || tl.last.Sub(t) <= maxLateness:
		return source.DropOutOfOrder, false
	}
	if tl.stepRun > 0 && !t.Before(tl.stepLast) {
		tl.stepRun++
	} else {
		tl.stepRun, tl.stepFirst = 1, t
	}
	tl.stepLast = t
	if tl.stepRun >= need && t.After(tl.stepFirst) {
		tl.stepRun = 0
		tl.last = t
		return "", true
	}
	return source.DropLate, false
}

// DropClockStep counts the steps back of a stream's clock the pipeline
// followed (one per step; the late samples before it are counted as late).
const DropClockStep source.DropReason = "clock_step"

// clockStepSamples is how many late samples in increasing order make a
// clock step: a window's worth, and at least 10.
func clockStepSamples(window int) int {
	return max(window, 10)
}

// mapChannels puts a sample's values into the model's channel order.
func (st *streamState) mapChannels(in source.Input) ([]float64, bool) {
	if len(in.Channels) == 0 {
		if len(in.Values) != len(st.row) {
			return nil, false
		}
		return in.Values, true
	}
	if st.mapFrom != unsafe.SliceData(in.Channels) {
		idx := make([]int, len(st.channels))
		for i, name := range st.channels {
			idx[i] = -1
			for j, have := range in.Channels {
				if have == name {
					idx[i] = j
					break
				}
			}
			if idx[i] < 0 {
				return nil, false
			}
		}
		st.mapIdx, st.mapFrom = idx, unsafe.SliceData(in.Channels)
	}
	if len(in.Values) < len(in.Channels) {
		return nil, false
	}
	for i, j := range st.mapIdx {
		st.row[i] = in.Values[j]
	}
	return st.row, true
}

func (st *streamState) handleSample(ctx context.Context, s *shard, in source.Input) {
	if st.model == nil {
		st.learnSample(ctx, s, in)
		return
	}
	vals, ok := st.mapChannels(in)
	if !ok {
		st.p.stats.drop(in.Source, source.DropMissing, 1)
		return
	}
	if !st.order(in, vals) {
		return
	}
	if start, end, done := st.win.Push(in.Time, vals, st.scratch); done {
		copy(s.queue(st.model, pendingWindow{st: st, start: start, end: end, seq: st.ends.next(end)}), st.scratch)
	}
}

func (st *streamState) handleEvent(ctx context.Context, s *shard, in source.Input) {
	if st.model == nil {
		st.skipped.Add(1)
		return
	}
	e := in.Event
	key := eventKey(e, st.spec.Key)
	if key == "" {
		st.p.stats.drop(in.Source, source.DropMissing, 1)
		return
	}
	ks := st.keyState(ctx, s, key)
	if ks == nil {
		return
	}
	t := in.Time
	if t.IsZero() {
		t = e.Time
	}
	if e.Time.IsZero() {
		e.Time = t
	}
	from := ks.clock.last
	reason, stepped := ks.clock.admit(t, st.spec.MaxLateness, true, clockStepSamples(st.length))
	if reason != "" {
		st.p.stats.drop(in.Source, reason, 1)
		return
	}
	if stepped {
		// The key's features look back over its recent events, which are
		// now on the old timeline: start them afresh, as the windows.
		st.followStep(in.Source, key, from, t)
		ks.feat = st.spec.Features()
		ks.win.Reset()
	}
	if !ks.feat.Add(e, ks.vec) {
		return
	}
	if start, end, done := ks.win.Push(t, ks.vec, st.scratch); done {
		ks.pending++
		copy(s.queue(st.model, pendingWindow{st: st, ks: ks, start: start, end: end, seq: ks.ends.next(end)}), st.scratch)
	}
}

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
	do := st.spec.Detect
	do.Threshold = st.currentThreshold()
	det, err := detect.New(do)
	if err != nil {
		st.p.logRateLimited("behaviour key detector", "stream", st.spec.Name, "err", err)
		return nil
	}
	w, err := stream.NewWindower(st.length, st.hop, len(st.channels))
	if err != nil {
		return nil
	}
	ks := &keyState{key: key, feat: st.spec.Features(), win: w, det: det, vec: make([]float64, len(st.channels))}
	ks.elem = st.lru.PushFront(ks)
	st.keys[key] = ks
	st.nkeys.Store(int64(len(st.keys)))
	return ks
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

func (st *streamState) currentThreshold() float64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.threshold
}

// scored runs detection on one scored window and queues its records.
func (st *streamState) scored(s *shard, pw pendingWindow, m Model, score float64, chanErr []float64) {
	st.windows.Add(1)
	det, key, epSeq := st.det, "", &st.epSeq
	if pw.ks != nil {
		det, key, epSeq = pw.ks.det, pw.ks.key, &pw.ks.epSeq
		pw.ks.pending--
	}
	if math.IsNaN(score) || math.IsInf(score, 0) {
		score = math.MaxFloat32
	}
	res := det.Observe(pw.end, score)
	if res.Change == detect.Open {
		*epSeq = pw.seq
	}
	if ks := pw.ks; ks != nil && !ks.gone && ks.open != det.InEpisode() {
		// The key moves between the lists of keys with and without an
		// open episode, as the most recently seen of its new list.
		st.keyList(ks).Remove(ks.elem)
		ks.open = !ks.open
		ks.elem = st.keyList(ks).PushFront(ks)
	}
	if res.Resumed {
		st.flips.Add(1)
	}
	p := st.p
	mid := m.ID()
	s.scoreRecs = append(s.scoreRecs, encodeRecord(record.Score{
		ID:        record.IDSeq(record.LaneScore, p.opts.Device, st.spec.Name, key, pw.end, mid, pw.seq),
		TS:        pw.end,
		Stream:    st.spec.Name,
		Key:       key,
		Score:     score,
		Threshold: det.Threshold(),
		Model:     mid,
	}))
	if res.Change == detect.None {
		return
	}
	var conf *float64
	if c, ok := m.(interface{ Confidence(float64) (float64, bool) }); ok {
		if v, ok := c.Confidence(score); ok {
			conf = &v
		}
	}
	top := detect.Top(st.channels, chanErr, st.spec.TopFeatures)
	feats := make([]record.Feature, len(top))
	for i, c := range top {
		feats[i] = record.Feature{Name: c.Name, Share: c.Share}
	}
	st.alerts.Add(1)
	st.changes[res.Change].Add(1)
	s.alertRecs = append(s.alertRecs, encodeRecord(record.Alert{
		ID:          record.IDSeq(record.LaneAlert, p.opts.Device, st.spec.Name, key, pw.end, mid, pw.seq),
		TS:          pw.end,
		Device:      p.opts.Device,
		Stream:      st.spec.Name,
		Key:         key,
		Kind:        st.spec.Kind,
		Score:       score,
		Threshold:   det.Threshold(),
		Confidence:  conf,
		Severity:    res.Severity,
		Episode:     record.IDSeq("episode", p.opts.Device, st.spec.Name, key, res.EpisodeStart, mid, *epSeq),
		Update:      res.Update,
		State:       res.Change.State(),
		Window:      record.Window{Start: pw.start, End: pw.end},
		TopFeatures: feats,
		Model:       mid,
	}))
}

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
	st.learned.Store(int64(len(st.samples)))
	if len(st.samples) < st.spec.Learn {
		return
	}
	st.train(ctx, s)
}

// train fits the stream's model on its samples off the shard's goroutine
// and installs it on the shard's, then scores the samples held meanwhile.
func (st *streamState) train(ctx context.Context, s *shard) {
	samples, chans := st.samples, st.channels
	st.samples = nil
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
				for i := range st.heldT {
					st.samples = append(st.samples, slices.Clone(st.held[i*n:(i+1)*n]))
				}
				st.learned.Store(int64(len(st.samples)))
				st.dropHeld()
				return
			}
			st.p.log.Info("learnt model installed; scoring", "stream", st.spec.Name, "model", m.ID(), "held_samples", len(st.heldT))
			st.scoreHeld(ctx, s, chans)
		}
		select {
		case s.ctl <- install:
		case <-ctx.Done():
		}
	}()
}

// scoreHeld windows and scores the samples held while the stream trained
// (rows in the order of chans), in order.
func (st *streamState) scoreHeld(ctx context.Context, s *shard, chans []string) {
	defer st.dropHeld()
	n := len(chans)
	idx := make([]int, len(st.channels))
	for i, name := range st.channels {
		idx[i] = slices.Index(chans, name)
		if idx[i] < 0 {
			st.p.logRateLimited("the learnt model's channels are not the stream's: dropping the samples held while it trained",
				"stream", st.spec.Name, "channel", name, "samples", len(st.heldT))
			st.p.stats.drop(st.spec.Source, source.DropMissing, len(st.heldT))
			return
		}
	}
	for i, t := range st.heldT {
		row := st.held[i*n : (i+1)*n]
		for j, k := range idx {
			st.row[j] = row[k]
		}
		if start, end, done := st.win.Push(t, st.row, st.scratch); done {
			copy(s.queue(st.model, pendingWindow{st: st, start: start, end: end, seq: st.ends.next(end)}), st.scratch)
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
