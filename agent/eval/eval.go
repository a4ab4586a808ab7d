// Package eval measures Vigil's detection on labelled data the way the
// agent would run on it: the SKAB benchmark's protocol, through the real
// path. For each labelled file, the model is learnt on the first rows with
// train.Learn (the on-device learning API: train, calibrate, export, load
// through TFLite), every window of the remaining rows is scored by that
// *models.Model, the scores go through the agent's detect.Detector
// (threshold, k-of-n hysteresis), and its verdicts become one 0/1
// prediction per row, counted against the labels.
package eval

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/models"
	"github.com/vigil-edge/vigil/models/shift"
	"github.com/vigil-edge/vigil/models/train"
)

// SKABFolders are the folders of SKAB's labelled experiments, in the order
// they are evaluated.
var SKABFolders = []string{"valve1", "valve2", "other"}

// LabelColumn is the column that labels a row anomalous (1) or normal (0).
const LabelColumn = "anomaly"

// ChangepointColumn marks SKAB's labelled changepoints (1), scored by NAB.
const ChangepointColumn = "changepoint"

// Options configure an evaluation. Start from DefaultOptions.
type Options struct {
	// Data is the SKAB folder, holding valve1/, valve2/ and other/ (any
	// of them may be missing).
	Data string
	// Files, when set, selects files by a glob (path.Match) on their path
	// relative to Data with forward slashes: "valve1/*.csv",
	// "valve1/1?.csv". A pattern without a slash matches the base name.
	Files string
	// TrainRows is the number of rows at the start of each file that the
	// model learns on (SKAB: 400); the rest are the test rows.
	TrainRows int
	// Train configures learning: window, hop, architecture, epochs, seed,
	// calibration. Name, Channels and Source are set per file; Parallelism
	// is set to 1 when files run in parallel.
	Train train.Options
	// Detect configures the detector (K, N). A zero Threshold takes each
	// model's calibrated threshold. A CUSUM (Detect.CUSUM.H > 0) with a
	// zero Scale takes each model's unseen-score fit (models.UnseenFit:
	// thresholds calibrated on validation windows) as its Location and
	// Scale; it cannot be combined with an Ensemble.
	Detect detect.Options
	// Mapping turns window verdicts into row verdicts.
	Mapping Mapping
	// ShiftFactor is the agent's level-shift check
	// (streams[].shift_factor, models/shift): a window in which a
	// channel's last rows moved this many times as far from the rest as
	// the most in the training rows counts as exceeding. 0: off.
	ShiftFactor float64
	// StuckFactor is the agent's stuck-sensor check (streams[].stuck_factor,
	// detect.StuckLimits): a window that ends with a channel on one value
	// for this many times its longest run in the training rows, and at
	// least a window, counts as exceeding. 0: off.
	StuckFactor int
	// Parallel is the number of files evaluated at once (0: GOMAXPROCS).
	// The results do not depend on it.
	Parallel int
	// KeepWindows keeps every window's score and verdict in the result.
	KeepWindows bool
	// Ensemble, when set, scores windows by PCA statistics alone or beside
	// the autoencoder: "t2", "q", "mean:ae,t2", "max:ae,q,t2" (see
	// ensemble.go). The window scores are then the ensemble's, in units of
	// each member's factor-1 threshold, the detector's threshold is
	// Train.Calibration.Factor (unless Detect.Threshold is set), and no
	// confidence is computed. "" scores by the autoencoder alone.
	Ensemble string
	// PCAVariance is the share of the training rows' variance the
	// ensemble's PCA keeps (0: DefaultPCAVariance).
	PCAVariance float64
	// Progress, when set, is called with each file's result, in file
	// order, as soon as it and the files before it are done.
	Progress func(FileResult)
}

