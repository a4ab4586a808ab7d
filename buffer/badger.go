package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// BadgerOptions configures a [Badger] buffer. Start from
// [DefaultBadgerOptions].
type BadgerOptions struct {
	Options
	// Dir is the directory of the buffer; it is created if missing.
	Dir string
	// MemoryBudget bounds the memory Badger itself uses (memtables, caches,
	// mapped logs); the buffer's index adds about 24 bytes per record. See
	// the tuning notes in the package source.
	MemoryBudget int64
	// GCInterval is how often the value log is garbage collected.
	GCInterval time.Duration
	// GCDiscardRatio is the share of garbage a value-log file must hold to
	// be rewritten, in (0, 1). Lower keeps the value log closer to its live
	// size and rewrites more; the default, 0.25, is below Badger's usual 0.5
	// because disk use is what a small device runs out of.
	GCDiscardRatio float64
}

// Defaults used by [DefaultBadgerOptions].
const (
	DefaultMemoryBudget   = 32 << 20
	DefaultGCInterval     = time.Minute
	DefaultGCDiscardRatio = 0.25
	minMemoryBudget       = 16 << 20
)

// DefaultBadgerOptions returns [DefaultOptions] for a buffer in dir, with a
// 32 MiB memory budget and value-log GC every minute. Set Options.Lanes.
func DefaultBadgerOptions(dir string) BadgerOptions {
	return BadgerOptions{
		Options:        DefaultOptions(),
		Dir:            dir,
		MemoryBudget:   DefaultMemoryBudget,
		GCInterval:     DefaultGCInterval,
		GCDiscardRatio: DefaultGCDiscardRatio,
	}
}

func (o *BadgerOptions) validate() error {
	var errs []error
	if err := o.Options.validate(); err != nil {
		errs = append(errs, err)
	}
	if o.Dir == "" {
		errs = append(errs, errors.New("BadgerOptions.Dir: required"))
	}
	if o.MemoryBudget < minMemoryBudget {
		errs = append(errs, fmt.Errorf("BadgerOptions.MemoryBudget: must be at least %d, got %d", minMemoryBudget, o.MemoryBudget))
	}
	if o.GCInterval <= 0 {
		errs = append(errs, fmt.Errorf("BadgerOptions.GCInterval: must be positive, got %v", o.GCInterval))
	}
	if !(o.GCDiscardRatio > 0 && o.GCDiscardRatio < 1) {
		errs = append(errs, fmt.Errorf("BadgerOptions.GCDiscardRatio: must be in (0, 1), got %v", o.GCDiscardRatio))
	}
	if len(errs) > 0 {
		return fmt.Errorf("buffer: invalid options: %w", errors.Join(errs...))
	}
	return nil
}

