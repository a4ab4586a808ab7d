package buffer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Disk space.
//
// Badger writes its memtable logs, value-log files and tables through
// memory-mapped files that it creates sparse (ftruncate) and fills by
// copying into the mapping. On a full filesystem such a copy cannot get a
// block, and the kernel answers with SIGBUS: the process dies, in
// memTable.Put or table.CreateTable, and again at every restart. Badger
// v4.9.6 has no option to avoid these mappings (memtable logs and value-log
// files are always mapped; tables are built in memory and copied into a
// mapped file). So the buffer keeps Badger away from a full disk:
//
//   - A reserve: the buffer takes no change (append, ack, consumer change)
//     while the free space of its filesystem (statfs, the space available to
//     unprivileged writers) is below a reserve sized for what Badger may
//     still write on its own: the next memtable log, a value-log file, and
//     the tables of a memtable flush and a compaction. Refused changes fail
//     with [ErrNoSpace] (acknowledgements and consumer changes, which never
//     write to the value log and let the buffer give space back, may use
//     the value-log file's part of the reserve); refused appends are
//     counted ([LaneStats.NoSpace]); the state is logged (at most every
//     diskLogEvery) and shown in
//     [Stats.Disk]. Free space is checked at most every diskCheckEvery and
//     whenever appends may have used an eighth of the room left, and at every
//     change while the disk is full, so the buffer takes changes again by
//     itself once space returns.
//   - A limit from the disk: the stored bytes may grow to what the
//     filesystem can hold, (free space above the reserve + the buffer's own
//     files) / 2, the disk amplification measured for the buffer under
//     churn. When
//     that is below the byte cap, it acts as the cap: an append evicts
//     lower-priority records (lanes with policy evict) or is rejected with
//     [ErrFull] (counted in [LaneStats.Rejected]) before the disk is full.
//     The space of evicted records is given back by the usual reclaim.
//   - Preallocated memtable logs: every change goes through the memtable
//     log, so its blocks are allocated in advance: the current log in full
//     (fallocate), and the next one, before Badger creates it, as an empty
//     file whose blocks are reserved beyond its end (FALLOC_FL_KEEP_SIZE),
//     which Badger then takes as a new file. A write to the memtable log
//     thus never needs a new block, even if another process fills the disk
//     meanwhile. If the next log cannot be preallocated, the disk counts as
//     full.
//
//   - A ballast: part of the reserve, the room for the tables of a flush
//     and a compaction, is held as a preallocated file (vigil.ballast) while
//     there is space. When another writer fills the disk, the buffer
//     deletes the ballast (a check every ballastCheckEvery, and at every
//     change), so that the flush or compaction Badger may be running can
//     still write its tables; it takes the ballast back once space returns.
//     Close and open give it up first too, so that Badger's flush at close
//     and its new memtable log at open have room.
//
// What remains: value-log files and tables are created by Badger inside a
// write or in the background, through mappings. Another process that fills
// the disk to the last block in the moment between its last write and the
// ballast's release, while Badger writes a table, can still make that write
// fault. Give the buffer a filesystem of its own (or keep the root-reserved
// blocks of ext4 for a buffer running as root) where that matters.

const (
	diskCheckEvery    = 250 * time.Millisecond
	diskLogEvery      = 10 * time.Second
	ballastCheckEvery = 20 * time.Millisecond
	ballastName       = "vigil.ballast"
)

// diskGuard follows the free space of the buffer's filesystem. Its fields
// are guarded by Badger.mu, except memMu's.
type diskGuard struct {
	dir      string
	off      bool // statfs failed at open: no guard
	reserve  int64
	limit    int64 // the stored bytes the filesystem can hold, 0 if above the cap
	memBytes int64 // size of a memtable log (2 x memtable size)

	free       int64
	size       int64
	checked    time.Time
	sinceCheck int64 // bytes appended since the last check
	checkAfter int64 // check again after that many bytes
	full       bool
	ackOK      bool  // while full: acknowledgements may still go ahead
	vlogPart   int64 // the value-log file's part of the reserve
	pressure   bool
	lastErr    string
	lastLog    time.Time
	refused    uint64 // changes refused since the last log line

	ballastMu   sync.Mutex
	ballastSize int64
	ballastHeld bool

	memMu    sync.Mutex
	nextMem  int64 // fid of the preallocated next memtable log, 0 if none
	memReady bool  // the next memtable log is preallocated
	memOff   bool  // the filesystem cannot preallocate
}

