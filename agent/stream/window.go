// Package stream turns a stream's inputs into the windows its model scores:
// sliding windows of sensor samples (length and hop from the model's
// manifest) and, for behaviour streams, per-key feature vectors computed
// from each user's recent events.
package stream

import (
	"fmt"
	"time"
)

// Windower cuts a sensor stream into overlapping windows of Length samples,
// one every Hop samples. Samples are kept in a ring, so memory is bounded by
// one window whatever the stream's rate.
type Windower struct {
	length, hop, channels int
	ring                  []float64 // length × channels, row i at (start+i)%length
	times                 []time.Time
	start, n              int
	sinceEmit             int
	emitted               bool // the first window has been emitted
	// runs[c]: how many samples in a row, up to the newest, channel c has
	// read the same value (the stuck-sensor check, detect.StuckLimits).
	// It reaches back beyond the window, as a frozen sensor does.
	runs []int
}

// NewWindower returns a Windower for windows of length samples of channels
// values, emitted every hop samples.
func NewWindower(length, hop, channels int) (*Windower, error) {
	switch {
	case length < 1:
		return nil, fmt.Errorf("stream: window length %d, want ≥ 1", length)
	case hop < 1:
		return nil, fmt.Errorf("stream: hop %d, want ≥ 1", hop)
	case channels < 1:
		return nil, fmt.Errorf("stream: %d channels, want ≥ 1", channels)
	}
	return &Windower{
		length: length, hop: hop, channels: channels,
		ring:  make([]float64, length*channels),
		times: make([]time.Time, length),
		runs:  make([]int, channels),
	}, nil
}

// Len is the window length in samples.
func (w *Windower) Len() int { return w.length }

// Push adds one sample (len(values) == channels) taken at t. When a window
// is complete it is copied into dst (length×channels values, oldest first)
// and Push returns true with the window's first and last sample times.
func (w *Windower) Push(t time.Time, values []float64, dst []float64) (start, end time.Time, ok bool) {
	fresh := w.n == 0 // no sample before this one
	var row int
	if w.n < w.length {
		row = (w.start + w.n) % w.length
		w.n++
	} else {
		row = w.start
		w.start = (w.start + 1) % w.length
	}
	prev := row - 1 // the newest sample's row, read before it is overwritten
	if prev < 0 {
		prev = w.length - 1
	}
	off, poff := row*w.channels, prev*w.channels
	ring, runs := w.ring[off:off+w.channels], w.runs[:w.channels]
	pring := w.ring[poff : poff+w.channels]
	for i, v := range values[:w.channels] {
		if !fresh && v == pring[i] {
			runs[i]++
		} else {
			runs[i] = 1
		}
		ring[i] = v
	}
	w.times[row] = t
	w.sinceEmit++
	if w.n < w.length {
		return time.Time{}, time.Time{}, false
	}
	// The first window is emitted as soon as it is full; then every hop.
	if w.emitted && w.sinceEmit < w.hop {
		return time.Time{}, time.Time{}, false
	}
	w.emitted = true
	w.sinceEmit = 0
	first := w.start * w.channels
	k := copy(dst, w.ring[first:])
	copy(dst[k:], w.ring[:first])
	return w.times[w.start], t, true
}

// Runs returns, per channel, how many samples in a row up to the newest
// have read the same value (NaN never equals itself): 1 for a value that
// differs from the one before, 0 before the first sample. It counts back
// beyond the window, to the last Reset. The slice is the Windower's own;
// it changes at the next Push.
func (w *Windower) Runs() []int { return w.runs }

// Reset forgets every sample (after a gap in the stream, or a model change).
func (w *Windower) Reset() {
	w.start, w.n, w.sinceEmit, w.emitted = 0, 0, 0, false
	clear(w.runs)
}
