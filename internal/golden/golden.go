// Package golden is the tests' golden files: a test renders what it
// checks and compares it with the file, which `go test -update` rewrites.
// It imports nothing of the module, so any package's tests may use it.
package golden

import (
	"os"
	"path/filepath"
	"testing"
)

// Want returns the golden file at path, after writing got to it when
// update is set. A missing file fails the test, saying how to create it.
func Want(tb testing.TB, path string, got []byte, update bool) []byte {
	tb.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("%v (run go test -update to create it)", err)
	}
	return want
}
