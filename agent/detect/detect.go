// Package detect turns a stream's window scores into alerts: a threshold,
// hysteresis (k of the last n windows above it), one episode per anomaly with
// updates instead of a storm (escalation, close, reopen within a cooldown),
// severity bands on score/threshold, and the channels that contributed most.
//
// An episode closes only after the stream has been normal for CloseAfter:
// a return above the threshold inside that span continues the episode (a
// suppressed flip, reported in Result.Resumed) instead of closing it and
// opening or reopening another, so scores hovering at the threshold give
// one episode, not a storm of close/reopen pairs.
//
// A Detector is the state of one stream (or one key of a behaviour stream).
// It is not safe for concurrent use; the pipeline gives each stream's windows
// to its detector in order. The SKAB evaluation uses the same Detector.
package detect

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// Bands are the score/threshold ratios at which an anomaly becomes a
// warning, major or critical.
type Bands struct {
	Warning  float64 `json:"warning"`
	Major    float64 `json:"major"`
	Critical float64 `json:"critical"`
}

// Severity names the band a ratio falls in: "" below Warning.
func (b Bands) Severity(ratio float64) string {
	switch {
	case ratio >= b.Critical:
		return "critical"
	case ratio >= b.Major:
		return "major"
	case ratio >= b.Warning:
		return "warning"
	}
	return ""
}

// Options configure a Detector.
type Options struct {
	// Threshold is the score at or above which a window exceeds. Must be > 0.
	Threshold float64
	// K and N: the stream is anomalous while at least K of its last N
	// windows exceed the threshold. 1 of 1 alerts on every exceeding window.
	K, N int
	// Cooldown: an anomaly that starts again within Cooldown of an episode's
	// close reopens that episode (an update) instead of opening a new one.
	Cooldown time.Duration
	// CloseAfter: an episode closes at the first window that ends at least
	// CloseAfter after the first window of an unbroken normal run (by the
	// windows' end times). An anomalous window inside that span continues
	// the episode. 0 closes at the first normal window.
	CloseAfter time.Duration
	// Bands map score/threshold to a severity.
	Bands Bands
	// CUSUM, when its H is above 0, also makes the stream anomalous while
	// a one-sided CUSUM of the normalised log score reaches H (see CUSUM).
	CUSUM CUSUM
}

// CUSUM is a one-sided cumulative sum on z = (ln score − Location) / Scale:
// S = min(H, max(0, S + z − K)) after each window, and the stream is
// anomalous while S ≥ H (OR the K-of-N rule, unless Only). S is capped at
// H so that it falls back below H at the first window with z < K after an
// anomaly, as the K-of-N rule does, instead of draining a sum built over a
// long anomaly. It accumulates scores that stay below the threshold but
// above the normal level (K) for a while. The zero value is off. On SKAB
// it did not open episodes earlier (agent/eval/README.md, "a CUSUM beside
// the threshold"): it is an evaluation option (vigil eval skab --cusum),
// not in the agent's config.
type CUSUM struct {
	// K is the allowance and H the decision interval, in units of z.
	K, H float64
	// Location and Scale normalise a score (the model's fit of unseen
	// normal scores, models.UnseenFit, is one choice).
	Location, Scale float64
	// Only: the CUSUM alone decides; the threshold's K-of-N rule then
	// opens nothing (Threshold still sets Ratio and severities).
	Only bool
}

// On reports whether the CUSUM is used.
func (c CUSUM) On() bool { return c.H > 0 }

// z normalises a score; NaN scores give +Inf (as they exceed), scores ≤ 0
// −Inf.
func (c CUSUM) z(score float64) float64 {
	if math.IsNaN(score) {
		return math.Inf(1)
	}
	return (math.Log(score) - c.Location) / c.Scale
}

// DefaultCloseAfter is the default Options.CloseAfter: long enough to ride
// over scores that hover at the threshold, short against the gap between two
// faults.
const DefaultCloseAfter = 5 * time.Second

// DefaultOptions returns 2-of-3 hysteresis, episodes that close after 5 s
// of normal windows, no cooldown (CloseAfter already keeps one anomaly in
// one episode) and severity bands at 1×, 1.5× and 2.5× the threshold.
// Threshold has no default.
func DefaultOptions() Options {
	return Options{K: 2, N: 3, CloseAfter: DefaultCloseAfter, Bands: Bands{Warning: 1, Major: 1.5, Critical: 2.5}}
}

// Validate reports the first problem with the options, naming the field.
func (o Options) Validate() error {
	switch {
	case !(o.Threshold > 0) || math.IsInf(o.Threshold, 0):
		return fmt.Errorf("detect: Threshold is %v, want a positive finite number", o.Threshold)
	case o.N < 1 || o.N > 64:
		return fmt.Errorf("detect: N is %d, want 1..64", o.N)
	case o.K < 1 || o.K > o.N:
		return fmt.Errorf("detect: K is %d, want 1..N (%d)", o.K, o.N)
	case o.Cooldown < 0:
		return fmt.Errorf("detect: Cooldown is %v, want ≥ 0", o.Cooldown)
	case o.CloseAfter < 0:
		return fmt.Errorf("detect: CloseAfter is %v, want ≥ 0", o.CloseAfter)
	case !(o.Bands.Warning > 0 && o.Bands.Warning < o.Bands.Major && o.Bands.Major < o.Bands.Critical):
		return fmt.Errorf("detect: Bands %+v must increase: 0 < warning < major < critical", o.Bands)
	}
	return o.CUSUM.validate()
}

