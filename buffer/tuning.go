package buffer

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// tuning is what BadgerOptions.MemoryBudget, Options.MaxBytes and
// Options.MaxRecordBytes make of Badger's options.
//
// Badger's defaults (64 MiB memtables, five of them, a 256 MiB block cache,
// 1 GiB value-log files mapped at twice their size) suit servers. On a small
// device the budget B is split so that Badger's own heap stays within it,
// as measured with a heap profile while ingesting at full speed:
//
//   - memtables of B/16 (2 MiB), NumMemtables 2: up to four exist at once
//     (one filling, two queued, one flushing), each a skiplist arena of 1.3
//     times the size, so about B/3;
//   - tables of half a memtable at every level: Badger builds a table in
//     memory before writing it and keeps eight builders' buffers for reuse,
//     each grown to the largest table it built (a flushed memtable), so
//     about B/2. Smaller tables were much slower: each costs an msync and a
//     manifest update;
//   - an index cache of B/8 for table indexes and Bloom filters, so that
//     they do not grow with the data;
//   - no block cache: compression is off (records are small, CPUs are weak),
//     so blocks are read straight from the memory-mapped tables and a cache
//     would only copy them (Badger requires a cache only with compression);
//   - two compactors; four level-0 tables before compaction, writes stall at
//     ten; a base level of twice the cap, so that level 0 is compacted
//     straight into the last level: records are only ever appended at the
//     end of the newest segment and dropped a segment at a time, so one
//     level is enough, and each extra level would rewrite every record once
//     more (measured: 60% more throughput than with the default base
//     level);
//   - value-log files of cap/16 (1 MiB at least, B/2 at most, and large
//     enough for the largest record): only records above the value threshold
//     go there, and small files let value-log GC give space back in small
//     steps.
//
// Not counted: pages of the memory-mapped files (write-ahead logs, tables,
// value log), which the kernel may reclaim, and short-lived garbage, which a
// daemon should bound with GOMEMLIMIT.
//
// Memtables are also kept at most cap/16, so that what they hold on disk
// stays a small fraction of the cap.
type tuning struct {
	memTableSize     int64
	numMemtables     int
	indexCacheSize   int64
	baseTableSize    int64
	baseLevelSize    int64
	numLevelZero     int
	numLevelZeroStop int
	valueLogFileSize int64
	valueThreshold   int64
	numCompactors    int
}

func clamp(v, lo, hi int64) int64 {
	return max(lo, min(v, hi))
}

func deriveTuning(budget, capBytes int64, maxRecord int) tuning {
	var t tuning
	t.numMemtables = 2
	t.memTableSize = clamp(capBytes/16, 1*mib, max(budget/16, 1*mib))
	t.indexCacheSize = max(budget/8, 1*mib)
	t.baseTableSize = max(t.memTableSize/2, 256*kib)
	t.baseLevelSize = max(2*capBytes, 8*t.baseTableSize)
	t.numLevelZero = 4
	t.numLevelZeroStop = 10
	t.numCompactors = 2
	// Badger cuts transactions at 15% of the memtable size and keeps values
	// of at least the threshold in the value log; a batch must hold several
	// inline records.
	maxBatch := t.memTableSize * 15 / 100
	t.valueThreshold = clamp(maxBatch/8, 1*kib, 64*kib)
	largest := int64(maxRecord) + recordHeaderLen + crcLen
	t.valueLogFileSize = clamp(capBytes/16, 1*mib, max(budget/2, 1*mib))
	if t.valueLogFileSize < largest {
		t.valueLogFileSize = (largest + mib - 1) / mib * mib
	}
	return t
}

// badgerOptions turns a tuning into Badger options for dir.
func (t tuning) badgerOptions(dir string, log *slog.Logger) badger.Options {
	o := badger.DefaultOptions(dir)
	o.TableSizeMultiplier = 1 // builders hold a whole table in memory: keep tables small at every level
	return o.
		WithLogger(badgerLogger{log}).
		WithSyncWrites(false). // we fsync ourselves: group commit
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithNumVersionsToKeep(1).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(t.indexCacheSize).
		WithMemTableSize(t.memTableSize).
		WithNumMemtables(t.numMemtables).
		WithBaseTableSize(t.baseTableSize).
		WithBaseLevelSize(t.baseLevelSize).
		WithNumLevelZeroTables(t.numLevelZero).
		WithNumLevelZeroTablesStall(t.numLevelZeroStop).
		WithNumCompactors(t.numCompactors).
		WithValueLogFileSize(t.valueLogFileSize).
		WithValueThreshold(t.valueThreshold).
		WithNumGoroutines(2).
		// A damaged value-log entry must fail its checksum: Badger's
		// "Invalid read" path for a garbled one returns without releasing
		// the file's read lock, and Close then waits forever.
		WithVerifyValueChecksum(true)
}

func (t tuning) String() string {
	return fmt.Sprintf("memtables %d x %d KiB, index cache %d KiB, base table %d KiB, value log files %d KiB, value threshold %d B",
		t.numMemtables, t.memTableSize/kib, t.indexCacheSize/kib, t.baseTableSize/kib, t.valueLogFileSize/kib, t.valueThreshold)
}

// badgerLogger passes Badger's warnings and errors to slog; its info and
// debug messages (chatty, mostly about compactions) are dropped.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, args ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, args...)))
}

func (b badgerLogger) Warningf(f string, args ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, args...)))
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
