package golden

import (
	"path/filepath"
	"testing"
)

func TestWant(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "x.golden")
	if got := Want(t, path, []byte("one"), true); string(got) != "one" {
		t.Fatalf("after update: %q", got)
	}
	if got := Want(t, path, []byte("two"), false); string(got) != "one" {
		t.Fatalf("without update: %q", got)
	}
}
