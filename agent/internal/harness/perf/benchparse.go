package perf

import (
	"bufio"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// BenchResult is one line of `go test -bench` output.
type BenchResult struct {
	Pkg     string             // import path, from the preceding "pkg:" line
	Name    string             // without the "Benchmark" prefix and the -GOMAXPROCS suffix
	N       int                // iterations
	Metrics map[string]float64 // unit → value: "ns/op", "B/op", "samples/s", ...
}

var procSuffix = regexp.MustCompile(`-\d+$`)

// ParseBench reads `go test -bench` output and returns its results in order.
// Lines that are not results are skipped.
func ParseBench(r io.Reader) ([]BenchResult, error) {
	var out []BenchResult
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(f)%2 != 0 {
			continue // a benchmark's own log line, or a name without results yet
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		res := BenchResult{Pkg: pkg, Name: procSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), ""),
			N: n, Metrics: map[string]float64{}}
		ok := true
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				ok = false
				break
			}
			res.Metrics[f[i+1]] = v
		}
		if ok {
			out = append(out, res)
		}
	}
	return out, sc.Err()
}

// Find returns the first result whose package ends with pkg and whose name
// is name, or nil.
func Find(rs []BenchResult, pkg, name string) *BenchResult {
	for i := range rs {
		if strings.HasSuffix(rs[i].Pkg, pkg) && rs[i].Name == name {
			return &rs[i]
		}
	}
	return nil
}