// Badger is a buffer on disk over Badger v4.
//
// Durability: an Append to a [Sync] lane returns after the records have been
// fsynced; concurrent appends share the fsync. An Append to a [Batched] lane
// returns once the records are in Badger's write-ahead log: a crash of the
// process loses nothing, a power loss may lose the last FlushInterval.
// Acks, like appends, are as durable as their lane when Ack returns; consumer
// registration, reset and removal are always synced. A crash never moves a
// cursor past a record it had not acknowledged.
//
// On open every table and record is read and its checksum verified;
// damaged records are skipped, counted in [LaneStats.CorruptSkipped],
// logged and deleted, and durable records found missing (see synced.go)
// are counted there too. Damaged files and bookkeeping are repaired or moved
// aside (see repair.go and the package documentation). A format version
// this code does not know fails the open with [ErrIncompatible], and
// nothing is changed.
//
// Disk: deleted records are given back in the background (see the notes in
// maintain.go). When appends outrun that work, so that more than MaxBytes/8
// or so of deleted records wait to be given back, Append waits for it: disk
// use stays within about 1.5 times MaxBytes (measured in tests), at the
// price of slower appends under sustained overload.
//
// Memory: Badger itself stays within BadgerOptions.MemoryBudget; the index
// adds about 24 bytes per stored record.
type Badger struct {
	opts   BadgerOptions
	log    *slog.Logger
	db     *badger.DB
	tuning tuning
	syncer *fileSyncer
	disk   diskGuard
	synced *syncedFile // the watermark file

	core[struct{}]                // mu, st, closed; LastSeq and Notify
	open            *batch        // the batch being filled
	failed          error         // sticky storage error
	vlogDead        int64         // bytes of value-log records deleted by tombstone since the last reclaim
	frontBytes      int64         // bytes removed from lane heads since the last reclaim
	bigSinceCollect bool          // a record went to the value log since the last reclaim
	reclaiming      int64         // bytes the running reclaim is giving back
	reclaimDone     chan struct{} // closed when the running reclaim ends
	orphans         map[string][][]byte
	damage          []string                            // what was found damaged at open, and done
	skipped         map[*lane[struct{}]]map[uint64]bool // damaged records skipped at open
	gone            map[*lane[struct{}]][]seqRange      // seqs reported lost or damaged (synced.go)
	written         map[string]uint64                   // records per lane written since the last fsync round (see Sync)

	writeMu sync.Mutex // held while writing to Badger, and to force a flush

	wake    chan struct{} // cap 1: the open batch has work
	syncQ   chan *batch   // committed batches waiting for an fsync
	reclaim chan struct{} // cap 1: enough value-log garbage to reclaim
	stop    chan struct{}
	dirty   atomic.Bool // written but not fsynced
	wg      sync.WaitGroup

	gcRuns atomic.Int64 // completed maintenance rounds, for tests
}

// OpenBadger opens or creates the buffer in opts.Dir. A damaged directory
// is repaired, or moved aside, as described in repair.go; what was found
// and done is logged and listed in [Stats.Damage].
func OpenBadger(opts BadgerOptions) (*Badger, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("component", "buffer", "dir", opts.Dir)
	return openRepairing(opts, log)
}

// openOnce opens the buffer in opts.Dir as it is; a panic in Badger or in
// the recovery becomes an error wrapping ErrCorrupt.
func openOnce(opts BadgerOptions, log *slog.Logger, damage []string) (_ *Badger, err error) {
	b := &Badger{
		opts:        opts,
		log:         log,
		tuning:      deriveTuning(opts.MemoryBudget, opts.MaxBytes, opts.MaxRecordBytes),
		syncer:      &fileSyncer{dir: opts.Dir},
		open:        newBatch(),
		orphans:     make(map[string][][]byte),
		wake:        make(chan struct{}, 1),
		syncQ:       make(chan *batch, 64),
		reclaim:     make(chan struct{}, 1),
		reclaimDone: make(chan struct{}),
		stop:        make(chan struct{}),
		damage:      damage,
		gone:        map[*lane[struct{}]][]seqRange{},
	}
	b.st = newState[struct{}](opts.Options, b)
	b.st.segmentBytes = b.segmentBytes()
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", opts.Dir, err)
	}
	if err := withDirLock(opts.Dir, func() error { return removeEmptyLogs(opts.Dir, log) }); err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", opts.Dir, err)
	}
	b.initDisk()
	if g, need := &b.disk, openNeed(opts.Dir, b.tuning); !g.off && g.free < need {
		// Badger writes a new memtable log at open, and flushes the ones it
		// replays, through mappings.
		return nil, fmt.Errorf("open buffer %s: %w: %d bytes free, the storage engine needs at least %d to open", opts.Dir, ErrNoSpace, g.free, need)
	}
	defer func() {
		if r := recover(); r != nil {
			if b.db != nil {
				func() {
					defer func() { _ = recover() }()
					_ = b.db.Close()
				}()
				b.dropPreallocated()
			}
			err = fmt.Errorf("open buffer %s: %w: the storage engine failed reading it: %v", opts.Dir, ErrCorrupt, r)
		}
	}()
	db, err := badger.Open(b.tuning.badgerOptions(opts.Dir, log))
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", opts.Dir, err)
	}
	b.db = db
	b.prepareMem()
	if err := b.recover(); err != nil {
		_ = db.Close()
		b.dropPreallocated()
		if b.synced != nil {
			_ = b.synced.close()
		}
		return nil, fmt.Errorf("open buffer %s: %w", opts.Dir, err)
	}
	b.wg.Add(3)
	go b.commitLoop()
	go b.syncLoop()
	go b.maintain()
	return b, nil
}

