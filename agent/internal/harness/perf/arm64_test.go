package perf

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var (
	arm64Plugin = flag.String("perf.arm64.plugin", "", "the insncount QEMU plugin (.so); set to count arm64 instructions (TestARM64Instructions)")
	arm64Qemu   = flag.String("perf.arm64.qemu", "qemu-aarch64 -L /usr/aarch64-linux-gnu", "the qemu-user command")
	arm64Inf    = flag.String("perf.arm64.inference", "", "the inference package's test binary for linux/arm64")
	arm64Train  = flag.String("perf.arm64.train", "", "the models/train package's test binary for linux/arm64")
)

// arm64Workload is a benchmark counted under qemu at two iteration counts.
type arm64Workload struct {
	name, unit string
	bin        *string
	pkgDir     string // the package's directory, the test binary's working directory
	bench      string
	a, b       int // iterations (-test.benchtime=Nx); a > b
	perIter    int // operations per iteration (windows per batch)
}

// TestARM64Instructions counts the guest instructions that inference and
// training take on linux/arm64, under qemu-user with the insncount plugin
// (agent/internal/harness/perf/qemu/insncount.c): each benchmark runs at two iteration
// counts and the difference, divided by the extra operations, is the
// count per operation, with start-up and set-up cancelled out. Times
// under emulation mean nothing; instruction counts are what the
// emulator can honestly give (they are not cycles: a real core's IPC and
// caches are not modelled). It runs only with -perf.arm64.plugin.
func TestARM64Instructions(t *testing.T) {
	if *arm64Plugin == "" {
		t.Skip("runs with -perf.arm64.plugin (make bench-arm64)")
	}
	root, _ := filepath.Abs("../../../..")
	ws := []arm64Workload{
		{"inference dense 60×8 batch 1 (Score)", "window", arm64Inf, "inference", `^BenchmarkScore$/^dense$/^batch=1$/^score$`, 2200, 200, 1},
		{"inference dense 60×8 batch 1 (bare TfLiteInterpreterInvoke)", "window", arm64Inf, "inference", `^BenchmarkScore$/^dense$/^batch=1$/^bare-invoke$`, 2200, 200, 1},
		{"inference dense 60×8 batch 64 (Score)", "window", arm64Inf, "inference", `^BenchmarkScore$/^dense$/^batch=64$/^score$`, 110, 10, 64},
		{"inference conv 60×8 batch 64 (Score)", "window", arm64Inf, "inference", `^BenchmarkScore$/^conv$/^batch=64$/^score$`, 22, 2, 64},
		{"inference dense 60×8 float32 batch 1 (Score, BenchmarkScoreInt8)", "window", arm64Inf, "inference", `^BenchmarkScoreInt8$/^float32$/^batch=1$/^score$`, 2200, 200, 1},
		{"inference dense 60×8 int8 batch 1 (Score)", "window", arm64Inf, "inference", `^BenchmarkScoreInt8$/^int8$/^batch=1$/^score$`, 2200, 200, 1},
		{"inference dense 60×8 float32 batch 64 (Score, BenchmarkScoreInt8)", "window", arm64Inf, "inference", `^BenchmarkScoreInt8$/^float32$/^batch=64$/^score$`, 110, 10, 64},
		{"inference dense 60×8 int8 batch 64 (Score)", "window", arm64Inf, "inference", `^BenchmarkScoreInt8$/^int8$/^batch=64$/^score$`, 110, 10, 64},
		{"training: Learn 400×8, dense, to a loaded model", "Learn", arm64Train, "models/train", `^BenchmarkLearn400x8$/^arch=dense$`, 2, 1, 1},
	}
	var out []ARM64Count
	for _, w := range ws {
		if *w.bin == "" {
			t.Logf("%s: no test binary given; skipped", w.name)
			continue
		}
		ia, err := countInsns(*w.bin, filepath.Join(root, w.pkgDir), w.bench, w.a)
		if err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		ib, err := countInsns(*w.bin, filepath.Join(root, w.pkgDir), w.bench, w.b)
		if err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		c := ARM64Count{Name: w.name, Unit: w.unit, RunsA: w.a, RunsB: w.b, InsnsA: ia, InsnsB: ib,
			PerOp:     (float64(ia) - float64(ib)) / float64((w.a-w.b)*w.perIter),
			Measurand: "qemu-user + insncount plugin, all guest threads"}
		t.Logf("%s: %.0f instructions per %s (%d at %dx, %d at %dx)", c.Name, c.PerOp, c.Unit, ia, w.a, ib, w.b)
		out = append(out, c)
	}
	writeJSON(t, "arm64.json", out)
}

var insnLine = regexp.MustCompile(`insncount: (\d+) guest instructions`)

// countInsns runs one benchmark of an arm64 test binary n times under qemu
// with the plugin and returns the guest instructions of the whole process.
func countInsns(bin, dir, bench string, n int) (uint64, error) {
	q := strings.Fields(*arm64Qemu)
	args := append(q[1:], "-plugin", *arm64Plugin, bin, "-test.run", "^$", "-test.bench", bench,
		"-test.benchtime", fmt.Sprintf("%dx", n), "-test.count", "1")
	cmd := exec.Command(q[0], args...)
	cmd.Dir = dir
	var stderr, stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: %w\n%s%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "Benchmark") {
		return 0, fmt.Errorf("%s ran no benchmark:\n%s", bench, stdout.String())
	}
	m := insnLine.FindStringSubmatch(stderr.String())
	if m == nil {
		return 0, fmt.Errorf("no count from the plugin:\n%s", stderr.String())
	}
	return strconv.ParseUint(m[1], 10, 64)
}
