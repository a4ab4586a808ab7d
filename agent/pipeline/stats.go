package pipeline

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/source"
)

// counters are the pipeline's own numbers. Hot-path counters are atomics;
// drops by reason sit behind a mutex (drops are the exception).
type counters struct {
	inputs, scores, alerts atomic.Uint64
	batches, windows       atomic.Uint64

	mu    sync.Mutex
	drops map[dropKey]uint64
	lat   ring                              // per-window inference latency, ns
	hist  [len(InferenceBuckets) + 1]uint64 // per-window latency histogram (last: +Inf)
	hsum  float64                           // seconds, over every window observed

	// The last append that failed, cleared by the next one that succeeds.
	appendErr atomic.Pointer[string]

	logMu   sync.Mutex
	lastLog time.Time
	muted   int
}

type dropKey struct {
	source string
	reason source.DropReason
}

func (c *counters) init() {
	c.drops = map[dropKey]uint64{}
	c.lat.vals = make([]float64, 2048)
}

func (c *counters) drop(src string, reason source.DropReason, n int) {
	c.mu.Lock()
	c.drops[dropKey{src, reason}] += uint64(n)
	c.mu.Unlock()
}

func (c *counters) observeInference(d time.Duration, windows int) {
	c.batches.Add(1)
	c.windows.Add(uint64(windows))
	per := float64(d.Nanoseconds()) / float64(windows)
	i, _ := slices.BinarySearch(InferenceBuckets[:], per/1e9)
	c.mu.Lock()
	c.lat.add(per)
	c.hist[i] += uint64(windows)
	c.hsum += d.Seconds()
	c.mu.Unlock()
}

// InferenceBuckets are the upper bounds, in seconds, of the per-window
// inference latency histogram: 10µs to 1s.
var InferenceBuckets = [...]float64{1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1}

// Histogram is a cumulative histogram: Counts[i] observations at or below
// Bounds[i]; Count all of them; Sum their total.
type Histogram struct {
	Bounds []float64 `json:"-"`
	Counts []uint64  `json:"-"`
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum_s"`
}

// ShardStats is one shard's input queue and the inputs it has taken from it:
// a queue that holds inputs while Handled stays put is a stalled shard.
type ShardStats struct {
	Queued  int    `json:"queued"`
	Handled uint64 `json:"handled"`
}

// logRateLimited logs at most one line a second; the lines it held back are
// counted in the next one.
func (p *Pipeline) logRateLimited(msg string, args ...any) {
	c := &p.stats
	c.logMu.Lock()
	now := time.Now()
	if now.Sub(c.lastLog) < time.Second {
		c.muted++
		c.logMu.Unlock()
		return
	}
	muted := c.muted
	c.lastLog, c.muted = now, 0
	c.logMu.Unlock()
	if muted > 0 {
		args = append(args, "suppressed", muted)
	}
	p.log.Warn(msg, args...)
}

// ring keeps the latest values for quantiles.
type ring struct {
	vals []float64
	n    int
}

func (r *ring) add(v float64) {
	r.vals[r.n%len(r.vals)] = v
	r.n++
}

func (r *ring) quantiles(qs ...float64) []float64 {
	n := min(r.n, len(r.vals))
	out := make([]float64, len(qs))
	if n == 0 {
		return out
	}
	s := slices.Clone(r.vals[:n])
	slices.Sort(s)
	for i, q := range qs {
		out[i] = s[min(n-1, int(q*float64(n)))]
	}
	return out
}

// Stats is a snapshot of the pipeline for health and metrics.
type Stats struct {
	Inputs  uint64 `json:"inputs"`
	Scores  uint64 `json:"scores"`
	Alerts  uint64 `json:"alerts"`
	Windows uint64 `json:"windows_scored"`
	Batches uint64 `json:"batches"`
	// Drops counts dropped inputs by source and reason.
	Drops []Drop `json:"drops"`
	// InferenceP50 and P99 are per-window inference latencies over the
	// latest 2048 batches.
	InferenceP50 time.Duration          `json:"inference_p50_ns"`
	InferenceP99 time.Duration          `json:"inference_p99_ns"`
	QueueLen     int                    `json:"queue_len"`
	QueueCap     int                    `json:"queue_cap"`
	Streams      map[string]StreamStats `json:"streams"`
	// Inference is the per-window inference latency histogram (seconds),
	// over every window since the start.
	Inference Histogram `json:"inference"`
	// Shards are the shards' queues and progress, for the liveness probe.
	Shards []ShardStats `json:"shards"`
	// AppendError is the error of the last append to the buffer, if it
	// failed; the next append that succeeds clears it.
	AppendError string `json:"append_error,omitempty"`
}

// Drop is the number of inputs dropped for one reason.
type Drop struct {
	Source string `json:"source,omitempty"`
	Reason string `json:"reason"`
	Count  uint64 `json:"count"`
}