// recover loads the state from disk, checking everything before it changes
// anything, then stores what recovery decided (deleting damaged records and
// records every consumer acknowledged) and fsyncs.
func (b *Badger) recover() error {
	txn := b.db.NewTransaction(false)
	defer txn.Discard()
	marks, gen, markErr := readSynced(b.opts.Dir)
	fresh, err := b.checkFormat(txn)
	if err != nil {
		return err
	}
	heads, err := b.loadLaneMeta(txn)
	if err != nil {
		return err
	}
	if err := b.loadCursors(txn); err != nil {
		return err
	}
	garbage, err := b.loadRecords(txn, heads)
	if err != nil {
		return err
	}
	b.checkLosses(marks, markErr, fresh, heads)
	if b.synced, err = openSynced(b.opts.Dir, gen, b.laneNames()); err != nil {
		return fmt.Errorf("open watermark file: %w", err)
	}
	if garbage {
		b.triggerReclaim()
	}
	for _, l := range b.st.byPrio {
		for _, c := range l.cursors {
			// A floor or acknowledgement is only ever stored for a number
			// that was assigned: never hand it out again.
			l.next = max(l.next, c.floor+1)
			for q := range c.pending {
				l.next = max(l.next, q+1)
			}
		}
		for _, c := range l.cursors {
			b.st.advance(l, c)
		}
		b.st.sweep(l)
		b.st.expire(l, b.st.nowNanos())
		l.done = l.next - 1
		for _, sl := range l.idx.slots {
			l.lastAt = max(l.lastAt, sl.at)
		}
	}
	if fresh {
		b.open.raw = append(b.open.raw, &badger.Entry{Key: keyFormat, Value: encodeFormat(formatVersion)})
		b.open.ops++
	}
	if b.open.ops > 0 {
		bt := b.open
		b.open = newBatch()
		if err := b.writeBatch(bt, b.metaEntries(bt)); err != nil {
			return fmt.Errorf("store recovered state: %w", err)
		}
	}
	b.syncer.vlogDirty.Store(true)
	if err := b.syncer.sync(); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	if err := b.synced.write(b.doneMarks()); err != nil {
		return fmt.Errorf("write watermark file: %w", err)
	}
	if err := b.synced.flush(); err != nil {
		return fmt.Errorf("fsync watermark file: %w", err)
	}
	for _, d := range b.damage {
		b.log.Warn("buffer: damage found at open", "damage", d)
	}
	return nil
}

// checkFormat checks the format version; fresh is true for an empty
// directory, which gets the current version.
func (b *Badger) checkFormat(txn *badger.Txn) (fresh bool, err error) {
	item, err := txn.Get(keyFormat)
	if errors.Is(err, badger.ErrKeyNotFound) {
		for _, p := range [][]byte{prefixMeta, prefixRecord} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
			it.Rewind()
			found := it.Valid()
			it.Close()
			if found {
				b.noteDamage("format version key %q is missing but the directory holds buffer data: restored", keyFormat)
				return true, nil
			}
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read format version: %w", err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return false, fmt.Errorf("read format version: %w", err)
	}
	version, err := decodeFormat(v)
	if err != nil {
		b.noteDamage("format version key %q is damaged (%v): rewritten", keyFormat, err)
		return true, nil
	}
	if version != formatVersion {
		return false, fmt.Errorf("%w: directory has format version %d, this code reads version %d", ErrIncompatible, version, formatVersion)
	}
	return false, nil
}

