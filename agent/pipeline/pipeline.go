// Package pipeline is Vigil's path from inputs to the buffer: it routes each
// source's inputs to their streams, drops and counts what is invalid, cuts
// windows (or, for behaviour streams, per-key feature vectors), scores them
// in batches through each stream's model, runs the detector, and appends
// every score and alert to the buffer with a stable id.
//
// Streams are spread over shards by name; a shard owns its streams' state and
// handles their windows in order, so detection never sees windows out of
// order while shards score in parallel. Sources never wait for consumers of
// the buffer: back-pressure ends at the buffer.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/source"
)

// Model is what the pipeline needs of a loaded model.
type Model interface {
	// ID is the model's name@version, recorded with every score.
	ID() string
	// Window is the window length and hop in samples.
	Window() (length, hop int)
	// Channels names the model's input channels (or features) in order.
	Channels() []string
	// Threshold is the calibrated threshold from the manifest.
	Threshold() float64
	// Score scores n windows of raw values (n × length × channels, row
	// major) into scores (n values) and per-channel errors (n × channels).
	Score(ctx context.Context, windows, scores, channelErr []float64) error
}

// The optional methods a Model may have; a model without one goes without
// what it gives.
type (
	// Confider gives an alert's confidence: one minus the probability that
	// a normal window scores at least score (models.Threshold.Confidence);
	// false when the model has no calibration to say.
	Confider interface {
		Confidence(score float64) (float64, bool)
	}
	// RunRecorder gives, per channel, the longest run of one value in the
	// training data, for the stuck-sensor check (StreamSpec.StuckFactor).
	RunRecorder interface {
		MaxRuns() []int
	}
	// LevelShifter gives the training data's level-shift record
	// (models/shift), for the level-shift check (StreamSpec.ShiftFactor).
	LevelShifter interface {
		LevelShift() (recent int, floor, max []float64)
	}
)

// Appender is the buffer, as the pipeline uses it.
type Appender interface {
	Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error)
}

// Kinds of streams.
const (
	KindSensor    = "sensor"
	KindBehaviour = "behaviour"
)

// Learner trains a model on a stream's first samples (rows × channels) on
// the device. It runs off the shard's goroutine and must respect ctx.
type Learner func(ctx context.Context, stream string, channels []string, samples [][]float64) (Model, error)

// StreamSpec configures one stream.
type StreamSpec struct {
	Name   string
	Source string
	Kind   string // KindSensor or KindBehaviour
	// Model scores the stream. Nil when the stream learns its model.
	Model Model
	// Key names the event field that keys a behaviour stream (user_id).
	Key string
	// Threshold overrides the model's when > 0.
	Threshold float64
	// Detect holds hysteresis, cooldown and bands; its Threshold is ignored.
	Detect detect.Options
	// TopFeatures is how many channels an alert names (default 3).
	TopFeatures int
	// Learn > 0: collect this many samples, train with Learner, then score.
	Learn int
	// Channels names the stream's input channels when the model is learnt.
	Channels []string
	// MaxLateness: a sample older than the stream's newest by more than
	// this is dropped as late; an older one within it as out of order.
	MaxLateness time.Duration
	// Features computes behaviour feature vectors (behaviour streams).
	Features FeatureFunc
	// StuckFactor turns on the stuck-sensor check of a sensor stream whose
	// model records its training data's runs of one value (RunRecorder): a channel that reads one value for StuckFactor times
	// its longest run there, and at least a window, is stuck, and the
	// window counts as exceeding (detect.StuckLimits). 0: off.
	StuckFactor int
	// ShiftFactor turns on the level-shift check of a sensor stream whose
	// model records its training data's largest level shifts
	// (LevelShifter): a window in
	// which a channel's last recent samples moved ShiftFactor times as far
	// from the rest as the most seen in training counts as exceeding
	// (models/shift). 0: off.
	ShiftFactor float64
}

// FeatureFunc returns a new per-key featurizer for a behaviour stream.
type FeatureFunc func() Featurizer