// DefaultOptions is the SKAB protocol (400 training rows) with the method
// described in README.md. It is what a stream that learns on the device
// uses (train.DefaultOptions, detect.DefaultOptions, the causal mapping,
// and the learn: defaults of the agent's config) with windows of 60
// samples (the Conv-AE reference's) for SKAB's 1 Hz data:
//
//   - Train.DriftHorizon 1000: each slowly moving channel's normalisation
//     is widened by its training trend continued for 1000 samples, so that
//     a warming or cooling machine is not an anomaly by itself;
//   - Train.Calibration.On "validation": the threshold comes from the
//     scores of the windows held out from training (the last 20 % of the
//     baseline), which the model has not fitted;
//   - Train.Calibration.Factor 2.4: 400 samples do not show all of normal
//     behaviour (the reference multiplies its quantile by 4/3 for the same
//     reason).
func DefaultOptions() Options {
	t := train.DefaultOptions()
	t.Window = 60
	t.DriftHorizon = 1000
	t.Calibration.On = "validation"
	t.Calibration.Factor = 2.4
	return Options{
		TrainRows:   400,
		Train:       t,
		Detect:      detect.DefaultOptions(),
		Mapping:     Causal,
		StuckFactor: detect.DefaultStuckFactor,
		ShiftFactor: shift.DefaultFactor,
	}
}

func (o *Options) validate() error {
	var errs []error
	if o.Data == "" {
		errs = append(errs, errors.New("Options.Data is empty"))
	}
	if o.Files != "" {
		if _, err := path.Match(o.Files, ""); err != nil {
			errs = append(errs, fmt.Errorf("Options.Files %q: %w", o.Files, err))
		}
	}
	if o.TrainRows < 1 {
		errs = append(errs, fmt.Errorf("Options.TrainRows is %d, want ≥ 1", o.TrainRows))
	}
	if o.ShiftFactor < 0 || math.IsNaN(o.ShiftFactor) || math.IsInf(o.ShiftFactor, 0) {
		errs = append(errs, fmt.Errorf("Options.ShiftFactor is %v, want ≥ 0 (0: off)", o.ShiftFactor))
	}
	if o.StuckFactor < 0 {
		errs = append(errs, fmt.Errorf("Options.StuckFactor is %d, want ≥ 0 (0: off)", o.StuckFactor))
	}
	if o.Train.Window > o.TrainRows {
		errs = append(errs, fmt.Errorf("Options.Train.Window is %d, more than the %d training rows", o.Train.Window, o.TrainRows))
	}
	d := o.Detect
	if d.Threshold == 0 {
		d.Threshold = 1 // each model's own
	}
	if d.CUSUM.On() && d.CUSUM.Scale == 0 {
		d.CUSUM.Scale = 1 // each model's own
		if o.Ensemble != "" {
			errs = append(errs, errors.New("Options.Detect.CUSUM: the models' unseen-score fit does not describe an ensemble's scores"))
		}
	}
	if err := d.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("Options.Detect: %w", err))
	}
	if err := o.Mapping.validate(); err != nil {
		errs = append(errs, fmt.Errorf("Options.%w", err))
	}
	if o.Ensemble != "" {
		if _, err := parseEnsemble(o.Ensemble); err != nil {
			errs = append(errs, fmt.Errorf("Options.%w", err))
		}
	}
	if !(o.PCAVariance >= 0 && o.PCAVariance <= 1) {
		errs = append(errs, fmt.Errorf("Options.PCAVariance is %v, want a fraction in (0, 1], or 0", o.PCAVariance))
	}
	if o.Parallel < 0 {
		errs = append(errs, fmt.Errorf("Options.Parallel is %d, want ≥ 0", o.Parallel))
	}
	return errors.Join(errs...)
}

// Report is the outcome of an evaluation.
type Report struct {
	// Files are the files' results in evaluation order.
	Files []FileResult
	// Total sums the files' counts.
	Total Counts
	// Alerts sums the files' alert-level results.
	Alerts Alerts
	// Calibration checks the alerts' confidence on the normal windows
	// before each file's first anomaly.
	Calibration []CalibrationPoint
	// CalibrationFallback checks, on the same windows, the confidence a
	// manifest without an unseen-score fit gives: 1 − Survival(score /
	// Factor), the calibration scores' distribution.
	CalibrationFallback []CalibrationPoint
	Elapsed             time.Duration
}

