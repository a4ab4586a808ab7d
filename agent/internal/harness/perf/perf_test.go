package perf

import (
	"bytes"
	"image/png"
	"math"
	"strings"
	"testing"
	"time"
)

func TestTable(t *testing.T) {
	var tb Table
	tb.Header = []string{"figure", "value", "target"}
	tb.Add("samples/s", "61 234", "≥ 50 000")
	tb.Addf("RSS", 12.5)
	want := "" +
		"| figure    | value  | target   |\n" +
		"|-----------|--------|----------|\n" +
		"| samples/s | 61 234 | ≥ 50 000 |\n" +
		"| RSS       | 12.5   |          |\n"
	if got := tb.String(); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestParseBench(t *testing.T) {
	out := `goos: linux
pkg: github.com/vigil-edge/vigil/inference
BenchmarkScore/dense/batch=64/score-2         	    1000	   1200000 ns/op	     18750 ns/window	       0 B/op	       0 allocs/op
BenchmarkScore/dense/batch=64/bare-invoke-2   	    1000	   1100000 ns/op	     17187 ns/window	         1.091 score/bare
    bench_test.go:12: a log line
BenchmarkLong
BenchmarkLong-2   	       1	5000000000 ns/op
PASS
pkg: github.com/vigil-edge/vigil/buffer
BenchmarkAppend/batched/batch=1-2 	   50000	     20000 ns/op	  10.00 MB/s
`
	rs, err := ParseBench(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 {
		t.Fatalf("%d results, want 4: %+v", len(rs), rs)
	}
	r := Find(rs, "/inference", "Score/dense/batch=64/bare-invoke")
	if r == nil || r.N != 1000 || r.Metrics["score/bare"] != 1.091 || r.Metrics["ns/window"] != 17187 {
		t.Fatalf("bare-invoke: %+v", r)
	}
	if r := Find(rs, "/buffer", "Append/batched/batch=1"); r == nil || r.Metrics["MB/s"] != 10 {
		t.Fatalf("append: %+v", r)
	}
	if Find(rs, "/buffer", "Score/dense/batch=64/score") != nil {
		t.Fatal("found a benchmark in the wrong package")
	}
}

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(`# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
vigil_drops_total{reason="queue_full",source="bus"} 3
vigil_drops_total{reason="late",source="bus"} 2
vigil_stream_state{model="pump8@1",state="scoring",stream="a b"} 1
process_resident_memory_bytes 1.2345e+07
`))
	if err != nil {
		t.Fatal(err)
	}
	if m["go_goroutines"] != 42 || m.Sum("vigil_drops_total") != 5 || m["process_resident_memory_bytes"] != 12345000 {
		t.Fatalf("metrics %v", m)
	}
	if q := m.With("vigil_drops_total", `reason="queue_full"`); len(q) != 1 || q.Sum("vigil_drops_total") != 3 {
		t.Fatalf("With: %v", q)
	}
	if m[`vigil_stream_state{model="pump8@1",state="scoring",stream="a b"}`] != 1 {
		t.Fatalf("label value with a space: %v", m)
	}
}

func TestParseStat(t *testing.T) {
	// The command may hold spaces and parentheses.
	stat := []byte("1234 (vig il) (x)) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 1000000 3000 18446744073709551615")
	cpu, th, err := parseStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	if cpu != 3*time.Second || th != 9 {
		t.Fatalf("cpu %v threads %d, want 3s and 9", cpu, th)
	}
	if kb := parseStatusKB([]byte("Name:\tvigil\nVmRSS:\t   15360 kB\nThreads: 9\n"), "VmRSS:"); kb != 15360 {
		t.Fatalf("VmRSS %d", kb)
	}
}

func TestSlopeAndPercentile(t *testing.T) {
	if s := Slope([]float64{0, 1, 2, 3}, []float64{1, 3, 5, 7}); math.Abs(s-2) > 1e-12 {
		t.Fatalf("slope %v, want 2", s)
	}
	if s := Slope([]float64{1, 1}, []float64{1, 2}); !math.IsNaN(s) {
		t.Fatalf("slope of one x: %v, want NaN", s)
	}
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	if p := Percentile(ds, 0.5); p != 5 {
		t.Fatalf("p50 %v", p)
	}
	if p := Percentile(ds, 0.99); p != 10 {
		t.Fatalf("p99 %v", p)
	}
}

func TestPlotPNG(t *testing.T) {
	xs := []float64{0, 10, 20, 30, 40}
	var buf bytes.Buffer
	err := WritePNG(&buf, []Series{
		{Name: "RSS (MB)", X: xs, Y: []float64{10, 12, 12.5, 12.4, 12.6}, Mark: 10},
		{Name: "goroutines", X: xs, Y: []float64{20, 25, 25, 25, 25}},
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != panelW || b.Dy() != 2*panelH {
		t.Fatalf("size %v", b)
	}
	// The line's colour appears in both panels.
	for p := range 2 {
		found := false
		for y := p * panelH; y < (p+1)*panelH && !found; y++ {
			for x := 0; x < panelW; x++ {
				if r, g, b, _ := img.At(x, y).RGBA(); r>>8 == 31 && g>>8 == 119 && b>>8 == 180 {
					found = true
					break
				}
			}
		}
		if !found {
			t.Fatalf("panel %d has no line", p)
		}
	}
	for _, r := range "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ .,-+=:/%()_<>?" {
		if _, ok := font5x7[r]; !ok {
			t.Errorf("font lacks %q", r)
		}
	}
}
