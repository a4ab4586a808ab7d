package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func testBadgerOptions(t testing.TB, dir string, clock *fakeClock) BadgerOptions {
	bo := DefaultBadgerOptions(dir)
	bo.Options = testOptions(t, clock)
	return bo
}

func openBadger(t testing.TB, bo BadgerOptions) *Badger {
	t.Helper()
	b, err := OpenBadger(bo)
	if err != nil {
		t.Fatalf("OpenBadger: %v", err)
	}
	return b
}

func closeBadger(t testing.TB, b *Badger) {
	t.Helper()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// rawDB opens a closed buffer's directory with Badger directly, as the
// buffer would, for tests that look at or damage what is on disk.
func rawDB(t testing.TB, bo BadgerOptions) *badger.DB {
	t.Helper()
	tu := deriveTuning(bo.MemoryBudget, bo.MaxBytes, bo.MaxRecordBytes)
	db, err := badger.Open(tu.badgerOptions(bo.Dir, testLogger(t)))
	if err != nil {
		t.Fatalf("badger.Open: %v", err)
	}
	return db
}

// dumpKeys returns every key and value in db.
func dumpKeys(t testing.TB, db *badger.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().Key())] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBadgerReopenKeepsEverything(t *testing.T) {
	clock := newFakeClock()
	bo := testBadgerOptions(t, t.TempDir(), clock)
	b := openBadger(t, bo)
	mustRegister(t, b, "c", "score", "alert")
	mustRegister(t, b, "d", "alert")
	mustAppend(t, b, "score", payloads("s", 5)...)
	mustAppend(t, b, "alert", payloads("a", 3)...)
	mustAck(t, b, "c", "score", 1, 3)
	mustAck(t, b, "c", "alert", 2)
	before := b.Stats()
	closeBadger(t, b)

	b = openBadger(t, bo)
	after := b.Stats()
	after.DiskBytes, before.DiskBytes = 0, 0
	for name, ls := range before.Lanes {
		ls.OldestAge = 0
		got := after.Lanes[name]
		got.OldestAge = 0
		if got != ls {
			t.Errorf("lane %s after reopen = %+v, want %+v", name, got, ls)
		}
	}
	for name, lanes := range before.Consumers {
		for lane, cs := range lanes {
			if got := after.Consumers[name][lane]; got != cs {
				t.Errorf("consumer %s on %s after reopen = %+v, want %+v", name, lane, got, cs)
			}
		}
	}
	if got := seqsOf(mustRead(t, b, "c", "score", 10)); !slices.Equal(got, []uint64{2, 4, 5}) {
		t.Fatalf("Read after reopen = %v, want [2 4 5]", got)
	}
	if got := dataOf(mustRead(t, b, "d", "alert", 10)); !slices.Equal(got, []string{"a-0", "a-1", "a-2"}) {
		t.Fatalf("Read after reopen = %q", got)
	}
	recs, err := b.ReadFrom("score", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !recs[0].Time.Equal(clock.Now()) {
		t.Fatalf("append time after reopen = %v, want %v", recs[0].Time, clock.Now())
	}
	if got := mustAppend(t, b, "score", []byte("x")); got[0] != 6 {
		t.Fatalf("Append after reopen = %v, want [6]", got)
	}
	mustAck(t, b, "c", "score", 2, 4, 5, 6)
	if n := b.Stats().Lanes["score"].Records; n != 0 {
		t.Fatalf("%d records left", n)
	}
	closeBadger(t, b)

	b = openBadger(t, bo)
	defer closeBadger(t, b)
	if got := b.LastSeq("score"); got != 6 {
		t.Fatalf("LastSeq with every record deleted = %d, want 6", got)
	}
	if got := mustAppend(t, b, "score", []byte("y")); got[0] != 7 {
		t.Fatalf("Append after deleting everything and reopening = %v, want [7]", got)
	}
}

func TestBadgerRejectsIncompatibleFormat(t *testing.T) {
	bo := testBadgerOptions(t, t.TempDir(), nil)
	b := openBadger(t, bo)
	mustAppend(t, b, "alert", payloads("a", 3)...)
	closeBadger(t, b)

	db := rawDB(t, bo)
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(keyFormat, encodeFormat(formatVersion+1)) }); err != nil {
		t.Fatal(err)
	}
	want := dumpKeys(t, db)
	db.Close()

	_, err := OpenBadger(bo)
	if !errors.Is(err, ErrIncompatible) {
		t.Fatalf("OpenBadger on a newer format: %v, want ErrIncompatible", err)
	}
	if !strings.Contains(err.Error(), "format version 2") {
		t.Errorf("error %q does not say which version it found", err)
	}
	t.Log(err)
	db = rawDB(t, bo)
	defer db.Close()
	if got := dumpKeys(t, db); !mapsEqual(got, want) {
		t.Fatalf("a failed open changed the directory: %d keys before, %d after", len(want), len(got))
	}
}

