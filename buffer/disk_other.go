//go:build !unix

package buffer

import "io/fs"

// allocated returns the space a file takes on disk; without block counts it
// is the file's size.
func allocated(fi fs.FileInfo) int64 {
	return fi.Size()
}

// withDirLock runs fn; Badger's own lock protects the directory.
func withDirLock(_ string, fn func() error) error {
	return fn()
}
