//go:build !race

package publish

// raceEnabled tells tests that the race detector slows everything down.
const raceEnabled = false
