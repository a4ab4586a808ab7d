package eval

import (
	"math"
	"slices"
	"time"
)

// Alert-level evaluation: what an operator receives is episodes, so a file
// is also judged by the episodes the detector opened — whether the labelled
// anomaly got one, how late, how many opened where nothing was wrong — and
// by SKAB's changepoint score (NAB), with the episode openings as the
// predicted changepoints.

// FalseEpisodeGrace is how long after a labelled anomaly ends an episode
// may still open without counting as false: the windows still hold rows of
// the anomaly.
const FalseEpisodeGrace = 60 * time.Second

// NABWindow is SKAB's scoring window: it starts at each labelled
// changepoint and extends this far to its right.
const NABWindow = 60 * time.Second

// NABProfile weighs a detection (A_TP, for the earliest possible one), a
// false detection (A_FP) and a missed changepoint (A_FN).
type NABProfile struct {
	Name          string
	ATP, AFP, AFN float64
}

// NABProfiles are NAB's three profiles as SKAB uses them.
var NABProfiles = [3]NABProfile{
	{Name: "standard", ATP: 1, AFP: -0.11, AFN: -1},
	{Name: "low_fp", ATP: 1, AFP: -0.22, AFN: -1},
	{Name: "low_fn", ATP: 1, AFP: -0.11, AFN: -2},
}

// NABCounts are the raw NAB sums of one or more files, per profile (in
// NABProfiles' order), and the changepoint confusion counts behind them.
// Sums add across files; the score is normalised only at the end.
type NABCounts struct {
	Raw     [3]float64 `json:"raw"`
	Null    [3]float64 `json:"null"`    // the detector that never fires
	Perfect [3]float64 `json:"perfect"` // the detector that fires at each changepoint
	// Windows is the number of labelled changepoints (scoring windows),
	// TP those with a prediction inside, FN those without; FP counts
	// predictions outside every window.
	Windows int `json:"windows"`
	TP      int `json:"tp"`
	FN      int `json:"fn"`
	FP      int `json:"fp"`
}

// Add sums two files' counts.
func (n NABCounts) Add(o NABCounts) NABCounts {
	for i := range n.Raw {
		n.Raw[i] += o.Raw[i]
		n.Null[i] += o.Null[i]
		n.Perfect[i] += o.Perfect[i]
	}
	n.Windows += o.Windows
	n.TP += o.TP
	n.FN += o.FN
	n.FP += o.FP
	return n
}

// Score is the normalised NAB score of profile i: 100 for the perfect
// detector, 0 for the null one, 100·(raw − null)/(perfect − null). NaN
// without changepoints.
func (n NABCounts) Score(i int) float64 {
	return 100 * ratio(n.Raw[i]-n.Null[i], n.Perfect[i]-n.Null[i])
}

// Scores are the three normalised scores, in NABProfiles' order.
func (n NABCounts) Scores() [3]float64 {
	return [3]float64{n.Score(0), n.Score(1), n.Score(2)}
}

// nabScale is the reward of a detection at relative position x in its
// window (0 at the changepoint, 1 at the window's right end): SKAB's
// scaled sigmoid, a tanh from A_TP at the changepoint down to A_FP at the
// window's end, sampled on 1000 points.
func nabScale(p NABProfile, x float64) float64 {
	const steps = 1000
	k := int(x * steps)
	k = min(max(k, 0), steps-1)
	u := -math.Pi/2 + math.Pi*float64(k)/float64(steps-1)
	half := (p.ATP - p.AFP) / 2
	return -half*math.Tanh(u)/math.Tanh(math.Pi/2) + half + p.AFP
}

