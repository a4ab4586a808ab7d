//go:build race

package buffer

// raceEnabled: the race detector slows everything several times; tests that
// measure resources or push hundreds of megabytes are skipped under it.
const raceEnabled = true
