// Package fsx holds the steps of a durable write that Vigil's files share:
// the daemon's settings and deployments, the episode ledger, the journal,
// the keys `vigil model keygen` writes.
package fsx

import (
	"os"
	"path/filepath"
)

// SyncClose fsyncs f and closes it, and returns the first error of the two.
func SyncClose(f *os.File) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteSynced writes data to f with mode perm (whatever the umask made
// of it), then fsyncs and closes f; f is closed whatever fails.
func WriteSynced(f *os.File, data []byte, perm os.FileMode) error {
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return SyncClose(f)
}

// SyncDir fsyncs a directory, so that a rename in it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return SyncClose(d)
}

// WriteFileAtomic writes data to path so that a crash leaves either the
// old file or the new one: a temporary file in the same directory
// (".BASE.tmp-*"), written with mode perm and fsynced, renamed over path,
// and the directory fsynced. The directory is created if missing.
// beforeRename, when not nil, runs between the write and the rename (the
// daemon's failpoints).
func WriteFileAtomic(path string, data []byte, perm os.FileMode, beforeRename func()) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename there is nothing to remove
	if err := WriteSynced(f, data, perm); err != nil {
		return err
	}
	if beforeRename != nil {
		beforeRename()
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// CleanTemps removes the temporary files WriteFileAtomic left beside path
// when a crash cut it short (path itself is whole: the old file or the
// new one).
func CleanTemps(path string) {
	tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*"))
	for _, t := range tmps {
		os.Remove(t)
	}
}