// NAB scores the predicted changepoints preds of one file against its
// labelled changepoints cps with SKAB's protocol: a window [cp, cp+width]
// to the right of each changepoint (a window that would overlap the
// previous one starts at the previous one's end); the first prediction in
// a window is a true positive rewarded by nabScale of its position, later
// ones in the same window count for nothing; a window without any is a
// false negative (A_FN); each prediction outside every window is a false
// positive (A_FP). Both slices must be in ascending order.
func NAB(cps, preds []time.Time, width time.Duration) NABCounts {
	var n NABCounts
	type win struct{ lo, hi time.Time }
	wins := make([]win, len(cps))
	for i, c := range cps {
		wins[i] = win{c, c.Add(width)}
		if i > 0 && !wins[i-1].hi.Before(wins[i].lo) {
			wins[i].lo = wins[i-1].hi
		}
	}
	n.Windows = len(wins)
	inside := make([]bool, len(preds))
	var tps []float64 // relative positions of the true positives
	for _, w := range wins {
		first := -1
		for j, p := range preds {
			if !p.Before(w.lo) && !p.After(w.hi) {
				inside[j] = true
				if first < 0 {
					first = j
				}
			}
		}
		if first < 0 {
			n.FN++
			continue
		}
		n.TP++
		x := 0.0
		if span := w.hi.Sub(w.lo); span > 0 {
			x = float64(preds[first].Sub(w.lo)) / float64(span)
		}
		tps = append(tps, x)
	}
	for _, in := range inside {
		if !in {
			n.FP++
		}
	}
	for i, p := range NABProfiles {
		s := p.AFP*float64(n.FP) + p.AFN*float64(n.FN)
		for _, x := range tps {
			s += nabScale(p, x)
		}
		n.Raw[i] = s
		n.Null[i] = float64(n.Windows) * p.AFN
		n.Perfect[i] = float64(n.Windows) * p.ATP
	}
	return n
}

// Alerts is the alert-level result of one file or of a total.
type Alerts struct {
	// Anomalies is the number of labelled anomalies (runs of anomalous
	// rows) in the test rows; Detected those in which an episode opened;
	// Files and FilesDetected count files with an anomaly and files in
	// which every anomaly was detected (totals; 1 or 0 for a file).
	Anomalies     int `json:"anomalies"`
	Detected      int `json:"detected"`
	Files         int `json:"files_with_anomaly"`
	FilesDetected int `json:"files_detected"`
	// Delays are the seconds from each detected anomaly's first row to
	// the first episode opened inside it.
	Delays []float64 `json:"delays_s"`
	// Episodes counts the episodes opened; False those opened outside
	// every anomaly and the FalseEpisodeGrace after it.
	Episodes int `json:"episodes"`
	False    int `json:"false_episodes"`
	// Openings are the times the episodes opened, FalseOpenings those of
	// the false ones.
	Openings      []time.Time `json:"openings"`
	FalseOpenings []time.Time `json:"false_openings"`
	// NAB scores the episode openings as changepoints; NABEdges scores
	// openings and closings, as SKAB's own notebooks take every change of
	// the 0/1 prediction for a changepoint.
	NAB      NABCounts `json:"nab"`
	NABEdges NABCounts `json:"nab_edges"`
	// NABOneEpisode is NAB for the best detector that opens one episode
	// per anomaly, at the anomaly's first row: the most openings as
	// changepoints can score without an episode closing and reopening
	// inside an anomaly (SKAB labels several changepoints per anomaly).
	NABOneEpisode NABCounts `json:"nab_one_episode"`
}

// Add sums two results.
func (a Alerts) Add(o Alerts) Alerts {
	a.Anomalies += o.Anomalies
	a.Detected += o.Detected
	a.Files += o.Files
	a.FilesDetected += o.FilesDetected
	a.Delays = append(slices.Clone(a.Delays), o.Delays...)
	a.Episodes += o.Episodes
	a.False += o.False
	a.Openings = append(slices.Clone(a.Openings), o.Openings...)
	a.FalseOpenings = append(slices.Clone(a.FalseOpenings), o.FalseOpenings...)
	a.NAB = a.NAB.Add(o.NAB)
	a.NABEdges = a.NABEdges.Add(o.NABEdges)
	a.NABOneEpisode = a.NABOneEpisode.Add(o.NABOneEpisode)
	return a
}