// Summary is the report's last line: "F1=0.812 FAR=7.95 MAR=24.10 files=34
// rows=23801".
func (r *Report) Summary() string { return Summary(r.Total, len(r.Files)) }

// FileResult is one file's evaluation.
type FileResult struct {
	// Name is the file's path relative to the data folder ("valve1/3.csv").
	Name string
	Counts
	// TrainRows and TestRows split the file's rows.
	TrainRows, TestRows int
	// Alerts judges the episodes the detector opened.
	Alerts Alerts
	// NormalConfidence holds the calibrated confidence
	// (models.Threshold.Confidence) of each scored window that ends before
	// the file's first row labelled anomalous (all its rows normal; every
	// window of an anomaly-free file): CalibrationCheck compares them with
	// 1 − c. Windows after an anomaly are left out: the rig may not be
	// back to normal when its label is.
	NormalConfidence []float64
	// NormalConfidenceFallback is, for the same windows, 1 − Survival(score
	// / Factor): the confidence without the threshold's unseen-score fit.
	NormalConfidenceFallback []float64
	// NormalScores are those windows' scores, for choosing the unseen-score
	// fit's knobs on some files and checking them on others.
	NormalScores []float64
	// Threshold is the detector's threshold; Training what learning did.
	Threshold float64
	Training  *train.Report
	// StuckWindows counts the windows that ended with a channel stuck
	// (Options.StuckFactor), and ShiftWindows those with a level shift
	// over its limit (Options.ShiftFactor): they count as exceeding
	// whatever their score, as in the agent.
	StuckWindows, ShiftWindows int
	// Elapsed is the time spent learning, and scoring and detecting.
	Learn, Score time.Duration
	// Windows holds every scored window, when Options.KeepWindows is set.
	Windows []Window
	// Events are the alerts the detector raised, in order: what the agent
	// would publish for this file (an episode's open, escalations, close).
	Events []Event
}

// Event is one alert the detector raised: a change of an episode at the
// end of a scored window.
type Event struct {
	Time     time.Time // the window's last row's time
	End      int       // that row (0-based, in the file)
	State    string    // detect.Change.State: open, escalated, reopened, closed
	Score    float64   // the window's score (non-finite scores as math.MaxFloat32)
	Severity string    // the episode's severity so far
	Update   int       // 0 for the open, then 1, 2, ...
}

// Window is one scored window.
type Window struct {
	End       int     // the row the window ends at (0-based, in the file)
	Score     float64 // the model's score
	Anomalous bool    // the detector's state after it
	// Contrib is each channel's share of the score (see models.Model.Score).
	Contrib []float64
}

