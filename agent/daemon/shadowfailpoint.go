//go:build !vigil_failpoints

package daemon

// Failpoints (shadowfailpoint_on.go) let the SIGKILL tests stop a real
// vigil process at a named point of a promotion, a rollback or an atomic
// write. They exist only in a binary built with -tags vigil_failpoints;
// in every other build failpoint does nothing and failpointsOn is false, so
// the calls compile away.
const failpointsOn = false

func failpoint(string) {}
