package buffer

import (
	"strings"
	"testing"
)

// TestCheckDisk: a cap far above what the filesystem holds is warned
// about, a small one is not; a missing directory is checked on its nearest
// existing parent.
func TestCheckDisk(t *testing.T) {
	bo := DefaultBadgerOptions(t.TempDir() + "/not/yet/buffer")
	bo.MaxBytes = 1 << 60
	if _, _, err := statfs(t.TempDir()); err != nil {
		t.Skipf("statfs: %v", err)
	}
	if w := CheckDisk(bo); !strings.Contains(w, "exceeds what the filesystem can hold") {
		t.Errorf("CheckDisk with a %d-byte cap: %q", bo.MaxBytes, w)
	}
	bo.MaxBytes = 1 << 20
	bo.MaxRecordBytes = 64 << 10
	bo.MemoryBudget = minMemoryBudget
	if w := CheckDisk(bo); w != "" {
		t.Errorf("CheckDisk with a 1 MiB cap: %q", w)
	}
}
