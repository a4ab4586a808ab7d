package config

import (
	"testing"

	"github.com/vigil-edge/vigil/internal/golden"
)

// TestReferenceIsCurrent keeps REFERENCE.md (linked from the README) in step
// with the keys; regenerate it with -update or `go run ./agent/config/gendoc`.
func TestReferenceIsCurrent(t *testing.T) {
	got := Reference()
	want := golden.Want(t, "REFERENCE.md", []byte(got), *update)
	if string(want) != got {
		t.Fatal("REFERENCE.md is out of date: run go test ./agent/config -run Reference -update")
	}
}
