package eval

import "fmt"

// Mapping says how the detector's verdicts on windows become a verdict on
// every row. A window's verdict is known when its last row arrives, so a
// mapping that looks at windows ending after a row decides that row late:
// each mapping says by how much.
type Mapping string

// The mappings.
const (
	// Causal flags a row when the detector is anomalous after the first
	// window that ends at or after the row. With hop H a row's verdict is
	// known at most H-1 rows after it arrived (at once with hop 1); this is
	// what a device alerting in real time does.
	Causal Mapping = "causal"
	// Cover flags a row only when the detector is anomalous after every
	// window that covers it: the rule of SKAB's Conv-AE reference. It
	// trims both ends of an episode, notably the tail in which windows
	// still hold rows of an anomaly that has ended, at the price of
	// deciding a row Window-1 rows after it arrived.
	Cover Mapping = "cover"
)

func (m Mapping) validate() error {
	switch m {
	case Causal, Cover:
		return nil
	}
	return fmt.Errorf("Mapping is %q, want %q or %q", m, Causal, Cover)
}

// Predict maps window verdicts to row verdicts for rows [from, to).
// ends[i] is the row at which window i ends (ascending) and anomalous[i]
// the detector's state after it; window is the number of rows per window.
// Under Causal, rows after the last window's end take its verdict; under
// Cover, a row that no window covers is not flagged.
func Predict(m Mapping, window int, ends []int, anomalous []bool, from, to int) []bool {
	if len(ends) != len(anomalous) {
		panic(fmt.Sprintf("eval: %d window ends for %d verdicts", len(ends), len(anomalous)))
	}
	pred := make([]bool, max(to-from, 0))
	if len(ends) == 0 {
		return pred
	}
	switch m {
	case Cover:
		// The windows covering row r end in [r, r+window-1]; [lo, hi) is
		// their index range and normal counts the clear ones among them.
		lo, hi, normal := 0, 0, 0
		for r := from; r < to; r++ {
			for hi < len(ends) && ends[hi] <= r+window-1 {
				if !anomalous[hi] {
					normal++
				}
				hi++
			}
			for lo < hi && ends[lo] < r {
				if !anomalous[lo] {
					normal--
				}
				lo++
			}
			pred[r-from] = hi > lo && normal == 0
		}
	default:
		j := 0
		for r := from; r < to; r++ {
			for j < len(ends)-1 && ends[j] < r {
				j++
			}
			pred[r-from] = anomalous[j]
		}
	}
	return pred
}
