package pipeline

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

// TestStatsCountInferenceHistogramAndShardProgress: every scored window is
// one observation of the inference histogram, and each input a shard takes
// from its queue counts in its Handled.
func TestStatsCountInferenceHistogramAndShardProgress(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 1}
	p, _ := run(t, Options{Streams: []StreamSpec{sensorSpec(m)}, Shards: 1}, samples(30, func(int) []float64 { return []float64{0, 0} }))
	s := p.Stats()
	h := s.Inference
	if h.Count != s.Windows || h.Count == 0 {
		t.Fatalf("histogram count %d, windows scored %d", h.Count, s.Windows)
	}
	if len(h.Counts) != len(InferenceBuckets) || h.Counts[len(h.Counts)-1] > h.Count {
		t.Fatalf("histogram buckets %v of %d", h.Counts, h.Count)
	}
	for i := 1; i < len(h.Counts); i++ {
		if h.Counts[i] < h.Counts[i-1] {
			t.Fatalf("buckets not cumulative: %v", h.Counts)
		}
	}
	if h.Sum <= 0 {
		t.Fatalf("histogram sum %v", h.Sum)
	}
	if len(s.Shards) != 1 || s.Shards[0].Handled != 30 || s.Shards[0].Queued != 0 {
		t.Fatalf("shards %+v, want one that handled all 30 inputs", s.Shards)
	}
}

// failingBuffer fails appends while fail is set.
type failingBuffer struct {
	memBuffer
	fail atomic.Bool
}

func (b *failingBuffer) Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error) {
	if b.fail.Load() {
		return nil, errors.New("disk full")
	}
	return b.memBuffer.Append(ctx, lane, data...)
}

// TestAppendErrorIsReportedUntilAnAppendSucceeds feeds the readiness probe's
// "buffer writable" check.
func TestAppendErrorIsReportedUntilAnAppendSucceeds(t *testing.T) {
	m := &meanModel{id: "mean@1", length: 2, hop: 1, chans: chans2, thr: 100}
	buf := &failingBuffer{}
	buf.fail.Store(true)
	p, err := New(Options{Device: "dev-01", Streams: []StreamSpec{sensorSpec(m)}, Buffer: buf, Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	in := samples(10, func(int) []float64 { return []float64{0, 0} })
	for _, x := range in[:4] {
		p.Put(ctx, x)
	}
	waitFor(t, func() bool { return p.Stats().AppendError != "" })
	if got := p.Stats().AppendError; got != "score: disk full" {
		t.Fatalf("append error %q", got)
	}
	buf.fail.Store(false)
	for _, x := range in[4:] {
		p.Put(ctx, x)
	}
	waitFor(t, func() bool { return p.Stats().AppendError == "" })
}
