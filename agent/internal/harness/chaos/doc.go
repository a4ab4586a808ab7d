// Package chaos is Vigil's fault-injection suite. Its test, TestChaos, runs
// the real vigil binary against a real mosquitto (through a TCP proxy that
// cuts, blackholes, delays and throttles the link), the Amplitude and Dify
// test doubles, and breaks one thing per scenario: the broker, the network,
// the process (SIGKILL under load), the disk cap, the disk filling up (on a
// small ext4 of its own, as root), the HTTP APIs, the samples' clock.
// After each scenario it checks the invariants Vigil
// promises — no accepted alert lost, no duplicate without the same id, order
// within a lane, memory bounded, a bounded time to recover — and prints one
// table row per scenario.
//
// The package has no code of its own outside its tests. `make chaos-ci`
// (and `go test ./agent/internal/harness/chaos`, hence `make test`) runs the CI-sized suite;
// `make chaos` (or -chaos.full, or VIGIL_CHAOS=full) the full one. It is
// skipped in -short mode.
package chaos
