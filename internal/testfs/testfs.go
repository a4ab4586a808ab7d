// Package testfs mounts small filesystems for tests that need a disk to
// fill up: a tmpfs, or an ext4 image on a loop device. Mounting needs root
// (CI runs as root); elsewhere the tests skip with a message.
package testfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// Kinds are the filesystems Mount knows.
var Kinds = []string{"tmpfs", "ext4"}

// Mount mounts a fresh filesystem of kind ("tmpfs" or "ext4") and size
// bytes on a new temporary directory, which it returns; the filesystem is
// unmounted when the test ends. It skips the test unless it runs as root on
// Linux with the tools it needs.
func Mount(t testing.TB, kind string, size int64) string {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skipf("mounting a small %s needs root on Linux (CI runs as root)", kind)
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var args []string
	switch kind {
	case "tmpfs":
		args = []string{"-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir}
	case "ext4":
		mkfs, err := exec.LookPath("mkfs.ext4")
		if err != nil {
			t.Skip("mkfs.ext4 is not installed")
		}
		img := filepath.Join(t.TempDir(), "fs.img")
		f, err := os.Create(img)
		if err == nil {
			err = errors.Join(f.Truncate(size), f.Close())
		}
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(mkfs, "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v: %s", err, out)
		}
		args = []string{"-o", "loop", img, dir}
	default:
		t.Fatalf("testfs: unknown filesystem %q", kind)
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a %s (%v: %s)", kind, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			// A lazy unmount still frees the loop device once files close.
			if out2, err2 := exec.Command("umount", "-l", dir).CombinedOutput(); err2 != nil {
				t.Errorf("umount %s: %v: %s; %v: %s", dir, err, out, err2, out2)
			}
		}
	})
	return dir
}

// Free returns the space available on the filesystem holding dir.
func Free(t testing.TB, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// Fill writes the file path until the filesystem is full, as dd would,
// and returns how many bytes it wrote.
func Fill(t testing.TB, path string) int64 {
	t.Helper()
	n, err := FillFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// FillFile is Fill for code that reports errors itself.
func FillFile(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	for len(chunk) > 0 {
		w, err := f.Write(chunk)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			chunk = chunk[:len(chunk)/2] // fill the last blocks too
			continue
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