// StreamStats describes one stream.
type StreamStats struct {
	Kind      string  `json:"kind"`
	State     string  `json:"state"`
	Model     string  `json:"model,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
	Windows   uint64  `json:"windows"`
	Alerts    uint64  `json:"alerts"`
	Keys      int     `json:"keys,omitempty"`
	KeyEvicts uint64  `json:"key_evictions,omitempty"`
	// KeyEvictsOpen counts the evictions that closed an open episode
	// (every tracked key had one).
	KeyEvictsOpen uint64 `json:"key_evictions_open_episode,omitempty"`
	Learned       int    `json:"learn_samples,omitempty"`
	LearnTarget   int    `json:"learn_target,omitempty"`
	Held          int    `json:"held_while_training,omitempty"`    // samples held to score once the learnt model is installed
	Skipped       uint64 `json:"skipped_while_training,omitempty"` // samples dropped beyond the held ones (training_backlog_full)
	LearnError    string `json:"learn_error,omitempty"`
	// Episode alerts by change (open, escalated, reopened, closed), and
	// the anomalies that continued an episode waiting to close instead of
	// closing and reopening it (episodes.close_after).
	Episodes        map[string]uint64 `json:"episodes,omitempty"`
	SuppressedFlips uint64            `json:"suppressed_flips,omitempty"`
	// StuckWindows counts the windows that ended with a channel stuck
	// (one value for longer than the model allows).
	StuckWindows uint64 `json:"stuck_windows,omitempty"`
	// ShiftWindows counts the windows with a level shift over its limit.
	ShiftWindows uint64 `json:"shift_windows,omitempty"`
}

// Stats returns a snapshot. It is safe to call from any goroutine.
func (p *Pipeline) Stats() Stats {
	c := &p.stats
	s := Stats{
		Inputs:  c.inputs.Load(),
		Scores:  c.scores.Load(),
		Alerts:  c.alerts.Load(),
		Windows: c.windows.Load(),
		Batches: c.batches.Load(),
		Streams: map[string]StreamStats{},
	}
	for _, sh := range p.shards {
		s.QueueLen += len(sh.in)
		s.QueueCap += cap(sh.in)
		s.Shards = append(s.Shards, ShardStats{Queued: len(sh.in), Handled: sh.handled.Load()})
	}
	if e := c.appendErr.Load(); e != nil {
		s.AppendError = *e
	}
	s.Inference.Bounds = InferenceBuckets[:]
	s.Inference.Counts = make([]uint64, len(InferenceBuckets))
	c.mu.Lock()
	var cum uint64
	for i := range InferenceBuckets {
		cum += c.hist[i]
		s.Inference.Counts[i] = cum
	}
	s.Inference.Count = cum + c.hist[len(InferenceBuckets)]
	s.Inference.Sum = c.hsum
	for k, n := range c.drops {
		s.Drops = append(s.Drops, Drop{Source: k.source, Reason: string(k.reason), Count: n})
	}
	q := c.lat.quantiles(0.5, 0.99)
	c.mu.Unlock()
	slices.SortFunc(s.Drops, func(a, b Drop) int {
		if a.Source != b.Source {
			if a.Source < b.Source {
				return -1
			}
			return 1
		}
		if a.Reason < b.Reason {
			return -1
		}
		if a.Reason > b.Reason {
			return 1
		}
		return 0
	})
	s.InferenceP50, s.InferenceP99 = time.Duration(q[0]), time.Duration(q[1])
	for name, st := range p.streams {
		st.mu.Lock()
		ss := StreamStats{
			Kind: st.spec.Kind, State: st.state, Model: st.modelID, Threshold: st.threshold,
			LearnTarget: st.spec.Learn, LearnError: st.learnErr,
		}
		st.mu.Unlock()
		ss.Windows, ss.Alerts, ss.Skipped = st.windows.Load(), st.alerts.Load(), st.skipped.Load()
		ss.KeyEvicts, ss.KeyEvictsOpen = st.evicts.Load(), st.evictsOpen.Load()
		ss.Episodes = map[string]uint64{}
		for c := detect.Open; c <= detect.Close; c++ {
			ss.Episodes[c.State()] = st.changes[c].Load()
		}
		ss.SuppressedFlips = st.flips.Load()
		ss.StuckWindows = st.stuck.Load()
		ss.ShiftWindows = st.shifted.Load()
		ss.Keys = int(st.nkeys.Load())
		ss.Learned = int(st.learned.Load())
		ss.Held = int(st.nheld.Load())
		s.Streams[name] = ss
	}
	return s
}

// DropTotal is the number of inputs dropped for any reason.
func (s Stats) DropTotal() uint64 {
	var n uint64
	for _, d := range s.Drops {
		n += d.Count
	}
	return n
}
