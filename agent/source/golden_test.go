package source

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGeneratorsGolden pins the simulators' output: the default models are
// trained on it, so a change must be deliberate (go test -update, then
// retrain). The hashes are the same on amd64 and arm64.
func TestGeneratorsGolden(t *testing.T) {
	so := DefaultSimulatorOptions()
	so.Faults = true
	sh := sha256.New()
	if err := WriteCSV(sh, 5000, so); err != nil {
		t.Fatal(err)
	}
	kh := sha256.New()
	if err := WriteEventsJSONL(kh, 2000, DefaultKioskOptions()); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("simulator.csv 5000 rows, demo faults, seed 1: %x\nkiosk.jsonl 2000 events, seed 1: %x\n", sh.Sum(nil), kh.Sum(nil))
	path := filepath.Join("testdata", "generators.golden")
	want := golden.Want(t, path, []byte(got), *update)
	if got != strings.ReplaceAll(string(want), "\r\n", "\n") {
		t.Fatalf("the simulators' output changed:\n got %s\nwant %s\nIf intended: go test ./agent/source -run Golden -update, and retrain the default models.", got, want)
	}
}
