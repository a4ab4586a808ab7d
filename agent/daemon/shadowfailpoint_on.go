//go:build vigil_failpoints

package daemon

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// failpointEnv names the failpoint at which a binary built with -tags
// vigil_failpoints kills itself with SIGKILL (tests only; see
// shadowfailpoint.go and TestPromotionSIGKILL): NAME, or NAME#N for the
// Nth time the process reaches NAME.
const failpointEnv = "VIGIL_TEST_FAILPOINT"

const failpointsOn = true

var failpointHits struct {
	sync.Mutex
	n map[string]int
}

// failpoint kills the process with SIGKILL when it reaches the failpoint
// VIGIL_TEST_FAILPOINT names: nothing after it runs, as in a crash (the
// page cache survives, unlike in a power cut).
func failpoint(name string) {
	want, nth, _ := strings.Cut(os.Getenv(failpointEnv), "#")
	if want != name {
		return
	}
	n := 1
	if nth != "" {
		n, _ = strconv.Atoi(nth)
	}
	failpointHits.Lock()
	if failpointHits.n == nil {
		failpointHits.n = map[string]int{}
	}
	failpointHits.n[name]++
	hit := failpointHits.n[name] == n
	failpointHits.Unlock()
	if hit {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