func (b *Badger) loadLaneMeta(txn *badger.Txn) (heads map[*lane[struct{}]]uint64, err error) {
	heads = make(map[*lane[struct{}]]uint64)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixLaneMeta, PrefetchValues: true, PrefetchSize: 16})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		key := item.KeyCopy(nil)
		v, err := item.ValueCopy(nil)
		if err != nil {
			return nil, fmt.Errorf("read %q: %w", key, err)
		}
		name := string(key[len(prefixLaneMeta):])
		next, head, err := decodeLaneMeta(key, v)
		if err != nil {
			b.noteDamage("lane state %q is damaged (%v): rebuilt from the lane's records; records the lane had already given up may be served again", key, err)
			if l, ok := b.st.lanes[name]; ok {
				b.open.lanes[l] = true // rewritten
				b.open.ops++
			} else {
				b.open.dels = append(b.open.dels, key)
				b.open.ops++
			}
			continue
		}
		l, ok := b.st.lanes[name]
		if !ok {
			b.log.Warn("lane on disk is not configured; its records are kept but not served", "lane", name)
			continue
		}
		l.next = max(l.next, next)
		heads[l] = head
	}
	return heads, nil
}

func (b *Badger) loadCursors(txn *badger.Txn) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixCursor, PrefetchValues: true, PrefetchSize: 16})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		key := item.KeyCopy(nil)
		laneName, consumer, ok := splitCursorKey(key)
		if !ok {
			b.noteDamage("malformed cursor key %q: deleted", key)
			b.open.dels = append(b.open.dels, key)
			b.open.ops++
			continue
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("read %q: %w", key, err)
		}
		floor, pending, err := decodeCursor(key, v)
		if err != nil {
			b.noteDamage("cursor %q is damaged (%v): deleted; consumer %q starts again at the oldest record of lane %q when it registers", key, err, consumer, laneName)
			b.open.dels = append(b.open.dels, key)
			b.open.ops++
			continue
		}
		l, ok := b.st.lanes[laneName]
		if !ok {
			b.orphans[consumer] = append(b.orphans[consumer], key)
			continue
		}
		l.cursors[consumer] = &cursor{floor: floor, pending: pending}
	}
	return nil
}

// loadRecords reads every record from its lane's head on, verifying it,
// into the indexes. Records below their lane's head are deleted: their
// segments are dropped later. It returns whether there are such records.
func (b *Badger) loadRecords(txn *badger.Txn, heads map[*lane[struct{}]]uint64) (garbage bool, err error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	seen := map[*lane[struct{}]]bool{}
	var maxSeg uint32
	found := false
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		key := item.Key()
		seg, name, seq, ok := parseRecordKey(key)
		if !ok {
			b.corruptKey(b.laneOfKey(key), item.KeyCopy(nil), errors.New("malformed key"))
			continue
		}
		found = true
		maxSeg = max(maxSeg, seg)
		l, ok := b.st.lanes[string(name)]
		if !ok {
			continue // a lane no longer configured: kept, not served
		}
		if !seen[l] {
			seen[l] = true
			l.dropFrom = seg
		}
		l.next = max(l.next, seq+1)
		if seq < heads[l] {
			garbage = true
			continue
		}
		if n := len(l.idx.slots); n > 0 && (seq <= l.idx.slots[n-1].seq || seg < l.idx.slots[n-1].seg) {
			b.corruptKey(l, item.KeyCopy(nil), errors.New("key out of order"))
			continue
		}
		var at int64
		var n int
		err := item.Value(func(v []byte) error {
			var data []byte
			var err error
			at, data, err = decodeRecord(key, v)
			n = len(data)
			return err
		})
		if err != nil {
			b.corruptKey(l, item.KeyCopy(nil), err)
			continue
		}
		size := int64(n) + RecordOverhead(l.opts.Name)
		l.idx.push(slot[struct{}]{seq: seq, at: at, size: uint32(size), seg: seg})
		l.bytes += size
		b.st.total += size
	}
	// New records start a new segment.
	if found {
		b.st.seg = maxSeg + 1
	}
	for _, l := range b.st.byPrio {
		if !seen[l] {
			l.dropFrom = b.st.seg
		}
	}
	return garbage, nil
}