// MedianDelay is the median of Delays in seconds, NaN without detections.
func (a Alerts) MedianDelay() float64 {
	if len(a.Delays) == 0 {
		return math.NaN()
	}
	d := slices.Sorted(slices.Values(a.Delays))
	m := len(d) / 2
	if len(d)%2 == 1 {
		return d[m]
	}
	return (d[m-1] + d[m]) / 2
}

// MeanDelay is the mean of Delays in seconds, NaN without detections.
func (a Alerts) MeanDelay() float64 {
	if len(a.Delays) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, d := range a.Delays {
		s += d
	}
	return s / float64(len(a.Delays))
}

// AlertLevel judges one file's episodes. times are the rows' timestamps,
// anomalous their labels and changepoint their changepoint marks (nil: none),
// all over the same rows (the test rows); opens and closes are the times
// the detector opened and closed episodes, ascending.
func AlertLevel(times []time.Time, anomalous, changepoint []bool, opens, closes []time.Time) Alerts {
	var a Alerts
	type span struct{ lo, hi time.Time }
	var spans []span
	for i := 0; i < len(anomalous); i++ {
		if !anomalous[i] {
			continue
		}
		j := i
		for j+1 < len(anomalous) && anomalous[j+1] {
			j++
		}
		spans = append(spans, span{times[i], times[j]})
		i = j
	}
	a.Anomalies = len(spans)
	a.Episodes = len(opens)
	a.Openings = slices.Clone(opens)
	for _, s := range spans {
		for _, o := range opens {
			if !o.Before(s.lo) && !o.After(s.hi) {
				a.Detected++
				a.Delays = append(a.Delays, o.Sub(s.lo).Seconds())
				break
			}
		}
	}
	if a.Anomalies > 0 {
		a.Files = 1
		if a.Detected == a.Anomalies {
			a.FilesDetected = 1
		}
	}
	for _, o := range opens {
		explained := false
		for _, s := range spans {
			if !o.Before(s.lo) && !o.After(s.hi.Add(FalseEpisodeGrace)) {
				explained = true
				break
			}
		}
		if !explained {
			a.False++
			a.FalseOpenings = append(a.FalseOpenings, o)
		}
	}
	var cps []time.Time
	for i, c := range changepoint {
		if c {
			cps = append(cps, times[i])
		}
	}
	a.NAB = NAB(cps, opens, NABWindow)
	starts := make([]time.Time, len(spans))
	for i, s := range spans {
		starts[i] = s.lo
	}
	a.NABOneEpisode = NAB(cps, starts, NABWindow)
	edges := append(slices.Clone(opens), closes...)
	slices.SortFunc(edges, func(a, b time.Time) int { return a.Compare(b) })
	a.NABEdges = NAB(cps, edges, NABWindow)
	return a
}

// CalibrationLevels are the confidence levels CalibrationCheck reports.
var CalibrationLevels = []float64{0.5, 0.9, 0.95, 0.99, 0.999}

// CalibrationPoint compares, for one confidence level c, the share of
// normal windows whose confidence is at least c with 1 − c, the share a
// calibrated confidence gives them.
type CalibrationPoint struct {
	Level    float64 `json:"level"`
	Expected float64 `json:"expected_share"`
	Windows  int     `json:"windows"`
	Above    int     `json:"above"`
	Share    float64 `json:"share"`
}

// CalibrationCheck pools the files' NormalConfidence (fallback:
// NormalConfidenceFallback) and, for each level, counts the windows at or
// above it.
func CalibrationCheck(files []FileResult, levels []float64, fallback bool) []CalibrationPoint {
	out := make([]CalibrationPoint, len(levels))
	for i, c := range levels {
		p := CalibrationPoint{Level: c, Expected: 1 - c}
		for _, f := range files {
			vals := f.NormalConfidence
			if fallback {
				vals = f.NormalConfidenceFallback
			}
			for _, v := range vals {
				p.Windows++
				if v >= c {
					p.Above++
				}
			}
		}
		if p.Windows > 0 {
			p.Share = float64(p.Above) / float64(p.Windows)
		}
		out[i] = p
	}
	return out
}
