package buffer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Group commit.
//
// Every change (appended records, deletions, cursor updates) is made to the
// in-memory state under Badger.mu by the caller's goroutine, and the matching
// writes are added to the open batch. One goroutine, the committer, swaps the
// open batch for an empty one, writes it to Badger (in one transaction, or
// several if it exceeds Badger's limit), and then either releases its
// waiters (Batched lanes) or hands it to the syncer (Sync lanes). The syncer
// fsyncs once for every batch handed over since its last fsync and releases
// them all; while it waits for the disk, the committer is already writing the
// next batch. Batched writes are fsynced by the syncer at the latest
// FlushInterval after they were written.
//
// Badger runs with SyncWrites off, so fsyncing is ours. Badger's DB.Sync
// covers only the current memtable log and value-log file; a write can land
// in a log that is rotated away before the fsync. fileSyncer therefore
// fsyncs every memtable log that appeared since its previous round, and the
// value-log files too when something was written there.

// laneWrites are the records a batch appends to one lane: consecutive
// sequence numbers starting at lo. A nil entry was removed (evicted, say)
// before it was written, and is not written at all.
type laneWrites struct {
	lo      uint64
	entries []*badger.Entry
}

type cursorRef struct {
	l        *lane[struct{}]
	consumer string
}

// batch is a set of writes committed together.
type batch struct {
	sets     map[*lane[struct{}]]*laneWrites
	lanes    map[*lane[struct{}]]bool // lanes whose state (next, head) changed
	dels     [][]byte
	cursors  map[cursorRef]bool // true: store the cursor, false: delete it
	raw      []*badger.Entry    // written as they are (open, tests)
	ops      int                // zero: nothing to commit
	needSync bool
	bigValue bool // some value goes to the value log

	done   chan struct{}     // closed when committed (and fsynced if needSync)
	err    error             // set before done is closed
	synced map[string]uint64 // records per lane the fsync that released the batch made durable
}

func newBatch() *batch {
	return &batch{
		sets:    make(map[*lane[struct{}]]*laneWrites),
		lanes:   make(map[*lane[struct{}]]bool),
		cursors: make(map[cursorRef]bool),
		done:    make(chan struct{}),
	}
}

// metaWrites is the lane and cursor state a batch stores, encoded when the
// batch is swapped out so that it reflects every change the batch carries.
type metaWrites struct {
	lanes   []*badger.Entry
	cursors []*badger.Entry
	delCurs [][]byte
}

// metaEntries encodes the lane and cursor state bt must store. Call with mu
// held.
func (b *Badger) metaEntries(bt *batch) metaWrites {
	var m metaWrites
	for l := range bt.lanes {
		v := encodeLaneMeta(l.opts.Name, l.next, l.oldest())
		m.lanes = append(m.lanes, &badger.Entry{Key: laneMetaKey(l.opts.Name), Value: v})
	}
	for ref, keep := range bt.cursors {
		k := cursorKey(ref.l.opts.Name, ref.consumer)
		c, ok := ref.l.cursors[ref.consumer]
		if !keep || !ok {
			m.delCurs = append(m.delCurs, k)
			continue
		}
		m.cursors = append(m.cursors, &badger.Entry{Key: k, Value: encodeCursor(k, c.floor, c.pending)})
	}
	return m
}

// writeBatch writes bt to Badger: lane states first, so that a record that
// reached the disk never has a sequence number above its lane's stored next
// number; then records, deletions and cursors.
//
// A batch larger than Badger's transaction limit is split into several
// transactions, committed in order; all but the last are committed without
// waiting, like Badger's WriteBatch does, but without its extra transaction.
func (b *Badger) writeBatch(bt *batch, m metaWrites) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	txn := b.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	apply := func(op func(*badger.Txn) error) error {
		err := op(txn)
		if !errors.Is(err, badger.ErrTxnTooBig) {
			return err
		}
		wg.Add(1)
		txn.CommitWith(func(err error) {
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			wg.Done()
		})
		txn = b.db.NewTransaction(true)
		return op(txn)
	}
	set := func(e *badger.Entry) error {
		if e == nil {
			return nil
		}
		return apply(func(t *badger.Txn) error { return t.SetEntry(e) })
	}
	del := func(k []byte) error {
		return apply(func(t *badger.Txn) error { return t.Delete(k) })
	}
	err := func() error {
		for _, group := range [][]*badger.Entry{bt.raw, m.lanes} {
			for _, e := range group {
				if err := set(e); err != nil {
					return err
				}
			}
		}
		for _, w := range bt.sets {
			for _, e := range w.entries {
				if err := set(e); err != nil {
					return err
				}
			}
		}
		for _, k := range bt.dels {
			if err := del(k); err != nil {
				return err
			}
		}
		for _, e := range m.cursors {
			if err := set(e); err != nil {
				return err
			}
		}
		for _, k := range m.delCurs {
			if err := del(k); err != nil {
				return err
			}
		}
		return txn.Commit()
	}()
	wg.Wait()
	return errors.Join(append(errs, err)...)
}

// kick tells the committer there is work. Call with mu held.
func (b *Badger) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// commitLoop is the committer goroutine.
func (b *Badger) commitLoop() {
	defer b.wg.Done()
	defer close(b.syncQ)
	for {
		select {
		case <-b.wake:
			b.commitOpen()
		case <-b.stop:
			b.commitOpen() // Close made sure nothing new comes in
			return
		}
	}
}