func (c CUSUM) validate() error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !(c.H >= 0) || !finite(c.H):
		return fmt.Errorf("detect: CUSUM.H is %v, want a finite value ≥ 0 (0: off)", c.H)
	case c.H == 0 && c.Only:
		return fmt.Errorf("detect: CUSUM.Only without CUSUM.H: nothing would detect")
	case c.H == 0:
		return nil
	case !(c.K >= 0) || !finite(c.K):
		return fmt.Errorf("detect: CUSUM.K is %v, want a finite value ≥ 0", c.K)
	case !finite(c.Location):
		return fmt.Errorf("detect: CUSUM.Location is %v, want a finite value", c.Location)
	case !(c.Scale > 0) || !finite(c.Scale):
		return fmt.Errorf("detect: CUSUM.Scale is %v, want a positive finite value", c.Scale)
	}
	return nil
}

// Change is what a window did to the episode state.
type Change int

// The changes that produce an alert record. None produces no alert.
const (
	None     Change = iota
	Open            // a new episode
	Escalate        // the episode reached a higher severity
	Reopen          // an anomaly within the cooldown of a closed episode
	Close           // the episode ended
)

// State is the alert state name for a change ("open", "escalated",
// "reopened", "closed").
func (c Change) State() string {
	switch c {
	case Open:
		return "open"
	case Escalate:
		return "escalated"
	case Reopen:
		return "reopened"
	case Close:
		return "closed"
	}
	return ""
}

// Result is the detector's verdict on one window.
type Result struct {
	Ratio     float64 // score / threshold
	Exceeds   bool    // this window exceeds: its score is at or above the threshold, or ObserveExceeding
	Anomalous bool    // the hysteresis state after this window
	// InEpisode: an episode is open after this window (it may be normal
	// and waiting for CloseAfter to pass).
	InEpisode bool
	// Resumed: this anomalous window continued an episode that was waiting
	// to close (a flip that produced no close and reopen).
	Resumed bool
	Change  Change // None unless an alert record should be emitted
	// For a change: the episode it belongs to.
	Severity     string    // the episode's severity (its highest band so far)
	EpisodeStart time.Time // end of the window that opened the episode: its stable identity
	Update       int       // 0 for Open, then 1, 2, ... for each later alert of the episode
	PeakRatio    float64   // the episode's highest ratio so far
}

// Detector is the detection state of one stream or key.
type Detector struct {
	opts    Options
	history uint64 // bit i: window i back exceeded
	count   int    // windows seen, capped at N
	inEp    bool   // an episode is open
	closing bool   // the open episode has been normal since normal
	normal  time.Time
	closed  time.Time
	ep      episode
	sum     float64 // the CUSUM's S
}

type episode struct {
	start    time.Time
	severity string
	update   int
	peak     float64
	valid    bool // an episode exists (open, or closed and reopenable)
}

// New returns a Detector; the options must be valid.
func New(opts Options) (*Detector, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Detector{opts: opts}, nil
}

// Threshold returns the current threshold.
func (d *Detector) Threshold() float64 { return d.opts.Threshold }

// SetThreshold changes the threshold from the next window on.
func (d *Detector) SetThreshold(t float64) error {
	o := d.opts
	o.Threshold = t
	if err := o.Validate(); err != nil {
		return err
	}
	d.opts = o
	return nil
}

// Observe takes the score of the window that ended at end and returns the
// verdict. A NaN score counts as exceeding: a model that cannot score its
// input is itself an anomaly worth seeing.
func (d *Detector) Observe(end time.Time, score float64) Result {
	return d.observe(end, score, false)
}

// ObserveExceeding is Observe where, with exceeding set, the window
// exceeds whatever its score: one in which a sensor is stuck (Stuck) or a
// channel's level shifted (models/shift). Its Ratio is still the score's,
// so such a window alone opens a warning.
func (d *Detector) ObserveExceeding(end time.Time, score float64, exceeding bool) Result {
	return d.observe(end, score, exceeding)
}

// DefaultStuckFactor is the default factor of StuckLimits.
const DefaultStuckFactor = 10

// StuckLimits returns, per channel, the run of identical consecutive
// values at which the channel counts as stuck: factor times its longest
// run in the training data (maxRun, the manifest's normalization.max_run),
// and at least one window. A sensor that freezes reads one value for as
// long as it is stuck, while a channel whose noise never repeated a value
// for long in training will not do so ten times longer in normal
// operation; a quantized channel that often repeats gets a limit as many
// times longer. Nil (no check) when factor ≤ 0 or maxRun is empty.
func StuckLimits(maxRun []int, window, factor int) []int {
	if factor <= 0 || len(maxRun) == 0 {
		return nil
	}
	lim := make([]int, len(maxRun))
	for i, r := range maxRun {
		lim[i] = max(window, factor*max(r, 1))
	}
	return lim
}

