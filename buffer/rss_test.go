package buffer

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memStatus reads the resident set of this process from /proc/self/status,
// in KiB: VmRSS and its anonymous and file-backed parts.
func memStatus(t *testing.T) (rss, anon, file int64) {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "RssAnon":
			anon = n
		case "RssFile":
			file = n
		}
	}
	return rss, anon, file
}

func logMem(t *testing.T, when string) int64 {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, anon, file := memStatus(t)
	t.Logf("%s: VmRSS %d MiB (anonymous %d MiB, file-backed %d MiB); Go heap in use %d MiB",
		when, rss>>10, anon>>10, file>>10, ms.HeapInuse>>20)
	return anon
}

// TestRSSWithMillionRecords buffers one million 200-byte records in a
// Badger buffer with the default 32 MiB memory budget and reports the
// process's resident memory, after writing and after reopening.
func TestRSSWithMillionRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a million records")
	}
	if raceEnabled {
		t.Skip("the race detector's shadow memory makes RSS meaningless")
	}
	const n, size, batch = 1_000_000, 200, 1000
	bo := DefaultBadgerOptions(t.TempDir())
	bo.Lanes = []LaneOptions{{Name: "score", Durability: Batched}}
	bo.MaxBytes = 512 << 20
	bo.Logger = testLogger(t)
	logMem(t, "before")
	b := openBadger(t, bo)
	data := records200(batch)
	start := time.Now()
	for range n / batch {
		if _, err := b.Append(context.Background(), "score", data...); err != nil {
			t.Fatal(err)
		}
	}
	st := b.Stats()
	t.Logf("appended %d records of %d bytes in %v; %d records, %d MiB stored, %d MiB on disk",
		n, size, time.Since(start).Round(time.Millisecond), st.Lanes["score"].Records, st.Bytes>>20, st.DiskBytes>>20)
	if st.Lanes["score"].Records != n {
		t.Fatalf("%d records buffered, want %d", st.Lanes["score"].Records, n)
	}
	anon := logMem(t, "1M records buffered")
	closeBadger(t, b)

	start = time.Now()
	b = openBadger(t, bo)
	defer closeBadger(t, b)
	t.Logf("reopened (every record read and verified) in %v", time.Since(start).Round(time.Millisecond))
	anon = max(anon, logMem(t, "1M records after reopen"))
	// Badger's budget plus the index (about 24 bytes a record) plus the
	// Go runtime and the test binary: anything far above means a leak or
	// a cache gone unbounded.
	if limit := int64(bo.MemoryBudget>>10) + 24*n/1024 + 64<<10; anon > limit {
		t.Fatalf("anonymous RSS %d KiB above %d KiB", anon, limit)
	}
}