// diskAmpNum/diskAmpDen is how much disk the stored bytes may take: 1.5
// at most once the reclaim has caught up (TestDiskStaysWithinCap), up to 2
// while appends churn (TestDiskFull).
const diskAmpNum, diskAmpDen = 2, 1

// reserveFor returns the reserve for a tuning.
func reserveFor(t tuning, maxRecord int) (reserve int64) {
	reserve = 2*t.memTableSize + // the next memtable log
		t.valueLogFileSize + int64(maxRecord) + // a value-log file
		int64(t.numLevelZero+2)*t.memTableSize + // tables of a flush and a compaction
		1*mib // manifest, discard stats, directory blocks
	return reserve
}

// initDisk sets the guard up; call before Badger is opened.
func (b *Badger) initDisk() {
	g := &b.disk
	g.dir = b.opts.Dir
	g.reserve = reserveFor(b.tuning, b.opts.MaxRecordBytes)
	g.vlogPart = b.tuning.valueLogFileSize + int64(b.opts.MaxRecordBytes)
	g.memBytes = 2 * b.tuning.memTableSize
	g.ballastSize = int64(b.tuning.numLevelZero+2) * b.tuning.memTableSize
	_ = os.Remove(filepath.Join(g.dir, ballastName)) // left by a crash: room for the open
	free, size, err := statfs(g.dir)
	if err != nil {
		g.off = true
		b.log.Warn("cannot read the free space of the buffer's filesystem; the disk guard is off", "err", err)
		return
	}
	g.free, g.size, g.checked = free, size, time.Now()
	if w := diskWarning(b.opts.MaxBytes, g.reserve, free+dirBytes(g.dir), size); w != "" {
		b.log.Warn(w, "max_bytes", b.opts.MaxBytes, "reserve", g.reserve, "fs_free", free, "fs_size", size)
	}
}

// diskWarning explains why the byte cap does not fit the filesystem, or
// returns "". avail is what the buffer can use: free space plus its own
// files.
func diskWarning(maxBytes, reserve, avail, size int64) string {
	need := maxBytes*diskAmpNum/diskAmpDen + reserve
	if need <= avail {
		return ""
	}
	has, where := avail, "free (plus the buffer's own files)"
	if need > size {
		has, where = size, "in total"
	}
	return fmt.Sprintf("buffer: the byte cap exceeds what the filesystem can hold: a %d MiB cap needs about %d MiB on disk (2 x cap + %d MiB reserve), the filesystem has %d MiB %s; the buffer will evict or reject under disk pressure before it reaches its cap",
		maxBytes>>20, need>>20, reserve>>20, has>>20, where)
}

