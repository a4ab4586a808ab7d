package testkit

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
)

// Lanes is an in-memory buffer for tests, the pipeline's Appender: it
// keeps a copy of each record appended to a lane, in order, and numbers
// them from 1 per lane; with Err set it refuses every append. Safe for
// concurrent use.
type Lanes struct {
	// Err, when set, is what every Append returns (a full or failing
	// buffer).
	Err   error
	mu    sync.Mutex
	lanes map[string][][]byte
}

// Append implements the pipeline's Appender.
func (l *Lanes) Append(_ context.Context, lane string, data ...[]byte) ([]uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Err != nil {
		return nil, l.Err
	}
	if l.lanes == nil {
		l.lanes = map[string][][]byte{}
	}
	seqs := make([]uint64, len(data))
	for i, d := range data {
		l.lanes[lane] = append(l.lanes[lane], slices.Clone(d))
		seqs[i] = uint64(len(l.lanes[lane]))
	}
	return seqs, nil
}

// Lane returns the records appended to lane so far.
func (l *Lanes) Lane(lane string) [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lanes[lane])
}

// Decode decodes every record appended to lane as a T, failing the test
// on one that is not.
func Decode[T any](tb testing.TB, l *Lanes, lane string) []T {
	tb.Helper()
	var out []T
	for _, d := range l.Lane(lane) {
		var v T
		if err := json.Unmarshal(d, &v); err != nil {
			tb.Fatalf("lane %s: %v: %s", lane, err, d)
		}
		out = append(out, v)
	}
	return out
}
