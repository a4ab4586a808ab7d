//go:build linux

package buffer

import (
	"errors"
	"os"
	"syscall"
)

// statfs returns the space available to unprivileged writers on the
// filesystem holding dir, and the filesystem's size.
func statfs(dir string) (free, size int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// fallocKeepSize is FALLOC_FL_KEEP_SIZE.
const fallocKeepSize = 0x1

// errNoPrealloc: the filesystem cannot preallocate.
var errNoPrealloc = errors.New("filesystem does not support fallocate")

// preallocate allocates the blocks of path's first size bytes, creating the
// file if missing. With keepSize the file's size does not change, so that an
// empty file stays empty (Badger then takes it as a new file) while its
// blocks are already reserved.
func preallocate(path string, size int64, keepSize bool) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	var mode uint32
	if keepSize {
		mode = fallocKeepSize
	}
	err = syscall.Fallocate(int(f.Fd()), mode, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		err = errNoPrealloc
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// isNoSpace tells whether err says the filesystem is full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