// CheckDisk returns a warning when opts.MaxBytes exceeds what the filesystem
// of opts.Dir (or of its nearest existing parent) can hold, or "" when it
// fits or the filesystem cannot be read. check-config and start-up use it.
func CheckDisk(opts BadgerOptions) string {
	dir := opts.Dir
	for {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
	free, size, err := statfs(dir)
	if err != nil {
		return ""
	}
	t := deriveTuning(opts.MemoryBudget, opts.MaxBytes, opts.MaxRecordBytes)
	reserve := reserveFor(t, opts.MaxRecordBytes)
	return diskWarning(opts.MaxBytes, reserve, free+dirBytes(opts.Dir), size)
}

// checkDisk refreshes the disk state if it is due and tells whether a
// change of need bytes may go ahead. Call with mu held.
func (b *Badger) checkDisk(need int64) error {
	g := &b.disk
	if g.off {
		return nil
	}
	g.sinceCheck += need
	if g.full || g.sinceCheck >= g.checkAfter || time.Since(g.checked) >= diskCheckEvery ||
		(g.pressure && time.Since(g.checked) >= diskCheckEvery/8) {
		b.refreshDisk()
	}
	if !g.full {
		return nil
	}
	// Acknowledgements and consumer changes never write to the value log,
	// and they are what lets the buffer give space back: they may use the
	// value-log part of the reserve.
	if need == 0 && g.ackOK {
		return nil
	}
	g.refused++
	if time.Since(g.lastLog) >= diskLogEvery {
		b.log.Error("buffer: filesystem full, changes refused until space returns",
			"free", g.free, "reserve", g.reserve, "refused_since_last_log", g.refused)
		g.lastLog, g.refused = time.Now(), 0
	}
	return fmt.Errorf("%w: %s", ErrNoSpace, g.lastErr)
}

// refreshDisk reads the free space and updates the state. Call with mu
// held.
func (b *Badger) refreshDisk() {
	g := &b.disk
	free, size, err := statfs(g.dir)
	if err != nil {
		return // keep the last state
	}
	g.free, g.size, g.checked, g.sinceCheck = free, size, time.Now(), 0
	free += b.balance(free)
	g.memMu.Lock()
	if !g.memReady && !g.memOff && free >= g.memBytes {
		b.prepareMemLocked()
	}
	memReady := g.memReady || g.memOff
	g.memMu.Unlock()
	headroom := free - g.reserve
	wasFull := g.full
	g.full = headroom <= 0 || !memReady
	g.ackOK = memReady && free > g.reserve-g.vlogPart
	// What the stored bytes may grow to: the buffer's own files (less the
	// fixed preallocated memtable logs) plus the free space above the
	// reserve, divided by the disk amplification.
	usable := free + dirBytes(g.dir) - 2*g.memBytes - g.reserve // free counts the ballast in
	g.limit = max(usable*diskAmpDen/diskAmpNum, 1)
	if g.limit >= b.opts.MaxBytes {
		g.limit = 0
	}
	b.st.softCap = g.limit
	g.pressure = !g.full && g.limit > 0 && b.st.total >= g.limit*9/10
	room := b.opts.MaxBytes - b.st.total
	if g.limit > 0 {
		room = g.limit - b.st.total
	}
	g.checkAfter = max(room/8, 32*kib)
	switch {
	case g.full && !wasFull:
		if !memReady {
			g.lastErr = fmt.Sprintf("cannot preallocate the next memtable log (%d bytes), %d bytes free", g.memBytes, free)
		} else {
			g.lastErr = fmt.Sprintf("%d bytes free on the buffer's filesystem, below the %d bytes kept in reserve for the storage engine", free, g.reserve)
		}
		b.log.Error("buffer: filesystem full, changes refused until space returns", "free", free, "reserve", g.reserve)
		g.lastLog, g.refused = time.Now(), 0
	case !g.full && wasFull:
		b.log.Warn("buffer: space returned, taking changes again", "free", free, "reserve", g.reserve)
	}
}

// balance releases the ballast when the disk is (nearly) full and takes it
// when there is room, and returns the space it holds. Call with mu held.
func (b *Badger) balance(free int64) int64 {
	g := &b.disk
	g.ballastMu.Lock()
	defer g.ballastMu.Unlock()
	path := filepath.Join(g.dir, ballastName)
	switch {
	case g.ballastHeld && free < g.memBytes:
		b.releaseBallastLocked("the filesystem is full")
	case !g.ballastHeld && free >= g.ballastSize+2*g.memBytes && !b.closed:
		// Decisions count the ballast as free space: taking it changes
		// nothing but who holds the blocks.
		if err := preallocate(path, g.ballastSize, false); err != nil {
			_ = os.Remove(path)
			return 0
		}
		g.ballastHeld = true
	}
	if g.ballastHeld {
		return g.ballastSize
	}
	return 0
}

// watchBallast releases the ballast at once if another writer filled the
// disk. The maintenance goroutine calls it every ballastCheckEvery.
func (b *Badger) watchBallast() {
	g := &b.disk
	g.ballastMu.Lock()
	defer g.ballastMu.Unlock()
	if !g.ballastHeld {
		return
	}
	if free, _, err := statfs(g.dir); err == nil && free < g.memBytes {
		b.releaseBallastLocked("the filesystem is full")
	}
}

// releaseBallast deletes the ballast; call before Badger may write with
// little space left (close).
func (b *Badger) releaseBallast(why string) {
	g := &b.disk
	g.ballastMu.Lock()
	defer g.ballastMu.Unlock()
	if g.ballastHeld {
		b.releaseBallastLocked(why)
	}
}

func (b *Badger) releaseBallastLocked(why string) {
	g := &b.disk
	g.ballastHeld = false
	if err := os.Remove(filepath.Join(g.dir, ballastName)); err != nil {
		b.log.Warn("cannot release the disk ballast", "err", err)
		return
	}
	if why != "" {
		b.log.Warn("buffer: released the disk ballast, so the storage engine can finish its work", "reason", why, "bytes", g.ballastSize)
	}
}

// prepareMem makes sure the current memtable log is fully allocated and the
// next one preallocated. Call after every write to Badger, holding writeMu
// (or before the buffer runs).
func (b *Badger) prepareMem() {
	g := &b.disk
	if g.off {
		return
	}
	g.memMu.Lock()
	defer g.memMu.Unlock()
	if g.memOff {
		return
	}
	if g.memReady {
		// Has Badger taken the preallocated log?
		fi, err := os.Stat(b.memPath(g.nextMem))
		if err == nil && fi.Size() == 0 {
			return
		}
		g.memReady = false
	}
	b.prepareMemLocked()
}

// prepareMemLocked: see prepareMem; call with memMu held.
func (b *Badger) prepareMemLocked() {
	g := &b.disk
	cur := newestMem(g.dir)
	if cur > 0 {
		if err := preallocate(b.memPath(cur), g.memBytes, false); err != nil {
			b.memPreallocFailed(err)
			return
		}
	}
	next := cur + 1
	if err := preallocate(b.memPath(next), g.memBytes, true); err != nil {
		_ = os.Remove(b.memPath(next))
		b.memPreallocFailed(err)
		return
	}
	g.nextMem, g.memReady = next, true
}

func (b *Badger) memPreallocFailed(err error) {
	g := &b.disk
	if errors.Is(err, errNoPrealloc) {
		g.memOff = true
		b.log.Warn("the buffer's filesystem cannot preallocate; a full disk may crash the storage engine", "err", err)
		return
	}
	if !isNoSpace(err) {
		b.log.Warn("preallocating the next memtable log failed", "err", err)
	}
	g.memReady = false
}

func (b *Badger) memPath(fid int64) string {
	return filepath.Join(b.opts.Dir, fmt.Sprintf("%05d.mem", fid))
}

// newestMem returns the highest fid of a non-empty memtable log in dir, or 0.
func newestMem(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if id, ok := fileID(e.Name(), ".mem"); ok && id > n {
			if fi, err := e.Info(); err == nil && fi.Size() > 0 {
				n = id
			}
		}
	}
	return n
}

