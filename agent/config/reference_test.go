package config

import (
	"os"
	"testing"
)

// TestReferenceIsCurrent keeps REFERENCE.md (linked from the README) in step
// with the keys; regenerate it with -update or `go run ./agent/config/gendoc`.
func TestReferenceIsCurrent(t *testing.T) {
	got := Reference()
	if *update {
		if err := os.WriteFile("REFERENCE.md", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("REFERENCE.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Fatal("REFERENCE.md is out of date: run go test ./agent/config -run Reference -update")
	}
}