// laneOfKey returns the lane a malformed record key seems to belong to, or
// nil.
func (b *Badger) laneOfKey(key []byte) *lane[struct{}] {
	n := len(prefixRecord) + segLen
	if len(key) <= n || !bytes.HasPrefix(key, prefixRecord) {
		return nil
	}
	for _, l := range b.st.byPrio {
		if bytes.HasPrefix(key[n:], l.name) && len(key) > n+len(l.name) && key[n+len(l.name)] == '/' {
			return l
		}
	}
	return nil
}

// corruptKey counts (when it knows the lane), logs and schedules the
// deletion of a damaged record that is not in the index. Call with mu held
// (or before the buffer runs).
func (b *Badger) corruptKey(l *lane[struct{}], key []byte, err error) {
	name := ""
	if l != nil {
		l.corrupt++
		name = l.opts.Name
		if _, _, seq, ok := parseRecordKey(key); ok {
			if b.skipped == nil {
				b.skipped = map[*lane[struct{}]]map[uint64]bool{}
			}
			if b.skipped[l] == nil {
				b.skipped[l] = map[uint64]bool{}
			}
			b.skipped[l][seq] = true
			b.addGone(l, seq, seq)
		}
	}
	b.log.Warn("skipping damaged record", "lane", name, "key", string(key), "err", err)
	b.open.dels = append(b.open.dels, key)
	b.open.ops++
	b.kick()
}

// hooks: the state's decisions become writes in the open batch.

func (b *Badger) removed(l *lane[struct{}], s slot[struct{}], front bool) {
	bt := b.open
	bt.ops++
	b.kick()
	if w := bt.sets[l]; w != nil && s.seq >= w.lo && s.seq-w.lo < uint64(len(w.entries)) {
		w.entries[s.seq-w.lo] = nil // not written yet: never write it
		return
	}
	if front {
		// The lane's head moves past it: no tombstone, its segment is
		// dropped once the head has left the segment.
		bt.lanes[l] = true
		b.frontBytes += int64(s.size)
		if b.frontBytes >= b.dropThreshold() {
			b.triggerReclaim()
		}
		return
	}
	bt.dels = append(bt.dels, recordKey(l.name, s.seg, s.seq))
	if valueLen := int64(s.size) - int64(recordKeyLen(len(l.name))); valueLen >= b.tuning.valueThreshold {
		b.vlogDead += int64(s.size)
		if b.vlogDead >= b.dropThreshold() {
			b.triggerReclaim()
		}
	}
}

func (b *Badger) triggerReclaim() {
	select {
	case b.reclaim <- struct{}{}:
	default:
	}
}

func (b *Badger) cursorChanged(l *lane[struct{}], consumer string) {
	b.open.cursors[cursorRef{l, consumer}] = true
	b.open.ops++
	b.kick()
}

func (b *Badger) cursorRemoved(l *lane[struct{}], consumer string) {
	b.open.cursors[cursorRef{l, consumer}] = false
	b.open.ops++
	b.kick()
}

// usable returns why the buffer cannot take a change, if it cannot. Call
// with mu held.
func (b *Badger) usable() error {
	if b.closed {
		return ErrClosed
	}
	return b.failed
}

