package perf

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/internal/pipemodel"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/buffer"
	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models"
)

// modelsDir holds the default models, from this package's directory.
const modelsDir = "../../../../models"

// simSamples returns n samples of the simulated pump without faults.
func simSamples(tb testing.TB, n int) []source.Input {
	tb.Helper()
	o := source.DefaultSimulatorOptions()
	o.Name, o.Rate, o.Samples, o.Step = "pump", 0, n, 10*time.Millisecond
	o.Start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	sink := &sliceSink{}
	sim, err := source.NewSimulator(o, sink)
	if err != nil {
		tb.Fatal(err)
	}
	if err := sim.Run(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return sink.ins
}

type sliceSink struct{ ins []source.Input }

func (s *sliceSink) Put(_ context.Context, in source.Input) error {
	s.ins = append(s.ins, in)
	return nil
}
func (s *sliceSink) TryPut(in source.Input) bool { s.ins = append(s.ins, in); return true }

// openBuffer opens the buffer as `vigil run` does by default: Badger with
// a batched score lane and a sync alert lane, or the memory buffer.
func openBuffer(tb testing.TB, kind string) buffer.Buffer {
	tb.Helper()
	o := buffer.DefaultOptions()
	o.Lanes = []buffer.LaneOptions{
		{Name: record.LaneScore, Priority: 0, Durability: buffer.Batched},
		{Name: record.LaneAlert, Priority: 2, Durability: buffer.Sync},
	}
	if kind == "memory" {
		m, err := buffer.NewMemory(o)
		if err != nil {
			tb.Fatal(err)
		}
		return m
	}
	bo := buffer.DefaultBadgerOptions(filepath.Join(tb.TempDir(), "buffer"))
	bo.Options = o
	b, err := buffer.OpenBadger(bo)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BenchmarkSourceToBuffer pushes simulated pump samples through the
// pipeline the way the simulator and replay sources do (Put, with
// back-pressure) into the buffer, scoring every window with the default
// sensor model models/pump8 (window 60, hop 10, 8 channels) on TFLite. The
// clock includes draining the pipeline at the end, so every sample's
// window is scored and appended. It reports samples/s, windows/s, this
// process's CPU seconds per 1000 samples (getrusage: all of Vigil's
// goroutines and TFLite's threads) and its RSS at the end.
//
// Target (issue 5): ≥ 50 000 samples/s sustained on the 2-core reference
// machine.
func BenchmarkSourceToBuffer(b *testing.B) {
	pool := simSamples(b, 8192)
	for _, kind := range []string{"badger", "memory"} {
		b.Run("buffer="+kind, func(b *testing.B) {
			io := inference.DefaultOptions()
			m, err := models.Load(filepath.Join(modelsDir, "pump8"), io)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			buf := openBuffer(b, kind)
			defer buf.Close()
			p, err := pipeline.New(pipeline.Options{Device: "bench-01", Buffer: buf, Streams: []pipeline.StreamSpec{{
				Name: "pump1", Source: "pump", Kind: pipeline.KindSensor, Model: pipemodel.Adapt(m),
				Detect: detect.DefaultOptions(), MaxLateness: 5 * time.Second,
			}}})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			t0 := pool[0].Time
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			start := time.Now()
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				in := pool[i%len(pool)]
				in.Time = t0.Add(time.Duration(i) * 10 * time.Millisecond)
				if err := p.Put(ctx, in); err != nil {
					b.Fatal(err)
				}
				i++
			}
			p.CloseInput()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			elapsed := time.Since(start)
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			st := p.Stats()
			if d := st.Drops; len(d) > 0 {
				b.Fatalf("drops: %+v", d)
			}
			if want := uint64(max(0, (i-60)/10+1)); st.Scores != want {
				b.Fatalf("%d scores for %d samples, want %d", st.Scores, i, want)
			}
			b.ReportMetric(float64(i)/elapsed.Seconds(), "samples/s")
			b.ReportMetric(float64(st.Scores)/elapsed.Seconds(), "windows/s")
			b.ReportMetric(cpu.Seconds()/float64(i)*1000, "cpu-s/1k-samples")
			b.ReportMetric(float64(selfRSS())/(1<<20), "rss-MB")
		})
	}
}

// selfRSS is this process's resident set size in bytes.
func selfRSS() int64 {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return parseStatusKB(s, "VmRSS:") * 1024
}
