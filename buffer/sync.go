package buffer

import (
	"context"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Syncer is a buffer that can be asked to make everything it holds durable
// now, rather than within [Options.FlushInterval]. [*Badger] and [*Memory]
// implement it.
type Syncer interface {
	Sync(ctx context.Context) (SyncResult, error)
}

var (
	_ Syncer = (*Badger)(nil)
	_ Syncer = (*Memory)(nil)
)

// SyncResult says what a Sync did.
type SyncResult struct {
	// Disk is false for a buffer that keeps nothing on disk ([*Memory]):
	// its Sync has nothing to make durable.
	Disk bool
	// Lanes has an entry for every lane of the buffer.
	Lanes map[string]LaneSync
}

// LaneSync is what a Sync did for one lane.
type LaneSync struct {
	// Synced is the number of records of the lane written to the storage
	// engine since the previous fsync and made durable by the fsync that
	// ended this Sync. A record of a Sync lane is fsynced before its Append
	// returns, so it counts here only when that fsync is the same one.
	Synced uint64
	// Durable is the highest sequence number of the lane that is durable
	// when Sync returns: every appended record up to it (not deleted since)
	// survives a power loss. 0 when the lane never held a record.
	Durable uint64
	// Records is the number of records the lane holds.
	Records int
}

// Sync fsyncs everything written so far, including the records of
// [Batched] lanes that would otherwise wait for the next FlushInterval, and
// returns when it is durable. It shares its fsync with concurrent appends to
// Sync lanes (group commit).
func (b *Badger) Sync(ctx context.Context) (SyncResult, error) {
	b.mu.Lock()
	if err := b.usable(); err != nil {
		b.mu.Unlock()
		return SyncResult{}, fmt.Errorf("sync: %w", err)
	}
	// Every Append that returned has been written by the committer (a
	// Batched Append waits for that, a Sync one for the fsync too); those in
	// flight are in the open batch or an earlier one. Committing the open
	// batch with needSync makes all of them durable when it is released.
	durable := make(map[string]uint64, len(b.st.lanes))
	for name, l := range b.st.lanes {
		durable[name] = l.next - 1
	}
	bt := b.open
	bt.ops++
	bt.needSync = true
	b.kick()
	b.mu.Unlock()
	if err := wait(ctx, bt); err != nil {
		return SyncResult{}, fmt.Errorf("sync: %w", err)
	}
	st := b.Stats()
	res := SyncResult{Disk: true, Lanes: make(map[string]LaneSync, len(durable))}
	for name, seq := range durable {
		res.Lanes[name] = LaneSync{Synced: bt.synced[name], Durable: seq, Records: st.Lanes[name].Records}
	}
	return res, nil
}

// Sync has nothing to make durable: it reports each lane's records, with
// Disk false and nothing synced.
func (m *Memory) Sync(ctx context.Context) (SyncResult, error) {
	if err := ctx.Err(); err != nil {
		return SyncResult{}, fmt.Errorf("sync: %w", err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return SyncResult{}, fmt.Errorf("sync: %w", ErrClosed)
	}
	m.mu.Unlock()
	st := m.Stats()
	res := SyncResult{Lanes: make(map[string]LaneSync, len(st.Lanes))}
	for name, l := range st.Lanes {
		res.Lanes[name] = LaneSync{Records: l.Records}
	}
	return res, nil
}

// countWritten adds the records of entries (nil ones were removed before
// they were written) to b.written. b.mu is held.
func (b *Badger) countWritten(lane string, entries []*badger.Entry) {
	var n uint64
	for _, e := range entries {
		if e != nil {
			n++
		}
	}
	if n > 0 {
		b.written = addCount(b.written, lane, n)
	}
}

func addCount(m map[string]uint64, lane string, n uint64) map[string]uint64 {
	if m == nil {
		m = make(map[string]uint64)
	}
	m[lane] += n
	return m
}
