package pipeline

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/agent/stream"
	"github.com/vigil-edge/vigil/models/shift"
)

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
	row     []float64 // the newest sample, in the model's channel order
	// stuckLimits: the run of one value at which each channel counts as
	// stuck (detect.StuckLimits); nil when the check is off.
	stuckLimits []int
	// levelShift is the level-shift check (models/shift); nil when off.
	levelShift *levelShift
	scratch    []float64 // the window being cut, before it joins a batch

	keys    map[string]*keyState
	lru     *list.List // keys without an open episode, most recently seen first
	lruOpen *list.List // keys with an open episode, evicted only when lru is empty
	evicts  atomic.Uint64
	// evictsOpen counts the evictions that closed an open episode.
	evictsOpen atomic.Uint64
	nkeys      atomic.Int64
	learned    atomic.Int64 // samples collected for learning

	samples  [][]float64 // learning
	samplesT []time.Time // their times
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
	stuck         atomic.Uint64                   // windows that ended with a channel stuck
	shifted       atomic.Uint64                   // windows with a level shift over its limit
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
	st.levelShift = nil
	if ls, ok := m.(LevelShifter); ok && st.spec.Kind == KindSensor && st.spec.ShiftFactor > 0 {
		if r, floor, mx := ls.LevelShift(); r > 0 && r < length && len(floor) == len(chans) && len(mx) == len(chans) {
			st.levelShift = &levelShift{recent: r, floor: floor, max: mx, z: make([]float64, len(chans))}
		}
	}
	st.stuckLimits = nil
	if mr, ok := m.(RunRecorder); ok && st.spec.Kind == KindSensor {
		if r := mr.MaxRuns(); len(r) == len(chans) {
			st.stuckLimits = detect.StuckLimits(r, length, st.spec.StuckFactor)
		}
	}
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
		copy(s.queue(st.model, st.sensorWindow(start, end)), st.scratch)
	}
}

// sensorWindow is the window just cut from the stream's windower (in
// st.scratch), with the channel stuck at its end and the one with a level
// shift over its limit, if any. What an alert says of them is kept in the
// window: a model switch may come before it is scored.
func (st *streamState) sensorWindow(start, end time.Time) pendingWindow {
	pw := pendingWindow{st: st, start: start, end: end, seq: st.ends.next(end)}
	if c := detect.Stuck(st.win.Runs(), st.stuckLimits); c >= 0 {
		pw.stuck, pw.stuckRun, pw.stuckLimit, pw.stuckValue = st.channels[c], st.win.Runs()[c], st.stuckLimits[c], st.row[c]
	}
	if ls := st.levelShift; ls != nil {
		shift.Z(st.scratch, len(st.channels), ls.recent, ls.floor, ls.z)
		if c, r := shift.Over(ls.z, ls.max, st.spec.ShiftFactor); c >= 0 {
			pw.shifted, pw.shiftRecent, pw.shiftZ, pw.shiftRatio = st.channels[c], ls.recent, ls.z[c], r
		}
	}
	return pw
}

// levelShift is a sensor stream's level-shift check: the window's
// channels' shifts (models/shift) against the largest in the model's
// training data.
type levelShift struct {
	recent     int
	floor, max []float64
	z          []float64 // scratch
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
	if pw.stuck != "" {
		st.stuck.Add(1)
	}
	if pw.shifted != "" {
		st.shifted.Add(1)
	}
	res := det.ObserveExceeding(pw.end, score, pw.stuck != "" || pw.shifted != "")
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
		Stuck:     pw.stuck,
		Shifted:   pw.shifted,
	}))
	if res.Change == detect.None {
		return
	}
	var conf *float64
	if c, ok := m.(Confider); ok {
		if v, ok := c.Confidence(score); ok {
			conf = &v
		}
	}
	var feats []record.Feature
	var reason string
	switch {
	case pw.stuck != "":
		// The model's reconstruction error does not see a frozen value:
		// the alert names the stuck channel alone, and says why.
		feats = []record.Feature{{Name: pw.stuck, Share: 1}}
		reason = fmt.Sprintf("sensor stuck: %s has read %.6g for %d samples in a row; stuck from %d (%d× its longest run in the training data, at least a window)",
			pw.stuck, pw.stuckValue, pw.stuckRun, pw.stuckLimit, st.spec.StuckFactor)
	case pw.shifted != "" && res.Ratio < 1:
		// Below the model's threshold: the level shift raised it.
		feats = []record.Feature{{Name: pw.shifted, Share: 1}}
		reason = fmt.Sprintf("level shift: %s moved %+.2g standard deviations over its last %d samples, %.2g× the limit (%g× the largest in the training data)",
			pw.shifted, pw.shiftZ, pw.shiftRecent, pw.shiftRatio, st.spec.ShiftFactor)
	default:
		top := detect.Top(st.channels, chanErr, st.spec.TopFeatures)
		feats = make([]record.Feature, len(top))
		for i, c := range top {
			feats[i] = record.Feature{Name: c.Name, Share: c.Share}
		}
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
		Reason:      reason,
	}))
}
