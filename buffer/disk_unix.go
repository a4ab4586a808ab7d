//go:build unix

package buffer

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// allocated returns the space a file takes on disk: its allocated blocks,
// which for sparse files (Badger's memory-mapped logs) is less than its size.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}

// withDirLock runs fn holding the lock Badger takes on dir, so that fn
// cannot disturb another process using the directory; it fails like Badger
// would if the directory is in use.
func withDirLock(dir string, fn func() error) error {
	f, err := os.Open(dir) // Badger locks the directory itself
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("directory in use by another process: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}
