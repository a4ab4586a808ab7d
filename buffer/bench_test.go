package buffer

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

// benchBadger opens a Badger buffer with one lane of the given durability
// and a cap large enough that benchmarks do not evict.
func benchBadger(b *testing.B, d Durability) *Badger {
	b.Helper()
	bo := DefaultBadgerOptions(b.TempDir())
	bo.Lanes = []LaneOptions{{Name: "bench", Durability: d}}
	bo.MaxBytes = 2 << 30
	buf, err := OpenBadger(bo)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { buf.Close() })
	return buf
}

func records200(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		d := make([]byte, 200)
		for j := range d {
			d[j] = byte(i + j)
		}
		out[i] = d
	}
	return out
}

// BenchmarkAppend measures appends of 200-byte records, one Append call of
// batch records per iteration, from one goroutine.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	for _, d := range []Durability{Batched, Sync} {
		for _, batch := range []int{1, 64, 1024} {
			b.Run(fmt.Sprintf("%s/batch=%d", d, batch), func(b *testing.B) {
				buf := benchBadger(b, d)
				recs := records200(batch)
				b.ReportAllocs()
				b.SetBytes(int64(200 * batch))
				n := 0
				for b.Loop() {
					if _, err := buf.Append(ctx, "bench", recs...); err != nil {
						b.Fatal(err)
					}
					n++
				}
				b.ReportMetric(float64(n*batch)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}

// BenchmarkAppendSyncConcurrent measures 16 goroutines appending one
// 200-byte record at a time to a Sync lane: group commit.
func BenchmarkAppendSyncConcurrent(b *testing.B) {
	ctx := context.Background()
	const writers = 16
	buf := benchBadger(b, Sync)
	recs := records200(1)
	b.ReportAllocs()
	b.SetBytes(200)
	b.SetParallelism((writers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	var n atomic.Int64
	rounds := buf.syncer.rounds.Load()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := buf.Append(ctx, "bench", recs...); err != nil {
				b.Error(err)
				return
			}
			n.Add(1)
		}
	})
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "records/s")
	if r := buf.syncer.rounds.Load() - rounds; r > 0 {
		b.ReportMetric(float64(n.Load())/float64(r), "records/fsync")
	}
}

// BenchmarkReadAck measures a consumer reading 256 records at a time and
// acknowledging them, on a Batched lane. Refilling the lane is not timed.
func BenchmarkReadAck(b *testing.B) {
	ctx := context.Background()
	buf := benchBadger(b, Batched)
	if err := buf.RegisterConsumer("c", "bench"); err != nil {
		b.Fatal(err)
	}
	recs := records200(1024)
	fill := func() {
		for range 64 {
			if _, err := buf.Append(ctx, "bench", recs...); err != nil {
				b.Fatal(err)
			}
		}
	}
	fill()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		got, err := buf.Read("c", "bench", 256)
		if err != nil {
			b.Fatal(err)
		}
		if len(got) == 0 {
			b.StopTimer()
			fill()
			b.StartTimer()
			continue
		}
		if err := buf.Ack("c", "bench", seqsOf(got)...); err != nil {
			b.Fatal(err)
		}
		n += len(got)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkMemoryAppend is the in-memory buffer, for comparison.
func BenchmarkMemoryAppend(b *testing.B) {
	ctx := context.Background()
	o := DefaultOptions()
	o.Lanes = []LaneOptions{{Name: "bench"}}
	o.MaxBytes = 1 << 30
	m, err := NewMemory(o)
	if err != nil {
		b.Fatal(err)
	}
	recs := records200(64)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := m.Append(ctx, "bench", recs...); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n*64)/b.Elapsed().Seconds(), "records/s")
}