// wait waits until bt is committed (and fsynced if it must be).
func wait(ctx context.Context, bt *batch) error {
	select {
	case <-bt.done:
		return bt.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Append stores data as new records of lane. See [Buffer].
//
// If ctx ends while Append waits for the records to become durable, Append
// returns ctx's error: the records have been given sequence numbers and will
// most likely be stored, but their durability was not confirmed.
func (b *Badger) Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("append to lane %q: %w", lane, err)
	}
	need, err := checkSizes(lane, data, b.opts.MaxRecordBytes)
	if err != nil {
		return nil, err
	}
	// Copy and checksum the data outside the lock, into one allocation for
	// all values and keys.
	keyLen := recordKeyLen(len(lane))
	slabLen := len(data) * keyLen
	for _, d := range data {
		slabLen += recordHeaderLen + len(d) + crcLen
	}
	slab := make([]byte, slabLen)
	vals := make([][]byte, len(data))
	crcs := make([]uint32, len(data))
	big := false
	for i, d := range data {
		n := recordHeaderLen + len(d) + crcLen
		vals[i], slab = slab[:n:n], slab[n:]
		crcs[i] = fillRecordValue(vals[i], d)
		big = big || int64(n) >= b.tuning.valueThreshold
	}

	b.mu.Lock()
	if err := b.usable(); err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("append to lane %q: %w", lane, err)
	}
	l, err := b.st.lane(lane)
	if err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("append: %w", err)
	}
	if len(data) == 0 {
		b.mu.Unlock()
		return nil, nil
	}
	if err := b.waitForReclaim(ctx); err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("append to lane %q: %w", lane, err)
	}
	if err := b.checkDisk(need); err != nil {
		l.noSpace += uint64(len(data))
		b.mu.Unlock()
		return nil, fmt.Errorf("append to lane %q: %w", lane, err)
	}
	at := b.st.appendTime(l)
	b.st.expire(l, at)
	if err := b.st.makeRoom(l, need, len(data)); err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("append: %w", err)
	}
	bt := b.open
	w := bt.sets[l]
	if w == nil {
		w = &laneWrites{lo: l.next}
		bt.sets[l] = w
	}
	bt.lanes[l] = true
	seqs := make([]uint64, len(data))
	ents := make([]badger.Entry, len(data))
	overhead := RecordOverhead(lane)
	for i, v := range vals {
		seq := b.st.add(l, int64(len(data[i]))+overhead, at, struct{}{})
		key := slab[:keyLen:keyLen]
		slab = slab[keyLen:]
		putRecordKey(key, l.name, b.st.seg, seq) // add has put it in segment st.seg
		sealRecord(v, crcs[i], key, at)
		ents[i] = badger.Entry{Key: key, Value: v}
		w.entries = append(w.entries, &ents[i])
		seqs[i] = seq
	}
	bt.ops += len(data)
	bt.bigValue = bt.bigValue || big
	b.bigSinceCollect = b.bigSinceCollect || big
	if l.opts.Durability == Sync {
		bt.needSync = true
	}
	b.kick()
	b.mu.Unlock()

	if err := wait(ctx, bt); err != nil {
		return nil, fmt.Errorf("append to lane %q: %w", lane, err)
	}
	return seqs, nil
}

// Read returns the records consumer has yet to acknowledge. See [Buffer].
func (b *Badger) Read(consumer, lane string, max int) ([]Record, error) {
	b.mu.Lock()
	l, err := readLane(b.st, b.closed, lane, max)
	if err != nil {
		b.mu.Unlock()
		return nil, err
	}
	c, err := b.st.cursor(consumer, l)
	if err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("read: %w", err)
	}
	b.st.expire(l, b.st.nowNanos())
	b.st.advance(l, c)
	from := c.floor + 1
	b.mu.Unlock()
	recs, err := b.scan(l, from, max, func(seq uint64) bool { return !c.acked(seq) })
	if err != nil {
		return nil, fmt.Errorf("read lane %q: %w", lane, err)
	}
	return recs, nil
}

// ReadFrom returns records of lane from sequence number from on. See
// [Buffer].
func (b *Badger) ReadFrom(lane string, from uint64, max int) ([]Record, error) {
	b.mu.Lock()
	l, err := readLane(b.st, b.closed, lane, max)
	if err != nil {
		b.mu.Unlock()
		return nil, err
	}
	b.st.expire(l, b.st.nowNanos())
	b.mu.Unlock()
	recs, err := b.scan(l, from, max, func(uint64) bool { return true })
	if err != nil {
		return nil, fmt.Errorf("read lane %q: %w", lane, err)
	}
	return recs, nil
}

