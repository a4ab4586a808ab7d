package fsx

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSynced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSynced(f, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "secret\n" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := f.Close(); err == nil {
		t.Fatal("the file was left open")
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("SyncDir of a missing directory succeeded")
	}
}

// TestWriteSyncedClosesOnFailure: a file opened read-only cannot be
// written; the error comes back and the file is closed all the same.
func TestWriteSyncedClosesOnFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro")
	os.WriteFile(path, nil, 0o644)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSynced(f, []byte("x"), 0o644); err == nil {
		t.Fatal("a write to a read-only file succeeded")
	}
	if err := f.Close(); err == nil {
		t.Fatal("the file was left open")
	}
}

func TestWriteFileAtomicAndCleanTemps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub") // created
	path := filepath.Join(dir, "settings.json")
	var hooked bool
	if err := WriteFileAtomic(path, []byte("one"), 0o600, func() {
		hooked = true
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("before the rename path exists: %v", err)
		}
	}); err != nil || !hooked {
		t.Fatalf("WriteFileAtomic: %v (hook ran: %v)", err, hooked)
	}
	if err := WriteFileAtomic(path, []byte("two"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "two" {
		t.Fatalf("content %q, want two", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	// a temporary file a crash left behind, and an unrelated one
	left := filepath.Join(dir, ".settings.json.tmp-123")
	other := filepath.Join(dir, ".other.tmp-1")
	for _, p := range []string{left, other} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	CleanTemps(path)
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("%s left: %v", left, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("dir holds %d entries, want settings.json and .other.tmp-1", len(ents))
	}
}
