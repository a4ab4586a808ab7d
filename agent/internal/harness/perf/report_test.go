package perf

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var reportRun = flag.Bool("perf.report", false, "print the benchmark report from the results in -perf.out (TestBenchReport)")

// TestBenchReport prints `make bench`'s table from what the other steps
// left in -perf.out: bench.txt (go test -bench ./...), load.json (TestLoad)
// and arm64.json (TestARM64Instructions). A missing file leaves its rows
// "not measured". It writes the table to report.md too.
func TestBenchReport(t *testing.T) {
	if !*reportRun {
		t.Skip("runs with -perf.report (make bench-report)")
	}
	r := Report{LoadAvg: loadAvg(), At: time.Now()}
	if f, err := os.Open(filepath.Join(*outDir, "bench.txt")); err == nil {
		r.Bench, err = ParseBench(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(*outDir, "load.json")); err == nil {
		r.Load = &LoadReport{}
		if err := json.Unmarshal(b, r.Load); err != nil {
			t.Fatalf("load.json: %v", err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(*outDir, "arm64.json")); err == nil {
		if err := json.Unmarshal(b, &r.ARM64); err != nil {
			t.Fatalf("arm64.json: %v", err)
		}
	}
	var s strings.Builder
	fmt.Fprintf(&s, "# Vigil benchmark report, %s (load average %s)\n\n", r.At.Format(time.RFC3339), r.LoadAvg)
	r.Table().WriteTo(&s)
	if r.Load != nil {
		fmt.Fprintf(&s, "\n## Peer workload (%s; %s; %.0f s per rate)\n\n", r.Load.Model, r.Load.Machine, r.Load.PhaseSecs)
		LoadTable(*r.Load).WriteTo(&s)
	}
	if err := os.WriteFile(filepath.Join(*outDir, "report.md"), []byte(s.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\n%s\nreport: %s\n", s.String(), filepath.Join(*outDir, "report.md"))
}