// scan reads up to max live records of l from sequence number from on for
// which keep (called with mu held) is true. Damaged records are counted and
// deleted, never returned.
func (b *Badger) scan(l *lane[struct{}], from uint64, max int, keep func(uint64) bool) ([]Record, error) {
	txn := b.db.NewTransaction(false)
	defer txn.Discard()
	var it *badger.Iterator
	defer func() {
		if it != nil {
			it.Close()
		}
	}()
	type damaged struct {
		key []byte
		err error
	}
	var out []Record
	for len(out) < max {
		// The index says where the next record is: a lane's records are
		// spread over segments shared with other lanes.
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, ErrClosed
		}
		i := l.idx.nextLive(l.idx.search(from))
		if i == len(l.idx.slots) {
			b.mu.Unlock()
			break
		}
		seg, seq := l.idx.slots[i].seg, l.idx.slots[i].seq
		b.mu.Unlock()

		if it == nil {
			it = txn.NewIterator(badger.IteratorOptions{
				Prefix:         prefixRecord,
				PrefetchValues: max > 1,
				PrefetchSize:   min(max, 64),
			})
		}
		prefix := segmentPrefix(seg, l.name)
		it.Seek(recordKey(l.name, seg, seq))
		var cands []Record
		var bad []damaged
		for ; it.ValidForPrefix(prefix) && len(cands) < max-len(out); it.Next() {
			item := it.Item()
			key := item.Key()
			_, _, s, ok := parseRecordKey(key)
			if !ok {
				bad = append(bad, damaged{item.KeyCopy(nil), errors.New("malformed key")})
				continue
			}
			from = s + 1
			v, err := item.ValueCopy(nil)
			if err != nil {
				return nil, err
			}
			at, data, err := decodeRecord(key, v)
			if err != nil {
				bad = append(bad, damaged{item.KeyCopy(nil), err})
				continue
			}
			cands = append(cands, Record{Lane: l.opts.Name, Seq: s, Time: time.Unix(0, at), Data: data})
		}
		if len(cands) == 0 && len(bad) == 0 {
			// The record is in the index but not yet written (it is in
			// the batch being committed), and so are those after it.
			break
		}
		b.mu.Lock()
		for _, d := range bad {
			b.dropDamaged(l, d.key, d.err)
		}
		for _, r := range cands {
			if l.idx.pos(r.Seq) >= 0 && keep(r.Seq) {
				out = append(out, r)
			}
		}
		b.mu.Unlock()
	}
	return out, nil
}

// dropDamaged removes a damaged record found while reading. Call with mu
// held.
func (b *Badger) dropDamaged(l *lane[struct{}], key []byte, err error) {
	if _, _, seq, ok := parseRecordKey(key); ok {
		if i := l.idx.pos(seq); i >= 0 {
			b.log.Warn("skipping damaged record", "lane", l.opts.Name, "seq", seq, "err", err)
			b.st.remove(l, i, removedCorrupt)
			b.addGone(l, seq, seq)
		}
		return // not in the index: already removed
	}
	b.corruptKey(l, key, err)
}

// Ack acknowledges records for consumer. It returns once the
// acknowledgement is as durable as the lane. See [Buffer].
func (b *Badger) Ack(consumer, lane string, seqs ...uint64) error {
	b.mu.Lock()
	if err := b.usable(); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("ack lane %q: %w", lane, err)
	}
	l, err := b.st.lane(lane)
	if err != nil {
		b.mu.Unlock()
		return fmt.Errorf("ack: %w", err)
	}
	if err := b.checkDisk(0); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("ack lane %q: %w", lane, err)
	}
	if err := b.st.ack(consumer, l, seqs); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("ack: %w", err)
	}
	bt := b.open
	bt.ops++ // even a repeated ack waits until the first one is durable
	if l.opts.Durability == Sync {
		bt.needSync = true
	}
	b.kick()
	b.mu.Unlock()
	if err := wait(context.Background(), bt); err != nil {
		return fmt.Errorf("ack lane %q: %w", lane, err)
	}
	return nil
}

