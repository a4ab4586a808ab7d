//go:build !linux

package buffer

import "errors"

var errNoPrealloc = errors.New("preallocation is only implemented on Linux")

// statfs is only implemented on Linux; elsewhere the disk guard is off.
func statfs(string) (free, size int64, err error) {
	return 0, 0, errors.New("statfs is only implemented on Linux")
}

func preallocate(string, int64, bool) error { return errNoPrealloc }

func isNoSpace(error) bool { return false }