// TestBadgerRepairsDamagedState damages the buffer's bookkeeping and checks
// that the open repairs it, says so (Stats.Damage and the log), and keeps
// every record.
func TestBadgerRepairsDamagedState(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(txn *badger.Txn) error
		want   string
	}{
		{"format key flipped", func(txn *badger.Txn) error {
			return txn.Set(keyFormat, flip(encodeFormat(formatVersion), 3))
		}, "s/format"},
		{"format key missing", func(txn *badger.Txn) error {
			return txn.Delete(keyFormat)
		}, "missing"},
		{"lane state flipped", func(txn *badger.Txn) error {
			return txn.Set(laneMetaKey("alert"), flip(encodeLaneMeta("alert", 4, 1), 2))
		}, "s/lane/alert"},
		{"cursor truncated", func(txn *badger.Txn) error {
			k := cursorKey("alert", "c")
			return txn.Set(k, encodeCursor(k, 1, map[uint64]struct{}{3: {}})[:3])
		}, "s/cons/alert/c"},
		{"cursor key malformed", func(txn *badger.Txn) error {
			k := []byte("s/cons/alert")
			return txn.Set(k, encodeCursor(k, 1, nil))
		}, "s/cons/alert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bo := testBadgerOptions(t, t.TempDir(), nil)
			b := openBadger(t, bo)
			mustRegister(t, b, "c", "alert")
			mustAppend(t, b, "alert", payloads("a", 3)...)
			mustAck(t, b, "c", "alert", 2)
			closeBadger(t, b)

			db := rawDB(t, bo)
			if err := db.Update(tc.damage); err != nil {
				t.Fatal(err)
			}
			want := dumpKeys(t, db)
			db.Close()

			_ = want
			b = openBadger(t, bo)
			defer closeBadger(t, b)
			st := b.Stats()
			if !strings.Contains(strings.Join(st.Damage, "\n"), tc.want) {
				t.Errorf("Stats.Damage %q does not mention %q", st.Damage, tc.want)
			}
			t.Log(st.Damage)
			mustRegister(t, b, "c", "alert")
			got := dataOf(mustRead(t, b, "c", "alert", 10))
			// Record 2 was acknowledged: a repaired cursor may deliver it
			// again, never lose 1 or 3.
			if s := strings.Join(got, ","); s != "a-0,a-2" && s != "a-0,a-1,a-2" {
				t.Errorf("after repair the consumer reads %v", got)
			}
			b2 := b
			if _, err := b2.Append(context.Background(), "alert", []byte("new")); err != nil {
				t.Errorf("append after repair: %v", err)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x40
	return b
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestBadgerSkipsCorruptRecordsOnOpen(t *testing.T) {
	bo := testBadgerOptions(t, t.TempDir(), nil)
	b := openBadger(t, bo)
	mustRegister(t, b, "c", "alert")
	mustAppend(t, b, "alert", payloads("a", 6)...)
	closeBadger(t, b)

	db := rawDB(t, bo)
	laneKey := []byte("alert")
	err := db.Update(func(txn *badger.Txn) error {
		get := func(seq uint64) []byte {
			item, err := txn.Get(recordKey(laneKey, 0, seq))
			if err != nil {
				t.Fatal(err)
			}
			v, _ := item.ValueCopy(nil)
			return v
		}
		v2 := get(2)
		v2[len(v2)-crcLen-1] ^= 1 // a bit flipped in the data
		v4 := get(4)
		v4 = v4[:len(v4)-3] // torn: the tail is missing
		v5 := get(5)        // moved under another key
		return errors.Join(
			txn.Set(recordKey(laneKey, 0, 2), v2),
			txn.Set(recordKey(laneKey, 0, 4), v4),
			txn.Set(recordKey(laneKey, 0, 6), v5),
			txn.Set(append(segmentPrefix(0, laneKey), "xyz"...), []byte("not a record")),
		)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	b = openBadger(t, bo)
	if got := dataOf(mustRead(t, b, "c", "alert", 10)); !slices.Equal(got, []string{"a-0", "a-2", "a-4"}) {
		t.Fatalf("Read after damage = %q, want the intact records a-0 a-2 a-4", got)
	}
	ls := b.Stats().Lanes["alert"]
	if ls.CorruptSkipped != 4 || ls.Records != 3 || ls.LastSeq != 6 {
		t.Fatalf("lane stats = %+v, want 4 corrupt skipped, 3 records, last seq 6", ls)
	}
	if got := mustAppend(t, b, "alert", []byte("new")); got[0] != 7 {
		t.Fatalf("Append after damage = %v, want [7]", got)
	}
	closeBadger(t, b)

	b = openBadger(t, bo)
	defer closeBadger(t, b)
	if ls := b.Stats().Lanes["alert"]; ls.CorruptSkipped != 0 || ls.Records != 4 {
		t.Fatalf("second reopen: %+v, want the damaged records gone and nothing more skipped", ls)
	}
}

func TestBadgerSkipsCorruptRecordsOnRead(t *testing.T) {
	bo := testBadgerOptions(t, t.TempDir(), nil)
	b := openBadger(t, bo)
	defer closeBadger(t, b)
	mustRegister(t, b, "c", "score")
	mustAppend(t, b, "score", payloads("s", 3)...)
	// Damage record 2 behind the buffer's back.
	key := recordKey([]byte("score"), 0, 2)
	if err := b.db.Update(func(txn *badger.Txn) error { return txn.Set(key, []byte("garbage that is long enough")) }); err != nil {
		t.Fatal(err)
	}
	if got := dataOf(mustRead(t, b, "c", "score", 10)); !slices.Equal(got, []string{"s-0", "s-2"}) {
		t.Fatalf("Read = %q, want the damaged record skipped", got)
	}
	recs, err := b.ReadFrom("score", 0, 10)
	if err != nil || len(recs) != 2 {
		t.Fatalf("ReadFrom = %v, %v", recs, err)
	}
	ls := b.Stats().Lanes["score"]
	if ls.CorruptSkipped != 1 || ls.Records != 2 {
		t.Fatalf("lane stats = %+v, want 1 corrupt skipped, 2 records", ls)
	}
}

func TestBadgerKeepsUnconfiguredLanes(t *testing.T) {
	dir := t.TempDir()
	bo := testBadgerOptions(t, dir, nil)
	b := openBadger(t, bo)
	mustRegister(t, b, "c", "alert")
	mustAppend(t, b, "alert", payloads("a", 2)...)
	mustAck(t, b, "c", "alert", 1)
	closeBadger(t, b)

	scoreOnly := bo
	scoreOnly.Lanes = bo.Lanes[:1]
	b = openBadger(t, scoreOnly)
	mustAppend(t, b, "score", []byte("s"))
	closeBadger(t, b)

	b = openBadger(t, bo)
	defer closeBadger(t, b)
	if got := dataOf(mustRead(t, b, "c", "alert", 10)); !slices.Equal(got, []string{"a-1"}) {
		t.Fatalf("alert lane after a run without it: %q, want [a-1]", got)
	}
}

func TestBadgerGroupCommit(t *testing.T) {
	bo := testBadgerOptions(t, t.TempDir(), nil)
	b := openBadger(t, bo)
	defer closeBadger(t, b)
	const writers, each = 16, 20
	start := b.syncer.rounds.Load()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := b.Append(context.Background(), "alert", fmt.Appendf(nil, "%d-%d", w, i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	rounds := b.syncer.rounds.Load() - start
	t.Logf("%d sync appends took %d fsync rounds", writers*each, rounds)
	if rounds >= writers*each {
		t.Fatalf("%d fsync rounds for %d concurrent appends: no group commit", rounds, writers*each)
	}
}

func TestBadgerBatchedIsFsyncedWithinInterval(t *testing.T) {
	bo := testBadgerOptions(t, t.TempDir(), nil)
	bo.FlushInterval = 10 * time.Millisecond
	b := openBadger(t, bo)
	defer closeBadger(t, b)
	start := b.syncer.rounds.Load()
	mustAppend(t, b, "score", []byte("batched"))
	if !b.dirty.Load() && b.syncer.rounds.Load() == start {
		t.Fatal("a batched append neither left the buffer dirty nor was synced")
	}
	waitFor(t, 10*time.Second, "the batched append to be fsynced", func() bool {
		return !b.dirty.Load() && b.syncer.rounds.Load() > start
	})
}

func TestBadgerLargeRecordsGoToTheValueLog(t *testing.T) {
	bo := testBadgerOptions(t, t.TempDir(), nil)
	b := openBadger(t, bo)
	big := bytes.Repeat([]byte("0123456789abcdef"), int(b.tuning.valueThreshold)/16+1)
	var want []string
	for i := range 5 {
		d := append(fmt.Appendf(nil, "%d:", i), big...)
		want = append(want, string(d))
		mustAppend(t, b, "alert", d)
	}
	closeBadger(t, b)
	var vlog int64
	ents, _ := os.ReadDir(bo.Dir)
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".vlog" {
			fi, _ := e.Info()
			vlog += allocated(fi)
		}
	}
	if vlog < int64(5*len(big)) {
		t.Fatalf("value log holds %d bytes, want the %d bytes of large records", vlog, 5*len(big))
	}
	b = openBadger(t, bo)
	defer closeBadger(t, b)
	recs, err := b.ReadFrom("alert", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := dataOf(recs); !slices.Equal(got, want) {
		t.Fatal("large records changed across reopen")
	}
}

func TestBadgerOptionsAreValidated(t *testing.T) {
	bo := DefaultBadgerOptions("")
	bo.Lanes = []LaneOptions{{Name: "ok"}, {Name: "ok"}, {Name: "bad name", Durability: 7, OnFull: 9, MaxBytes: -1, TTL: -1}}
	bo.MaxBytes = 0
	bo.MaxRecordBytes = 0
	bo.FlushInterval = 0
	bo.MemoryBudget = 1
	bo.GCDiscardRatio = 1
	_, err := OpenBadger(bo)
	if err == nil {
		t.Fatal("OpenBadger with bad options succeeded")
	}
	for _, field := range []string{
		"Options.MaxBytes", "Options.MaxRecordBytes", "Options.FlushInterval",
		"Options.Lanes[1].Name: duplicate", "Options.Lanes[2].Name", "Options.Lanes[2].Durability",
		"Options.Lanes[2].OnFull", "Options.Lanes[2].MaxBytes", "Options.Lanes[2].TTL",
		"BadgerOptions.Dir", "BadgerOptions.MemoryBudget", "BadgerOptions.GCDiscardRatio",
	} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s:\n%v", field, err)
		}
	}
	if _, err := NewMemory(Options{}); err == nil || !strings.Contains(err.Error(), "Options.Lanes") {
		t.Errorf("NewMemory without lanes: %v", err)
	}
}

func TestDeriveTuning(t *testing.T) {
	for _, tc := range []struct{ budget, capBytes int64 }{
		{16 * mib, 4 * mib}, {16 * mib, 1 << 30}, {32 * mib, 16 * mib}, {32 * mib, 256 * mib}, {128 * mib, 4 << 30},
	} {
		tu := deriveTuning(tc.budget, tc.capBytes, DefaultMaxRecordBytes)
		t.Logf("budget %d MiB, cap %d MiB: %v", tc.budget/mib, tc.capBytes/mib, tu)
		// Up to four arenas of 1.3 times the memtable size; eight builder
		// buffers as large as the largest table, a flushed memtable.
		if mem := 4*tu.memTableSize*13/10 + 8*max(tu.memTableSize, 2*tu.baseTableSize) + tu.indexCacheSize; mem > tc.budget+tc.budget/10 {
			t.Errorf("budget %d: memtables, builders and caches need %d", tc.budget, mem)
		}
		if tu.memTableSize > max(tc.capBytes/16, mib) {
			t.Errorf("cap %d: memtable of %d is too large a share", tc.capBytes, tu.memTableSize)
		}
		if tu.valueThreshold > tu.memTableSize*15/100 {
			t.Errorf("value threshold %d above Badger's batch limit", tu.valueThreshold)
		}
		if tu.valueLogFileSize < DefaultMaxRecordBytes+recordHeaderLen+crcLen {
			t.Errorf("value-log files of %d cannot hold the largest record", tu.valueLogFileSize)
		}
	}
}

// countRecordKeys counts the record keys physically present.
func countRecordKeys(t testing.TB, db *badger.DB) int {
	n := 0
	for k := range dumpKeys(t, db) {
		if strings.HasPrefix(k, string(prefixRecord)) {
			n++
		}
	}
	return n
}

func TestBadgerDropsSegmentsBehindHead(t *testing.T) {
	bo := testBadgerOptions(t, t.TempDir(), nil)
	bo.MaxBytes = 64 << 20 // reclaims start after 8 MiB removed: none here
	b := openBadger(t, bo)
	mustRegister(t, b, "c", "score")
	const n = 1000
	seqs := mustAppend(t, b, "score", records200(n)...)
	mustAck(t, b, "c", "score", seqs...)
	if b.gcRuns.Load() != 0 {
		t.Fatal("a reclaim ran; the test relies on none running yet")
	}
	closeBadger(t, b)

	// Acknowledged from the front: no tombstones, the records are still
	// on disk, below the lane's stored head.
	db := rawDB(t, bo)
	if got := countRecordKeys(t, db); got != n {
		t.Fatalf("%d record keys on disk, want all %d (deleted by the head, not by tombstones)", got, n)
	}
	db.Close()

	b = openBadger(t, bo)
	if st := b.Stats().Lanes["score"]; st.Records != 0 || st.LastSeq != n {
		t.Fatalf("after reopen: %+v, want no records, last seq %d", st, n)
	}
	if recs, _ := b.ReadFrom("score", 0, 10); len(recs) != 0 {
		t.Fatalf("records below the head served again: %v", seqsOf(recs))
	}
	waitFor(t, 10*time.Second, "the reclaim started at open", func() bool { return b.gcRuns.Load() > 0 })
	closeBadger(t, b)

	db = rawDB(t, bo)
	defer db.Close()
	if got := countRecordKeys(t, db); got != 0 {
		t.Fatalf("%d record keys left on disk after the segments were dropped", got)
	}
}

func TestBadgerOpensWithEmptyLogsLeftByACrash(t *testing.T) {
	bo := testBadgerOptions(t, t.TempDir(), nil)
	b := openBadger(t, bo)
	mustAppend(t, b, "alert", []byte("kept"))
	closeBadger(t, b)
	// A crash between creating a log file and writing its header.
	for _, name := range []string{"00099.mem", "000099.vlog"} {
		if err := os.WriteFile(filepath.Join(bo.Dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b = openBadger(t, bo)
	defer closeBadger(t, b)
	if recs, _ := b.ReadFrom("alert", 0, 10); len(recs) != 1 || string(recs[0].Data) != "kept" {
		t.Fatalf("records after reopening = %q", dataOf(recs))
	}
	if _, err := OpenBadger(bo); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("opening a directory in use: %v", err)
	}
}

func TestBadgerCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	bo := testBadgerOptions(t, t.TempDir(), nil)
	bo.GCInterval = time.Millisecond
	b := openBadger(t, bo)
	mustRegister(t, b, "c")
	mustAppend(t, b, "alert", payloads("a", 10)...)
	mustAppend(t, b, "score", payloads("s", 10)...)
	mustAck(t, b, "c", "alert", 1, 2, 3)
	waitFor(t, 10*time.Second, "a maintenance round", func() bool { return b.gcRuns.Load() > 0 })
	closeBadger(t, b)
	waitFor(t, 10*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

func TestBadgerConsumerChangesPersist(t *testing.T) {
	bo := testBadgerOptions(t, t.TempDir(), nil)
	b := openBadger(t, bo)
	mustRegister(t, b, "a", "score")
	mustRegister(t, b, "b", "score")
	mustRegister(t, b, "gone", "score")
	mustAppend(t, b, "score", payloads("s", 4)...)
	mustAck(t, b, "a", "score", 1, 2, 3, 4)
	mustAck(t, b, "b", "score", 1, 2)
	if err := b.ResetConsumer("b", "score"); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveConsumer("gone"); err != nil {
		t.Fatal(err)
	}
	closeBadger(t, b)

	b = openBadger(t, bo)
	defer closeBadger(t, b)
	st := b.Stats()
	if _, ok := st.Consumers["gone"]; ok {
		t.Fatal("a removed consumer came back")
	}
	if cs := st.Consumers["b"]["score"]; cs.AckFloor != 0 || cs.Lag != 4 {
		t.Fatalf("reset consumer after reopen = %+v, want floor 0, lag 4", cs)
	}
	if cs := st.Consumers["a"]["score"]; cs.AckFloor != 4 || cs.Lag != 0 {
		t.Fatalf("consumer after reopen = %+v, want floor 4", cs)
	}
	if got := seqsOf(mustRead(t, b, "b", "score", 10)); !slices.Equal(got, []uint64{1, 2, 3, 4}) {
		t.Fatalf("reset consumer reads %v after reopen", got)
	}
}

func TestBadgerExpiresInTheBackground(t *testing.T) {
	clock := newFakeClock()
	bo := testBadgerOptions(t, t.TempDir(), clock)
	bo.Lanes[0].TTL = time.Minute
	bo.ExpireInterval = time.Millisecond
	b := openBadger(t, bo)
	defer closeBadger(t, b)
	mustAppend(t, b, "score", payloads("s", 3)...)
	clock.Advance(time.Minute)
	// Look at the index directly: Stats and Read would expire by themselves.
	waitFor(t, 10*time.Second, "the records to expire without being read", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.st.lanes["score"].idx.live() == 0
	})
	if ls := b.Stats().Lanes["score"]; ls.Expired != 3 {
		t.Fatalf("expired = %d, want 3", ls.Expired)
	}
}