// consumerOp runs a consumer change and waits until it is fsynced.
func (b *Badger) consumerOp(what, name string, fn func() error) error {
	b.mu.Lock()
	if err := b.usable(); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("%s consumer %q: %w", what, name, err)
	}
	if err := b.checkDisk(0); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("%s consumer %q: %w", what, name, err)
	}
	if err := fn(); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("%s consumer %q: %w", what, name, err)
	}
	bt := b.open
	bt.ops++
	bt.needSync = true
	b.kick()
	b.mu.Unlock()
	if err := wait(context.Background(), bt); err != nil {
		return fmt.Errorf("%s consumer %q: %w", what, name, err)
	}
	return nil
}

// RegisterConsumer registers consumer name on lanes. See [Buffer].
func (b *Badger) RegisterConsumer(name string, lanes ...string) error {
	if err := checkConsumerName(name); err != nil {
		return err
	}
	return b.consumerOp("register", name, func() error { return b.st.register(name, lanes) })
}

// ResetConsumer moves consumer name back to the oldest record of lane.
func (b *Badger) ResetConsumer(name, lane string) error {
	return b.consumerOp("reset", name, func() error { return b.st.reset(name, lane) })
}

// RemoveConsumer unregisters consumer name from every lane, including lanes
// found on disk but no longer configured.
func (b *Badger) RemoveConsumer(name string) error {
	return b.consumerOp("remove", name, func() error {
		orphans := b.orphans[name]
		err := b.st.removeConsumer(name)
		if err != nil && len(orphans) == 0 {
			return err
		}
		delete(b.orphans, name)
		b.open.dels = append(b.open.dels, orphans...)
		return nil
	})
}

// Stats returns the buffer's counters. See [Stats].
func (b *Badger) Stats() Stats {
	b.mu.Lock()
	st := b.st.stats()
	st.Disk = b.diskStats()
	st.Damage = slices.Clone(b.damage)
	b.mu.Unlock()
	st.DiskBytes = dirBytes(b.opts.Dir)
	return st
}

// dirBytes returns the space the files of dir take on disk, but for the
// disk ballast (space.go), which is part of the reserve.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ballastName {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += allocated(fi)
		}
		return nil
	})
	return n
}

// Close makes pending appends and acks durable, stops the background work
// and closes Badger. It is idempotent.
func (b *Badger) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for _, l := range b.st.lanes {
		l.signal()
	}
	b.mu.Unlock()
	close(b.stop)
	b.wg.Wait()
	b.mu.Lock()
	failed := b.failed
	b.mu.Unlock()
	b.releaseBallast("")
	serr := b.synced.close()
	if err := b.closeWhenRoom(); err != nil {
		return fmt.Errorf("close buffer %s: %w", b.opts.Dir, err)
	}
	err := b.db.Close()
	b.dropPreallocated()
	if serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("close buffer %s: %w", b.opts.Dir, err)
	}
	if failed != nil {
		return fmt.Errorf("close buffer %s: %w", b.opts.Dir, failed)
	}
	return nil
}

// segmentBytes is the size of record segments: the unit in which the space
// of deleted records is given back (see Badger.collect).
func (b *Badger) segmentBytes() int64 {
	return clamp(b.opts.MaxBytes/32, 256*kib, 16*mib)
}

// removeEmptyLogs removes empty (0-byte) memtable logs and value-log files
// from dir. A crash between creating such a file and its first write leaves
// it behind, and Badger v4.9 then refuses to open the directory
// (dgraph-io/badger#2207; the first write is the file's header, so an empty
// file holds no data).
func removeEmptyLogs(dir string, log *slog.Logger) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || (filepath.Ext(name) != ".mem" && filepath.Ext(name) != ".vlog") {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() != 0 {
			continue
		}
		log.Warn("removing empty log file left by a crash", "file", name)
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}
