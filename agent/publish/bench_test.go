package publish

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
)

// benchPublisher runs a publisher for a benchmark and returns a stop
// function.
func benchPublisher(b *testing.B, buf Log, opts Options) (*Publisher, func()) {
	b.Helper()
	opts.Logger = testLogger(b)
	p, err := New(buf, opts)
	if err != nil {
		b.Fatal(err)
	}
	return p, testkit.Run(b, "Run", p.Run)
}

// BenchmarkPublish measures live publishing to mosquitto: each iteration
// appends one alert, and the clock runs until the broker has acknowledged
// (QoS 1) or been sent (QoS 0) every one.
func BenchmarkPublish(b *testing.B) {
	broker := mqtttest.Start(b, mqtttest.Options{})
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			buf := newMemBuffer(b)
			opts := testOptions(broker.URL())
			opts.AlertQoS = qos
			opts.CommandsEnabled = false
			p, stop := benchPublisher(b, buf, opts)
			defer stop()
			testkit.WaitFor(b, 10*time.Second, "connected", p.Connected)
			data := alertJSON("pump", 1)
			ctx := context.Background()
			b.ReportAllocs()
			start, mallocs := time.Now(), mallocCount()
			n := 0
			for b.Loop() {
				if _, err := buf.Append(ctx, record.LaneAlert, data); err != nil {
					b.Fatal(err)
				}
				n++
			}
			testkit.WaitFor(b, 60*time.Second, "all published", func() bool { return p.Stats().Lanes["alert"].Published >= uint64(n) })
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
			// allocs/op misses what the publisher does after the loop.
			b.ReportMetric(float64(mallocCount()-mallocs)/float64(n), "allocs/msg")
		})
	}
}

// BenchmarkDrain measures how fast a backlog of 1M scores drains (replay
// unpaced) once the publisher connects, from a memory buffer.
func BenchmarkDrain(b *testing.B) {
	n := drainN
	broker := mqtttest.Start(b, mqtttest.Options{})
	for _, qos := range []byte{1, 0} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			b.ReportAllocs()
			var total time.Duration
			var mallocs uint64
			for b.Loop() {
				b.StopTimer()
				buf := newMemBuffer(b)
				appendN(b, buf, record.LaneScore, 0, n, func(i int) []byte { return scoreJSON("pump", i) })
				opts := testOptions(broker.URL())
				opts.ScoreQoS = qos
				opts.ReplayRate = 0
				opts.InFlight = drainInFlight
				opts.CommandsEnabled = false
				b.StartTimer()
				start, m0 := time.Now(), mallocCount()
				p, stop := benchPublisher(b, buf, opts)
				testkit.WaitFor(b, 5*time.Minute, "the backlog drained", func() bool { return p.Stats().Lanes["score"].Published >= uint64(n) })
				total += time.Since(start)
				mallocs += mallocCount() - m0
				b.StopTimer()
				stop()
				_ = buf.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "msgs/s")
			b.ReportMetric(float64(mallocs)/float64(n*b.N), "allocs/msg")
		})
	}
}

// BenchmarkAlertLatency appends alerts at 1000/s and measures the time from
// the append to their arrival at a subscriber of the broker (so it includes
// the broker's forwarding), reported as p50 and p99.
func BenchmarkAlertLatency(b *testing.B) {
	broker := mqtttest.Start(b, mqtttest.Options{})
	sub := mqtttest.Subscribe(b, broker, "vigil/dev1/alerts/#", 1)
	buf := newMemBuffer(b)
	opts := testOptions(broker.URL())
	opts.CommandsEnabled = false
	p, stop := benchPublisher(b, buf, opts)
	defer stop()
	testkit.WaitFor(b, 10*time.Second, "connected", p.Connected)
	ctx := context.Background()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var appended []time.Time
	for b.Loop() {
		<-tick.C
		i := len(appended)
		appended = append(appended, time.Now())
		if _, err := buf.Append(ctx, record.LaneAlert, alertJSON("pump", i)); err != nil {
			b.Fatal(err)
		}
	}
	msgs := sub.WaitN(b, len(appended), 30*time.Second)
	lat := make([]time.Duration, 0, len(msgs))
	for _, m := range msgs {
		var w struct{ Seq uint64 }
		if err := json.Unmarshal(m.Payload, &w); err != nil || w.Seq == 0 || int(w.Seq) > len(appended) {
			b.Fatalf("message %q", m.Payload)
		}
		lat = append(lat, m.Received.Sub(appended[w.Seq-1]))
	}
	slices.Sort(lat)
	pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/float64(time.Millisecond), "max-ms")
}

func mallocCount() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// drainN is the backlog of BenchmarkDrain.
var drainN = 1_000_000

// drainInFlight is the InFlight of BenchmarkDrain.
var drainInFlight = DefaultInFlight

func init() {
	flag.IntVar(&drainN, "drain", drainN, "records in the backlog of BenchmarkDrain")
	flag.IntVar(&drainInFlight, "drain-inflight", drainInFlight, "Options.InFlight of BenchmarkDrain")
}
