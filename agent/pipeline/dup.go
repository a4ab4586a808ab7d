package pipeline

import (
	"hash/maphash"
	"time"
	"unsafe"
)

// dupFilter tells a duplicate sample from one that merely shares its time
// with others: sensors that stamp in seconds at more than 1 Hz, or in
// milliseconds in bursts above 1 kHz, send many samples with one time, and
// all of them count. A duplicate is a sample whose message id the stream
// took recently, or, without an id, one with the time and the values of a
// sample the stream took.
type dupFilter struct {
	have  bool
	at    time.Time // the newest time taken
	first uint64    // hash of the values of the first sample taken at at
	more  map[uint64]struct{}

	ids  map[string]struct{} // the latest recentIDs message ids
	ring []string
	head int
}

const (
	// recentIDs is how many message ids a stream remembers.
	recentIDs = 1024
	// maxSameTime bounds the samples at one time whose values are
	// remembered; beyond it, later ones are taken without the check.
	maxSameTime = 1 << 16
)

var dupSeed = maphash.MakeSeed()

// seenID reports whether the stream took a sample with message id id
// among its latest recentIDs.
func (f *dupFilter) seenID(id string) bool {
	_, ok := f.ids[id]
	return ok
}

// duplicate reports whether a sample at t, not before any time the stream
// took, with message id id (or "") and values vals is one the stream took,
// and remembers it when it is not.
func (f *dupFilter) duplicate(t time.Time, id string, vals []float64) bool {
	if id != "" {
		if _, ok := f.ids[id]; ok {
			return true
		}
		if f.ids == nil {
			f.ids = make(map[string]struct{}, recentIDs)
			f.ring = make([]string, recentIDs)
		}
		if old := f.ring[f.head]; old != "" {
			delete(f.ids, old)
		}
		f.ring[f.head] = id
		f.head = (f.head + 1) % recentIDs
		f.ids[id] = struct{}{}
		return false
	}
	var h uint64
	if len(vals) > 0 {
		h = maphash.Bytes(dupSeed, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(vals))), len(vals)*8))
	}
	if !f.have || !t.Equal(f.at) {
		f.have, f.at, f.first = true, t, h
		if len(f.more) > 0 {
			clear(f.more)
		}
		return false
	}
	if h == f.first {
		return true
	}
	if _, ok := f.more[h]; ok {
		return true
	}
	if f.more == nil {
		f.more = map[uint64]struct{}{}
	}
	if len(f.more) < maxSameTime {
		f.more[h] = struct{}{}
	}
	return false
}

// reset forgets the values at the newest time (after the timeline moved
// back); message ids stay remembered.
func (f *dupFilter) reset() {
	f.have = false
	if len(f.more) > 0 {
		clear(f.more)
	}
}

// endSeq numbers the windows that end at one time: 0 for the first, then
// 1, 2, ..., so that each gets its own record id (record.IDSeq).
type endSeq struct {
	last time.Time
	n    int
}

func (e *endSeq) next(end time.Time) int {
	if end.Equal(e.last) {
		e.n++
	} else {
		e.last, e.n = end, 0
	}
	return e.n
}
