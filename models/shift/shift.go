// Package shift measures level shifts inside a window of sensor samples:
// how far each channel's last few samples moved from the rest of the
// window, in units of the rest's own spread. The trainer records the
// largest shift of each channel in its training data (the manifest's
// shift block), and the agent counts a window whose shift reaches a
// multiple of that as exceeding its threshold. A valve that starts to
// close moves the flow by a fraction of its noise at first: a window's
// reconstruction error averages that away over 60 samples, while the
// last 10 samples' mean against the 50 before stands out (agent/eval
// README, "Level shifts").
package shift

import "math"

// DefaultFactor is the agent's default streams[].shift_factor and `vigil
// eval skab`'s: a window whose shift reaches this many times the largest
// in the training data exceeds (chosen on SKAB with leave-files-out
// validation, agent/eval/README.md).
const DefaultFactor = 1.8

// FloorShare is the least standard deviation Z divides a channel's shift
// by, as a share of the channel's normalisation std: a quantized channel
// may read one value throughout the rest of a window.
const FloorShare = 0.05

// Recent is the number of rows at the end of a window of length rows that
// Z compares with the rest: a sixth of it, at least 1; 0 (no shift) for a
// window of fewer than 4 rows.
func Recent(length int) int {
	if length < 4 {
		return 0
	}
	return max(1, length/6)
}

// Z writes, for each channel of window (rows × channels, row-major, oldest
// first), (mean of its last recent rows − mean of the rows before) /
// max(std of the rows before, floor[c]) into z. 0 < recent < rows.
func Z(window []float64, channels, recent int, floor, z []float64) {
	rows := len(window) / channels
	base := rows - recent
	for c := range channels {
		var sum, sq, rsum float64
		for r := range base {
			sum += window[r*channels+c]
		}
		mean := sum / float64(base)
		for r := range base {
			d := window[r*channels+c] - mean
			sq += d * d
		}
		for r := base; r < rows; r++ {
			rsum += window[r*channels+c]
		}
		sd := max(math.Sqrt(sq/float64(base)), floor[c])
		z[c] = (rsum/float64(recent) - mean) / sd
	}
}

// ZAt is Z of the window of length rows that ends on row end of rows
// (rows × channels, in time order; end ≥ length−1). win is scratch for the
// window, reused and returned.
func ZAt(rows [][]float64, end, length, recent int, floor, z, win []float64) []float64 {
	win = win[:0]
	for _, r := range rows[end+1-length : end+1] {
		win = append(win, r...)
	}
	Z(win, len(z), recent, floor, z)
	return win
}

// Max returns, per channel, the largest |Z| over the windows of length
// rows that end on each of rows (rows × channels, in time order) from the
// length-th on: what the manifest's shift.max records. Nil when there are
// fewer rows than a window.
func Max(rows [][]float64, length, recent int, floor []float64) []float64 {
	if len(rows) < length || len(rows) == 0 {
		return nil
	}
	c := len(rows[0])
	out := make([]float64, c)
	win := make([]float64, 0, length*c)
	z := make([]float64, c)
	for e := length - 1; e < len(rows); e++ {
		win = ZAt(rows, e, length, recent, floor, z, win)
		for i, v := range z {
			out[i] = max(out[i], math.Abs(v))
		}
	}
	return out
}

// Fit is what a trainer records of rows (rows × channels, in time order,
// windows of length rows; std each channel's normalisation std) for the
// manifest's shift block: Recent(length), a floor of FloorShare × std per
// channel and Max. recent is 0 (nothing to record) for a window too short
// or fewer rows than a window.
func Fit(rows [][]float64, length int, std []float64) (recent int, floor, maxShift []float64) {
	recent = Recent(length)
	if recent == 0 || len(rows) < length {
		return 0, nil, nil
	}
	floor = make([]float64, len(std))
	for i, sd := range std {
		floor[i] = FloorShare * sd
	}
	return recent, floor, Max(rows, length, recent, floor)
}

// Over returns the channel whose |z| is furthest over factor × max (the
// manifest's shift.max), and its |z| / (factor × max[c]) ≥ 1; or -1, 0
// when none is. A channel whose max is 0 is left to the model: it never
// moved in training, or the trainer found it smoother than white noise
// (its trend, not a shift, moves a window's end from its start).
func Over(z, maxShift []float64, factor float64) (channel int, ratio float64) {
	channel = -1
	if factor <= 0 {
		return -1, 0
	}
	for c, v := range z {
		if c >= len(maxShift) || !(maxShift[c] > 0) {
			continue
		}
		if r := math.Abs(v) / (factor * maxShift[c]); r >= 1 && r > ratio {
			channel, ratio = c, r
		}
	}
	return channel, ratio
}
