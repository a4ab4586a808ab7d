package buffer

import (
	"context"
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Giving space back.
//
// A buffer deletes mostly from the front of its lanes (acknowledged,
// evicted, expired records): a queue, the worst case for an LSM tree. Each
// tombstone is a few dozen bytes but hides a whole record, and compaction,
// which looks at sizes, leaves tombstones in the upper levels while the
// records they hide fill the bottom one: with tombstones, disk use reached
// three times the cap in tests. So records removed from the front of a lane
// get no tombstone. The lane's head (its oldest retained sequence number) is
// stored instead, and records are written in segments shared by all lanes
// (part of the key; a new one every segmentBytes and at every reclaim): once
// a lane's head has left a segment, the lane's part of it is dropped with
// DropPrefix, which rewrites only the tables holding it. Records removed from
// the middle of a lane (out-of-order acks) get tombstones as usual.
//
// Records too large to be stored inline live in the value log, which shrinks
// only by value-log GC, and GC only knows what is garbage once compaction
// has dropped the records' pointers. DropPrefix does, but not for pointers
// still in a memtable (a flush drops them without counting them), and
// pointers deleted by tombstone can sit in a memtable for long. So before
// dropping segments that may hold such pointers, and when enough tombstoned
// value-log bytes pile up, the memtables are flushed first (see forceFlush).
// GC runs after every reclaim, and every GCInterval.

// dropThreshold is how many bytes removed from lane heads (or deleted by
// tombstone from the value log) trigger a reclaim.
func (b *Badger) dropThreshold() int64 {
	return max(b.opts.MaxBytes/16, 2*b.segmentBytes())
}

// maintain is the maintenance goroutine: TTL sweeps and reclaiming space.
func (b *Badger) maintain() {
	defer b.wg.Done()
	gc := time.NewTicker(b.opts.GCInterval)
	defer gc.Stop()
	expire := time.NewTicker(b.opts.ExpireInterval)
	defer expire.Stop()
	ballast := time.NewTicker(ballastCheckEvery)
	defer ballast.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-ballast.C:
			b.watchBallast()
		case <-expire.C:
			b.mu.Lock()
			if !b.closed {
				b.st.expireAll()
			}
			b.mu.Unlock()
		case <-gc.C:
			b.collect()
		case <-b.reclaim:
			b.collect()
		}
	}
}

// maxDropPrefixes bounds the prefixes of one DropPrefix call (Badger checks
// each with an iterator).
const maxDropPrefixes = 256

// collect drops the segments every lane's head has left, then runs
// value-log GC.
func (b *Badger) collect() {
	defer b.gcRuns.Add(1)
	defer func() {
		b.mu.Lock()
		b.reclaiming = 0
		close(b.reclaimDone)
		b.reclaimDone = make(chan struct{})
		b.mu.Unlock()
	}()
	// With writeMu held no batch is between the swap and the disk, so every
	// record of a segment below a head is either written or never will be.
	b.writeMu.Lock()
	b.mu.Lock()
	// Close the current segment, so that lanes emptied since can let go of
	// it too.
	if b.st.segBytes > 0 {
		b.st.closeSegment()
	}
	var prefixes [][]byte
	undo := map[*lane[struct{}]]uint32{} // dropFrom before, should the drop fail
	for _, l := range b.st.byPrio {
		undo[l] = l.dropFrom
		head := b.st.seg
		if len(l.idx.slots) > 0 {
			head = l.idx.slots[0].seg
		}
		for ; l.dropFrom < head && len(prefixes) < maxDropPrefixes; l.dropFrom++ {
			prefixes = append(prefixes, segmentPrefix(l.dropFrom, l.name))
		}
	}
	// Flush the memtables first if they may hold pointers into the value
	// log that are about to be dropped or were deleted: Badger counts value
	// log garbage only when compaction drops a pointer, not when a memtable
	// flush does.
	flush := b.vlogDead >= b.dropThreshold() || (b.bigSinceCollect && len(prefixes) > 0)
	b.reclaiming = b.frontBytes
	b.frontBytes = 0
	if flush {
		b.reclaiming += b.vlogDead
		b.vlogDead = 0
		b.bigSinceCollect = false
	}
	closed := b.closed
	b.mu.Unlock()
	if closed {
		b.writeMu.Unlock()
		return
	}
	if flush {
		if err := b.forceFlush(); err != nil {
			b.log.Warn("flushing memtables failed; retrying later", "err", err)
		}
	}
	if len(prefixes) > 0 {
		// Badger refuses writes during DropPrefix; ours wait for writeMu.
		if err := b.db.DropPrefix(prefixes...); err != nil {
			b.log.Warn("dropping deleted segments failed; retrying later", "err", err)
			b.mu.Lock()
			for l, from := range undo {
				l.dropFrom = min(l.dropFrom, from)
			}
			b.mu.Unlock()
		}
	}
	b.prepareMem()
	b.writeMu.Unlock()
	b.valueLogGC()
}

// forceFlush makes Badger flush its memtables and compact level 0. Badger
// has no call for that; DropPrefix does it on the way, so a throw-away key
// is written and its prefix dropped. Call with writeMu held.
func (b *Badger) forceFlush() error {
	if err := b.db.Update(func(txn *badger.Txn) error { return txn.Set(keyFlush, []byte{}) }); err != nil {
		return err
	}
	return b.db.DropPrefix(keyFlush)
}

// valueLogGC rewrites value-log files until none holds enough garbage.
//
// Badger deletes a rewritten file at once unless an iterator is open, and
// it does not fsync the rewritten values first: a power loss right after
// would lose them. So an iterator stays open during GC, the rewrite is
// fsynced, and closing the iterator lets Badger delete the old files.
func (b *Badger) valueLogGC() {
	txn := b.db.NewTransaction(false)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: keyFlush})
	rewritten := 0
	for rewritten < 64 {
		err := b.db.RunValueLogGC(b.opts.GCDiscardRatio)
		if err != nil {
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				b.log.Warn("value-log GC failed", "err", err)
			}
			break
		}
		rewritten++
	}
	if rewritten > 0 {
		b.syncer.vlogDirty.Store(true)
		_ = b.fsync() // a failure is sticky and logged
	}
	it.Close()
	txn.Discard()
}

// waitForReclaim holds an append back while more than twice dropThreshold
// of deleted records wait to be given back: when appends outrun the
// reclaim, disk use would otherwise grow without bound. Call with mu held;
// it may release it meanwhile.
func (b *Badger) waitForReclaim(ctx context.Context) error {
	limit := 2 * b.dropThreshold()
	for b.frontBytes+b.vlogDead+b.reclaiming >= limit {
		b.triggerReclaim()
		done := b.reclaimDone
		b.mu.Unlock()
		var err error
		select {
		case <-done:
		case <-b.stop:
			err = ErrClosed
		case <-ctx.Done():
			err = ctx.Err()
		}
		b.mu.Lock()
		if err != nil {
			return err
		}
		if err := b.usable(); err != nil {
			return err
		}
	}
	return nil
}