// Stuck returns the first channel whose run of identical values (runs, as
// stream.Windower.Runs counts them) has reached its limit (limits, as
// StuckLimits sets them), or -1: none, or no limits.
func Stuck(runs, limits []int) int {
	if len(limits) != len(runs) {
		return -1
	}
	for c, r := range runs {
		if r >= limits[c] {
			return c
		}
	}
	return -1
}

func (d *Detector) observe(end time.Time, score float64, exceeding bool) Result {
	ratio := score / d.opts.Threshold
	exceeds := exceeding || ratio >= 1 || math.IsNaN(score)
	if math.IsNaN(ratio) {
		ratio = math.Inf(1)
	}
	d.history <<= 1
	if exceeds {
		d.history |= 1
	}
	if d.count < d.opts.N {
		d.count++
	}
	mask := uint64(1)<<uint(d.opts.N) - 1
	if d.opts.N == 64 {
		mask = math.MaxUint64
	}
	anomalous := popcount(d.history&mask) >= d.opts.K
	if c := d.opts.CUSUM; c.On() {
		d.sum = min(c.H, max(0, d.sum+c.z(score)-c.K))
		anomalous = d.sum >= c.H || (anomalous && !c.Only)
	}
	r := Result{Ratio: ratio, Exceeds: exceeds, Anomalous: anomalous}

	switch {
	case anomalous && !d.inEp:
		d.inEp = true
		sev := d.opts.Bands.Severity(ratio)
		if sev == "" {
			sev = "warning" // hysteresis fired on earlier windows; the episode is at least a warning
		}
		if d.ep.valid && d.opts.Cooldown > 0 && end.Sub(d.closed) <= d.opts.Cooldown {
			d.ep.update++
			d.ep.peak = math.Max(d.ep.peak, ratio)
			if rankOf(sev) > rankOf(d.ep.severity) {
				d.ep.severity = sev
			}
			r.Change = Reopen
		} else {
			d.ep = episode{start: end, severity: sev, peak: ratio, valid: true}
			r.Change = Open
		}
	case anomalous && d.inEp:
		if d.closing {
			d.closing = false
			r.Resumed = true
		}
		d.ep.peak = math.Max(d.ep.peak, ratio)
		if sev := d.opts.Bands.Severity(ratio); rankOf(sev) > rankOf(d.ep.severity) {
			d.ep.severity = sev
			d.ep.update++
			r.Change = Escalate
		}
	case !anomalous && d.inEp:
		if !d.closing {
			d.closing, d.normal = true, end
		}
		if end.Sub(d.normal) >= d.opts.CloseAfter {
			d.inEp, d.closing = false, false
			d.closed = end
			d.ep.update++
			r.Change = Close
		}
	}
	r.InEpisode = d.inEp
	if r.Change != None {
		r.Severity = d.ep.severity
		r.EpisodeStart = d.ep.start
		r.Update = d.ep.update
		r.PeakRatio = d.ep.peak
	}
	return r
}

// InEpisode reports whether an episode is open.
func (d *Detector) InEpisode() bool { return d.inEp }

// CloseEpisode closes the open episode at end, as a window below the
// threshold would, and returns the Close (or a Result with Change None
// when no episode is open). The pipeline calls it when it stops tracking
// a key whose episode is open, so that the episode does not stay open.
func (d *Detector) CloseEpisode(end time.Time) Result {
	if !d.inEp {
		return Result{}
	}
	d.inEp = false
	d.history = 0
	d.sum = 0
	d.closed = end
	d.ep.update++
	return Result{Change: Close, Severity: d.ep.severity, EpisodeStart: d.ep.start, Update: d.ep.update, PeakRatio: d.ep.peak}
}

func popcount(x uint64) int {
	n := 0
	for x != 0 {
		x &= x - 1
		n++
	}
	return n
}

func rankOf(sev string) int {
	switch sev {
	case "warning":
		return 1
	case "major":
		return 2
	case "critical":
		return 3
	}
	return 0
}

// Contribution is one channel's share of a window's reconstruction error.
type Contribution struct {
	Name  string
	Share float64
}

// Top returns the k channels with the largest errors and their share of the
// total, largest first. errs[i] is channel names[i]'s error (≥ 0).
func Top(names []string, errs []float64, k int) []Contribution {
	var total float64
	for _, e := range errs {
		if e > 0 && !math.IsInf(e, 0) {
			total += e
		}
	}
	out := make([]Contribution, 0, len(errs))
	for i, e := range errs {
		if i >= len(names) {
			break
		}
		share := 0.0
		if total > 0 && e > 0 && !math.IsInf(e, 0) {
			share = e / total
		}
		out = append(out, Contribution{Name: names[i], Share: share})
	}
	slices.SortStableFunc(out, func(a, b Contribution) int { return cmp.Compare(b.Share, a.Share) })
	if k < len(out) {
		out = out[:k]
	}
	return out
}
