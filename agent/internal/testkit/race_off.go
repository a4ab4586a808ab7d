//go:build !race

package testkit

// Race is whether the race detector is on (go test -race).
const Race = false
