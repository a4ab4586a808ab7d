// Package fsx holds the steps of a durable write that Vigil's files share:
// the daemon's settings and deployments, the episode ledger, the keys
// `vigil model keygen` writes.
package fsx

import "os"

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