// dropPreallocated removes the preallocated next memtable log, after Badger
// is closed.
func (b *Badger) dropPreallocated() {
	g := &b.disk
	g.memMu.Lock()
	defer g.memMu.Unlock()
	if g.nextMem > 0 {
		p := b.memPath(g.nextMem)
		if fi, err := os.Stat(p); err == nil && fi.Size() == 0 {
			_ = os.Remove(p)
		}
	}
	g.memReady = false
}

// closeWhenRoom checks that Badger can flush its memtable at close (it
// writes a table through a mapping). If the disk is too full, Badger is
// closed later, by a goroutine, once space returns: everything is in its
// fsynced log already, and a process that exits loses nothing. Close then
// returns ErrNoSpace, and the directory stays locked until then.
func (b *Badger) closeWhenRoom() error {
	if b.disk.off {
		return nil
	}
	need := b.tuning.memTableSize + 1*mib
	free, _, err := statfs(b.opts.Dir)
	if err != nil || free >= need {
		return nil
	}
	b.log.Error("buffer: the disk is full at close; the storage engine stays open until space returns (everything is in its fsynced log)",
		"free", free, "need", need)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if free, _, err := statfs(b.opts.Dir); err == nil && free >= need {
				break
			}
		}
		if err := b.db.Close(); err != nil {
			b.log.Error("closing the storage engine once space returned", "err", err)
		}
		b.dropPreallocated()
	}()
	return fmt.Errorf("%w: %d bytes free, the storage engine needs %d to close; it closes once space returns", ErrNoSpace, free, need)
}

// openNeed is the free space Badger needs to open dir: a new memtable log,
// and the tables of the memtable logs it replays and flushes.
func openNeed(dir string, t tuning) int64 {
	ents, _ := os.ReadDir(dir)
	need := 2*t.memTableSize + 1*mib
	for _, e := range ents {
		if _, ok := fileID(e.Name(), ".mem"); ok {
			if fi, err := e.Info(); err == nil && fi.Size() > 0 {
				need += t.memTableSize
			}
		}
	}
	return need
}

// diskStats returns the disk state. Call with mu held.
func (b *Badger) diskStats() DiskStats {
	g := &b.disk
	return DiskStats{Free: g.free, Reserve: g.reserve, Limit: g.limit, Pressure: g.pressure, Full: g.full, LastError: g.lastErr}
}