// Featurizer turns one key's events into feature vectors.
type Featurizer interface {
	// Add takes the key's next event and writes its feature vector to dst;
	// it returns false when it emits no vector for this event.
	Add(e *source.Event, dst []float64) bool
}

// Options configure a Pipeline.
type Options struct {
	Device  string
	Streams []StreamSpec
	Buffer  Appender
	Learner Learner
	Logger  *slog.Logger
	// Queue is the capacity of each shard's input queue (default 8192).
	// Sources hand inputs straight to the queue of their stream's shard,
	// on their own goroutine: there is no routing goroutine in between.
	Queue int
	// Shards is the number of shards (default: the number of CPUs, at most
	// one per stream).
	Shards int
	// MaxBatch is the most windows scored in one call (default 64).
	MaxBatch int
	// MaxKeys bounds the keys a behaviour stream tracks (default 10000);
	// the least recently seen key is forgotten first.
	MaxKeys int
	// LearnBacklog bounds the samples a learning stream holds while it
	// trains, to score them once its model is installed (default 100000);
	// the ones beyond are dropped as DropTrainingBacklog.
	LearnBacklog int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Pipeline routes inputs through streams into the buffer. Build it with New,
// hand it inputs through its Sink methods, and run it with Run.
type Pipeline struct {
	opts    Options
	log     *slog.Logger
	shards  []*shard
	streams map[string]*streamState
	bySrc   map[string][]*streamState
	stats   counters
	closing sync.Once
	closed  atomic.Bool
	inMu    sync.RWMutex

	// learnCtx ends when StopLearning is called.
	learnCtx     context.Context
	stopLearning context.CancelFunc
}

// New validates the options and builds the pipeline.
func New(opts Options) (*Pipeline, error) {
	if opts.Device == "" {
		return nil, errors.New("pipeline: Options.Device is empty")
	}
	if opts.Buffer == nil {
		return nil, errors.New("pipeline: Options.Buffer is nil")
	}
	if opts.Queue <= 0 {
		opts.Queue = 8192
	}
	if opts.Shards <= 0 {
		opts.Shards = max(1, min(runtime.NumCPU(), len(opts.Streams)))
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 64
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = 10000
	}
	if opts.LearnBacklog <= 0 {
		opts.LearnBacklog = 100000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{
		opts:    opts,
		log:     opts.Logger.With("component", "pipeline"),
		streams: map[string]*streamState{},
		bySrc:   map[string][]*streamState{},
	}
	p.stats.init()
	p.learnCtx, p.stopLearning = context.WithCancel(context.Background())
	for i := 0; i < opts.Shards; i++ {
		p.shards = append(p.shards, newShard(p, i))
	}
	for i, spec := range opts.Streams {
		st, err := newStreamState(p, spec)
		if err != nil {
			return nil, fmt.Errorf("pipeline: streams[%d] %q: %w", i, spec.Name, err)
		}
		if _, dup := p.streams[spec.Name]; dup {
			return nil, fmt.Errorf("pipeline: streams[%d]: duplicate stream %q", i, spec.Name)
		}
		p.streams[spec.Name] = st
		p.bySrc[spec.Source] = append(p.bySrc[spec.Source], st)
		h := fnv.New32a()
		h.Write([]byte(spec.Name))
		st.shard = p.shards[int(h.Sum32())%len(p.shards)]
		st.shard.streams = append(st.shard.streams, st)
	}
	return p, nil
}

// Put implements source.Sink: it validates the input and blocks until it is
// queued on the shard of each stream it is for, or ctx ends. An invalid
// input is dropped and counted, not returned as an error.
func (p *Pipeline) Put(ctx context.Context, in source.Input) error {
	p.inMu.RLock()
	defer p.inMu.RUnlock()
	if p.closed.Load() {
		return errClosed
	}
	if !p.dispatch(ctx, in, true) {
		return ctx.Err()
	}
	return nil
}

// TryPut implements source.Sink: it validates the input and queues it on
// the shard of each stream it is for that has room. It returns false, and
// counts nothing, when every such queue was full: the source counts that
// drop (queue_full) or answers "busy". When only some were full, the input
// is dropped for those streams, counted here, and TryPut returns true.
func (p *Pipeline) TryPut(in source.Input) bool {
	p.inMu.RLock()
	defer p.inMu.RUnlock()
	if p.closed.Load() {
		return false
	}
	return p.dispatch(context.Background(), in, false)
}

// Drop implements source.Counter, so sources count their drops here.
func (p *Pipeline) Drop(src string, reason source.DropReason, n int) {
	p.stats.drop(src, reason, n)
}

var errClosed = errors.New("pipeline: closed")

// CloseInput stops accepting inputs; Run then drains what was queued, scores
// every complete window, appends it, and returns. A stream that is training
// its model is waited for, and the samples it held meanwhile scored (see
// StopLearning). Call it after the sources have stopped.
func (p *Pipeline) CloseInput() {
	p.closing.Do(func() {
		p.inMu.Lock()
		p.closed.Store(true)
		for _, s := range p.shards {
			close(s.in)
		}
		p.inMu.Unlock()
	})
}

// StopLearning cancels the training of learning streams, so that Run,
// after CloseInput, does not wait for them: call it when the daemon stops
// or reloads. A source that ends (CloseInput alone) lets them finish.
func (p *Pipeline) StopLearning() {
	p.stopLearning()
}

// Run processes inputs until CloseInput has been called and the queues are
// drained, or ctx ends (then queued inputs are abandoned). It returns nil on
// a clean drain.
func (p *Pipeline) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(p.shards))
	for _, s := range p.shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.run(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	var err error
	for e := range errs {
		err = errors.Join(err, e)
	}
	return err
}

// dispatch validates an input and hands it to the shard of each stream it is
// for, waiting for room when block is set. Without block it skips full
// shards, and returns false when it queued the input nowhere (the caller
// counts that drop) or counts the skipped ones as queue_full. With block it
// returns false when ctx ended first.
func (p *Pipeline) dispatch(ctx context.Context, in source.Input, block bool) bool {
	p.stats.inputs.Add(1)
	var targets []*streamState
	if in.Stream != "" {
		st, ok := p.streams[in.Stream]
		if !ok {
			p.stats.drop(in.Source, source.DropUnknown, 1)
			p.log.Debug("input for an unknown stream", "source", in.Source, "stream", in.Stream)
			return true
		}
		targets = []*streamState{st}
	} else {
		targets = p.bySrc[in.Source]
	}
	routed, queued, full := false, false, 0
	for _, st := range targets {
		if (in.Event != nil) != (st.spec.Kind == KindBehaviour) {
			continue // a source may feed a sensor and a behaviour stream
		}
		if in.Event == nil && !finite(in.Values) {
			p.stats.drop(in.Source, source.DropNonFinite, 1)
			return true
		}
		routed = true
		it := shardItem{st: st, in: in}
		if !block {
			select {
			case st.shard.in <- it:
				queued = true
			default:
				full++
			}
			continue
		}
		select {
		case st.shard.in <- it:
		case <-ctx.Done():
			return false
		}
	}
	if !routed {
		p.stats.drop(in.Source, source.DropUnknown, 1)
	}
	if full > 0 && queued {
		p.stats.drop(in.Source, source.DropQueueFull, full)
	}
	return full == 0 || queued
}

func finite(vs []float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return len(vs) > 0
}

// SetThreshold overrides a stream's threshold from its next window on.
func (p *Pipeline) SetThreshold(ctx context.Context, stream string, threshold float64) error {
	st, ok := p.streams[stream]
	if !ok {
		return fmt.Errorf("unknown stream %q", stream)
	}
	if !(threshold > 0) || math.IsInf(threshold, 0) {
		return fmt.Errorf("threshold %v: want a positive finite number", threshold)
	}
	done := make(chan error, 1)
	select {
	case st.shard.ctl <- func() { done <- st.setThreshold(threshold) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// encodeRecord marshals a record for the buffer.
func encodeRecord(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Records are plain structs of strings, numbers and times: only a
		// non-finite float can fail, and scores are clamped before this.
		panic(fmt.Sprintf("pipeline: encode record: %v", err))
	}
	return b
}