// commitOpen commits the open batch if it holds anything.
func (b *Badger) commitOpen() {
	// writeMu is taken before the swap, so that whoever holds it knows no
	// batch is between the swap and the disk (see Badger.collect).
	b.writeMu.Lock()
	b.mu.Lock()
	bt := b.open
	if bt.ops == 0 {
		b.mu.Unlock()
		b.writeMu.Unlock()
		return
	}
	b.open = newBatch()
	meta := b.metaEntries(bt)
	b.mu.Unlock()
	err := b.writeBatch(bt, meta)
	b.prepareMem()
	b.writeMu.Unlock()
	if bt.bigValue {
		b.syncer.vlogDirty.Store(true)
	}
	b.dirty.Store(true)

	b.mu.Lock()
	if err != nil {
		err = fmt.Errorf("buffer: write to badger: %w", err)
		if isNoSpace(err) {
			b.disk.lastErr = err.Error()
		}
		if b.failed == nil {
			b.failed = err
			b.log.Error("buffer storage failed; close and reopen the buffer", "err", err)
		}
	}
	for l, w := range bt.sets {
		if hi := w.lo + uint64(len(w.entries)) - 1; err == nil && hi > l.done {
			l.done = hi
		}
		if err == nil {
			b.countWritten(l.opts.Name, w.entries)
		}
		l.signal()
	}
	b.mu.Unlock()

	if err != nil || !bt.needSync {
		bt.err = err
		close(bt.done)
		return
	}
	b.syncQ <- bt
}

// syncLoop is the syncer goroutine.
func (b *Badger) syncLoop() {
	defer b.wg.Done()
	tick := time.NewTicker(b.opts.FlushInterval)
	defer tick.Stop()
	for {
		var waiting []*batch
		select {
		case bt, ok := <-b.syncQ:
			if !ok {
				if b.dirty.Load() {
					b.fsync()
				}
				return
			}
			waiting = append(waiting, bt)
		drain:
			for {
				select {
				case bt, ok := <-b.syncQ:
					if !ok {
						break drain
					}
					waiting = append(waiting, bt)
				default:
					break drain
				}
			}
		case <-tick.C:
			if !b.dirty.Load() {
				continue
			}
		}
		synced, err := b.fsyncCounted()
		for _, bt := range waiting {
			bt.err, bt.synced = err, synced
			close(bt.done)
		}
	}
}

// fsync makes everything written so far durable.
func (b *Badger) fsync() error {
	_, err := b.fsyncCounted()
	return err
}

// fsyncCounted is fsync, returning how many records of each lane were
// written since the previous round (and so made durable by this one).
func (b *Badger) fsyncCounted() (map[string]uint64, error) {
	b.mu.Lock()
	synced := b.written
	b.written = nil
	b.mu.Unlock()
	b.dirty.Store(false)
	marks := b.doneMarks() // made durable by this round
	// The watermarks of the previous round are fsynced alongside.
	var markErr error
	var wg sync.WaitGroup
	wg.Go(func() { markErr = b.synced.flush() })
	err := b.syncer.sync()
	wg.Wait()
	if err == nil && markErr == nil {
		markErr = b.synced.write(marks)
	}
	if markErr != nil {
		b.log.Warn("writing the watermark file failed", "err", markErr)
	}
	if err != nil {
		err = fmt.Errorf("buffer: fsync: %w", err)
		b.mu.Lock()
		if b.failed == nil {
			b.failed = err
			b.log.Error("buffer storage failed; close and reopen the buffer", "err", err)
		}
		b.mu.Unlock()
		// Not durable after all: count them again for the next round.
		b.mu.Lock()
		for lane, n := range synced {
			b.written = addCount(b.written, lane, n)
		}
		b.mu.Unlock()
		return nil, err
	}
	return synced, nil
}

// fileSyncer fsyncs Badger's logs.
type fileSyncer struct {
	dir       string
	vlogDirty atomic.Bool // something went to the value log since the last round
	rounds    atomic.Int64

	mu        sync.Mutex
	memFloor  int64 // memtable logs below this were flushed or synced
	vlogFloor int64 // likewise for value-log files
}

// sync fsyncs every memtable log that may hold unsynced writes (the newest
// one and any created since the last round), and the value-log files
// likewise when vlogDirty is set.
func (f *fileSyncer) sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rounds.Add(1)
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		return err
	}
	syncVlog := f.vlogDirty.Swap(false)
	memMax, vlogMax := f.memFloor, f.vlogFloor
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if fid, ok := fileID(name, ".mem"); ok && fid >= f.memFloor {
			errs = append(errs, fsyncPath(filepath.Join(f.dir, name)))
			memMax = max(memMax, fid)
		} else if fid, ok := fileID(name, ".vlog"); ok && syncVlog && fid >= f.vlogFloor {
			errs = append(errs, fsyncPath(filepath.Join(f.dir, name)))
			vlogMax = max(vlogMax, fid)
		}
	}
	if err := errors.Join(errs...); err != nil {
		if syncVlog {
			f.vlogDirty.Store(true)
		}
		return err
	}
	f.memFloor, f.vlogFloor = memMax, vlogMax
	return nil
}

func fileID(name, ext string) (int64, bool) {
	base, ok := strings.CutSuffix(name, ext)
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(base, 10, 64)
	return id, err == nil
}

// fsyncPath fsyncs a file; a file that is gone (a memtable log flushed to a
// table meanwhile) needs nothing.
func fsyncPath(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
