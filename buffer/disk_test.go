package buffer

import (
	"bytes"
	"testing"
	"time"
)

// TestDiskStaysWithinCap writes ten times the cap through the buffer and
// checks that the directory never takes more than 1.5 times the cap on disk
// (allocated blocks, sampled as it goes), plus the two memtable logs the
// disk guard keeps allocated (see space.go): with a consumer acknowledging
// everything, and with nobody reading so that eviction makes the room; with
// small records (stored inline in the LSM tree) and large ones (stored in
// the value log).
func TestDiskStaysWithinCap(t *testing.T) {
	if testing.Short() {
		t.Skip("writes hundreds of megabytes")
	}
	if raceEnabled {
		t.Skip("too slow under the race detector; covers no concurrency")
	}
	const capBytes = 16 << 20
	for _, tc := range []struct {
		name    string
		size    int
		consume bool
	}{
		{"ack/200B", 200, true},
		{"evict/200B", 200, false},
		{"ack/64KiB", 64 << 10, true},
		{"evict/64KiB", 64 << 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bo := DefaultBadgerOptions(t.TempDir())
			bo.Lanes = []LaneOptions{{Name: "score", Durability: Batched}}
			bo.MaxBytes = capBytes
			// Value-log files are cap/16, unless the largest record needs more:
			// keep MaxRecordBytes from making them a coarse share of a small cap.
			bo.MaxRecordBytes = 128 << 10
			bo.Logger = testLogger(t)
			b := openBadger(t, bo)
			defer closeBadger(t, b)
			if tc.consume {
				mustRegister(t, b, "c", "score")
			}
			per := int64(tc.size) + RecordOverhead("score")
			batch := max(1, 64<<10/tc.size)
			data := make([][]byte, batch)
			for i := range data {
				data[i] = bytes.Repeat([]byte{byte(i)}, tc.size)
			}
			var written, peak, samples int64
			var sampled int64
			start := time.Now()
			for written < 10*capBytes {
				mustAppend(t, b, "score", data...)
				written += int64(batch) * per
				if tc.consume {
					for {
						recs := mustRead(t, b, "c", "score", 1024)
						if len(recs) == 0 {
							break
						}
						mustAck(t, b, "c", "score", seqsOf(recs)...)
					}
				}
				if written-sampled >= 512<<10 {
					sampled = written
					peak = max(peak, dirBytes(bo.Dir))
					samples++
				}
			}
			st := b.Stats()
			peak = max(peak, st.DiskBytes)
			t.Logf("wrote %d MiB in %v; cap %d MiB; stored %.1f MiB (%d records, %d evicted); disk now %.1f MiB, peak %.1f MiB (%.2fx cap, %d samples)",
				written>>20, time.Since(start).Round(time.Millisecond), capBytes>>20, float64(st.Bytes)/(1<<20),
				st.Lanes["score"].Records, st.Lanes["score"].Evicted,
				float64(st.DiskBytes)/(1<<20), float64(peak)/(1<<20), float64(peak)/capBytes, samples)
			if limit := int64(capBytes)*3/2 + 2*b.disk.memBytes; peak > limit {
				t.Fatalf("disk use peaked at %d bytes, over 1.5 x the %d-byte cap + 2 memtable logs of %d bytes", peak, int64(capBytes), b.disk.memBytes)
			}
			if st.Bytes > capBytes {
				t.Fatalf("stored %d bytes, over the cap", st.Bytes)
			}
			if !tc.consume && st.Lanes["score"].Evicted == 0 {
				t.Fatal("nothing was evicted: the test did not fill the cap")
			}
		})
	}
}