// SKAB runs the SKAB protocol on every labelled file under opts.Data:
// every *.csv in the SKABFolders that opts.Files selects, each evaluated on
// its own and counted into the total. ctx cancels it.
func SKAB(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	files, err := findFiles(opts.Data, opts.Files)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	start := time.Now()
	par := opts.Parallel
	if par == 0 {
		par = runtime.GOMAXPROCS(0)
	}
	par = min(par, len(files))
	if par > 1 {
		opts.Train.Parallelism = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	results := make([]FileResult, len(files))
	errs := make([]error, len(files))
	done := make([]bool, len(files))
	var mu sync.Mutex
	next := 0 // the first file not yet reported
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for i := range jobs {
				r, err := evalFile(ctx, opts.Data, files[i], opts)
				mu.Lock()
				results[i], errs[i], done[i] = r, err, true
				if err != nil {
					cancel()
				}
				for next < len(files) && done[next] && errs[next] == nil {
					if opts.Progress != nil {
						opts.Progress(results[next])
					}
					next++
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range files {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("eval: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	rep := &Report{Files: results, Elapsed: time.Since(start)}
	for _, r := range results {
		rep.Total = rep.Total.Add(r.Counts)
		rep.Alerts = rep.Alerts.Add(r.Alerts)
	}
	rep.Calibration = CalibrationCheck(results, CalibrationLevels, false)
	rep.CalibrationFallback = CalibrationCheck(results, CalibrationLevels, true)
	return rep, nil
}

// findFiles lists the labelled files under dir, relative to it, in folder
// order and then by number ("2.csv" before "10.csv").
func findFiles(dir, pattern string) ([]string, error) {
	var files []string
	folders := 0
	for _, f := range SKABFolders {
		matches, err := filepath.Glob(filepath.Join(dir, f, "*.csv"))
		if err != nil {
			return nil, err
		}
		if st, err := os.Stat(filepath.Join(dir, f)); err == nil && st.IsDir() {
			folders++
		}
		slices.SortFunc(matches, func(a, b string) int { return naturalCompare(filepath.Base(a), filepath.Base(b)) })
		for _, m := range matches {
			rel := f + "/" + filepath.Base(m)
			if pattern != "" {
				name := rel
				if !strings.Contains(pattern, "/") {
					name = filepath.Base(m)
				}
				if ok, _ := path.Match(pattern, name); !ok {
					continue
				}
			}
			files = append(files, rel)
		}
	}
	switch {
	case folders == 0:
		return nil, fmt.Errorf("%s holds none of the SKAB folders %s", dir, strings.Join(SKABFolders, "/, ")+"/")
	case len(files) == 0 && pattern != "":
		return nil, fmt.Errorf("no file under %s matches %q", dir, pattern)
	case len(files) == 0:
		return nil, fmt.Errorf("no *.csv files in the SKAB folders of %s", dir)
	}
	return files, nil
}

// naturalCompare orders names by their leading number, then as strings.
func naturalCompare(a, b string) int {
	na, erra := strconv.Atoi(strings.TrimSuffix(a, filepath.Ext(a)))
	nb, errb := strconv.Atoi(strings.TrimSuffix(b, filepath.Ext(b)))
	if erra == nil && errb == nil && na != nb {
		return cmp.Compare(na, nb)
	}
	return strings.Compare(a, b)
}

func evalFile(ctx context.Context, dir, rel string, opts Options) (FileResult, error) {
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return FileResult{}, err
	}
	defer f.Close()
	tab, err := source.ReadCSV(f, source.CSVOptions{})
	if err != nil {
		return FileResult{}, fmt.Errorf("%s: %w", rel, err)
	}
	if len(tab.Bad) > 0 {
		b := tab.Bad[0]
		return FileResult{}, fmt.Errorf("%s: %d bad rows, the first at line %d: %s", rel, len(tab.Bad), b.Line, b.Msg)
	}
	r, err := Evaluate(ctx, rel, tab, opts)
	if err != nil {
		return FileResult{}, fmt.Errorf("%s: %w", rel, err)
	}
	return r, nil
}

// Evaluate runs the protocol on one labelled table: it learns a model on
// the first opts.TrainRows rows, scores the windows that end on each later
// row (every Hop rows; the first ones reach back into the training rows,
// as a device that has kept its history would), feeds the scores to a
// detector in order and counts the mapped row verdicts against the
// table's anomaly labels. opts.Data, Files, Parallel and Progress are not
// used.
func Evaluate(ctx context.Context, name string, tab *source.Table, opts Options) (FileResult, error) {
	labels, ok := tab.Labels[LabelColumn]
	if !ok {
		return FileResult{}, fmt.Errorf("no %q label column", LabelColumn)
	}
	rows := len(tab.Values)
	if rows <= opts.TrainRows {
		return FileResult{}, fmt.Errorf("%d rows, want more than the %d training rows", rows, opts.TrainRows)
	}
	res := FileResult{Name: name, TrainRows: opts.TrainRows, TestRows: rows - opts.TrainRows}

	t0 := time.Now()
	to := opts.Train
	to.Name, to.Channels, to.Source = "skab", tab.Channels, name
	md, rep, err := train.Learn(ctx, tab.Values[:opts.TrainRows], to)
	if err != nil {
		return FileResult{}, err
	}
	defer md.Close()
	res.Training = rep
	res.Learn = time.Since(t0)

	t0 = time.Now()
	hop := md.Manifest().Input.Hop
	var ends []int
	for e := opts.TrainRows; e < rows; e += hop {
		ends = append(ends, e)
	}
	scores, contrib, err := scoreWindows(ctx, md, tab.Values, ends, opts.KeepWindows)
	if err != nil {
		return FileResult{}, err
	}
	do := opts.Detect
	if do.Threshold == 0 {
		do.Threshold = md.Threshold()
	}
	if opts.Ensemble != "" {
		ens, _ := parseEnsemble(opts.Ensemble) // validated
		f := to.Calibration.Factor
		for i := range scores {
			scores[i] /= md.Threshold() / f
		}
		variance := cmp.Or(opts.PCAVariance, DefaultPCAVariance)
		if err := ens.scores(scores, tab.Values, ends, opts.TrainRows, to, variance); err != nil {
			return FileResult{}, err
		}
		if opts.Detect.Threshold == 0 {
			do.Threshold = f
		}
	}
	if do.CUSUM.On() && do.CUSUM.Scale == 0 {
		u := md.Manifest().Threshold.Unseen
		if u == nil {
			return FileResult{}, errors.New("the CUSUM takes the model's unseen-score fit, and its threshold has none (calibrate on validation windows)")
		}
		do.CUSUM.Location, do.CUSUM.Scale = u.Location, u.Scale
	}
	det, err := detect.New(do)
	if err != nil {
		return FileResult{}, err
	}
	res.Threshold = do.Threshold
	anomalous := make([]bool, len(ends))
	var opens, closes []time.Time
	firstAnomaly := slices.IndexFunc(labels, func(l float64) bool { return l != 0 })
	if firstAnomaly < 0 {
		firstAnomaly = rows
	}
	th := md.Manifest().Threshold
	fallback := th
	fallback.Unseen = nil
	win := md.Manifest().Input.Window
	shifted := shiftWindows(tab.Values, ends, md.Manifest(), opts.ShiftFactor)
	stuck := stuckWindows(tab.Values, ends, opts.TrainRows-(win-1), detect.StuckLimits(md.Manifest().Normalization.MaxRun, win, opts.StuckFactor))
	for i, e := range ends {
		s := scores[i]
		if math.IsNaN(s) || math.IsInf(s, 0) {
			s = math.MaxFloat32 // as the pipeline does
		}
		if stuck[i] >= 0 {
			res.StuckWindows++
		}
		if shifted[i] >= 0 {
			res.ShiftWindows++
		}
		r := det.ObserveExceeding(tab.Times[e], s, stuck[i] >= 0 || shifted[i] >= 0)
		anomalous[i] = r.Anomalous
		if e < firstAnomaly {
			res.NormalScores = append(res.NormalScores, s)
			// the threshold's score distributions are the autoencoder's:
			// no confidence for an ensemble's scores
			if opts.Ensemble == "" {
				if c, ok := th.Confidence(s); ok {
					res.NormalConfidence = append(res.NormalConfidence, c)
				}
				if c, ok := fallback.Confidence(s); ok {
					res.NormalConfidenceFallback = append(res.NormalConfidenceFallback, c)
				}
			}
		}
		if r.Change != detect.None {
			res.Events = append(res.Events, Event{Time: tab.Times[e], End: e, State: r.Change.State(), Score: s, Severity: r.Severity, Update: r.Update})
		}
		switch r.Change {
		case detect.Open:
			opens = append(opens, tab.Times[e])
		case detect.Close:
			closes = append(closes, tab.Times[e])
		}
		if opts.KeepWindows {
			c := md.Channels()
			res.Windows = append(res.Windows, Window{End: e, Score: scores[i], Anomalous: anomalous[i], Contrib: contrib[i*c : (i+1)*c]})
		}
	}
	pred := Predict(opts.Mapping, md.Window(), ends, anomalous, opts.TrainRows, rows)
	truth := make([]bool, len(pred))
	for i := range truth {
		truth[i] = labels[opts.TrainRows+i] != 0
	}
	res.Counts = Count(pred, truth)
	var cps []bool
	if c, ok := tab.Labels[ChangepointColumn]; ok {
		cps = make([]bool, len(truth))
		for i := range cps {
			cps[i] = c[opts.TrainRows+i] != 0
		}
	}
	res.Alerts = AlertLevel(tab.Times[opts.TrainRows:], truth, cps, opens, closes)
	res.Score = time.Since(t0)
	return res, nil
}

// shiftWindows returns, for the window that ends on each row of ends,
// the channel whose level shift (models/shift) is over factor times the
// largest in the training data (the manifest's shift block), or -1, as
// the pipeline finds it.
func shiftWindows(rows [][]float64, ends []int, m *models.Manifest, factor float64) []int {
	out := slices.Repeat([]int{-1}, len(ends))
	ls := m.Shift
	if ls == nil || factor <= 0 {
		return out
	}
	w, c := m.Input.Window, len(m.Input.Channels)
	win := make([]float64, 0, w*c)
	z := make([]float64, c)
	for k, e := range ends {
		win = shift.ZAt(rows, e, w, ls.Recent, ls.Floor, z, win)
		out[k], _ = shift.Over(z, ls.Max, factor)
	}
	return out
}

// stuckWindows returns, for the window that ends on each row of ends, the
// channel stuck there (detect.Stuck), or -1, counting runs of one value
// from row from on, as the pipeline does from the rows it primes its
// windower with (the last window−1 training rows).
func stuckWindows(rows [][]float64, ends []int, from int, limits []int) []int {
	out := slices.Repeat([]int{-1}, len(ends))
	if limits == nil || len(ends) == 0 {
		return out
	}
	from = max(0, from)
	runs := make([]int, len(limits))
	k := 0
	for r := from; r <= ends[len(ends)-1]; r++ {
		for c := range runs {
			if r > from && rows[r][c] == rows[r-1][c] {
				runs[c]++
			} else {
				runs[c] = 1
			}
		}
		for k < len(ends) && ends[k] == r {
			out[k] = detect.Stuck(runs, limits)
			k++
		}
	}
	return out
}

// scoreBatch is the most windows scored in one call.
const scoreBatch = 256

// scoreWindows scores the windows of rows that end at ends, and returns
// their channels' contributions too when contrib is set.
func scoreWindows(ctx context.Context, md *models.Model, rows [][]float64, ends []int, contrib bool) (scores, contribs []float64, err error) {
	w, c := md.Window(), md.Channels()
	scores = make([]float64, len(ends))
	if contrib {
		contribs = make([]float64, len(ends)*c)
	}
	buf := make([]float64, 0, scoreBatch*w*c)
	for b := 0; b < len(ends); b += scoreBatch {
		batch := ends[b:min(b+scoreBatch, len(ends))]
		buf = buf[:0]
		for _, e := range batch {
			if e+1 < w {
				return nil, nil, fmt.Errorf("the window ending at row %d would start before the first row", e)
			}
			for _, r := range rows[e+1-w : e+1] {
				buf = append(buf, r...)
			}
		}
		var cb []float64
		if contrib {
			cb = contribs[b*c : (b+len(batch))*c]
		}
		if err := md.Score(ctx, buf, scores[b:b+len(batch)], cb); err != nil {
			return nil, nil, err
		}
	}
	return scores, contribs, nil
}
