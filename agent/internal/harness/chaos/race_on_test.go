//go:build race

package chaos

// raceEnabled: the suite runs under -race (make test), and so does the vigil
// binary it builds, so that the daemon's own goroutines are checked under
// every fault; its memory bound is then multiplied by raceRSSFactor, as the
// race detector's shadow memory costs several times the program's own.
const raceEnabled = true

// raceRSSFactor multiplies the RSS bound under -race.
const raceRSSFactor = 8
