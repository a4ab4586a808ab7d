// Package models holds Vigil's model contract and what builds on it: the
// manifest (the model card, NAME.json beside NAME.tflite), loading a model
// and checking it against its manifest, and Model, which turns raw windows
// into anomaly scores and per-channel contributions through an
// inference.Scorer.
//
// The sub-packages write models: nn describes networks and encodes them as
// TFLite flatbuffers; train fits autoencoders in Go, calibrates their
// thresholds and exports model and manifest.
package models

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/inference"
)

// Format is the manifest format version this package reads and writes.
const Format = 1

// Model kinds (Manifest.Kind).
const (
	KindSensor    = "sensor"    // windows of numeric sensor channels
	KindBehaviour = "behaviour" // windows of features computed from events
)

// Output kinds (Output.Kind).
const (
	// OutputReconstruction: the model outputs the normalised window it was
	// given, reconstructed; the score is the reconstruction error reduced
	// by Output.Reduction.
	OutputReconstruction = "reconstruction"
	// OutputScore: the model outputs the anomaly score itself (Output.Size
	// values per window, reduced by Output.Reduction).
	OutputScore = "score"
)

// Score reductions (Output.Reduction). The first three are for
// reconstruction models, the last three for score models.
const (
	ReduceMSE           = "mse"             // mean squared error over the window
	ReduceMAE           = "mae"             // mean absolute error over the window
	ReduceMaxChannelMSE = "max_channel_mse" // the largest per-channel mean squared error
	ReduceFirst         = "first"           // the model's first output
	ReduceMax           = "max"             // the largest output
	ReduceMean          = "mean"            // the mean output
)

// Threshold calibration methods (Threshold.Method).
const (
	MethodQuantile = "quantile" // Factor × the Quantile of the calibration scores
	MethodPOT      = "pot"      // peaks over threshold: a GPD fitted to the tail
	MethodManual   = "manual"   // set by a person
)

// Manifest is the model card: everything needed to feed a model, read its
// output and decide when a score is an anomaly, plus how it was made.
type Manifest struct {
	// Format is the manifest format version, Format.
	Format int `json:"format"`
	// Name is the model's name, also the base name of its files.
	Name string `json:"name"`
	// Version is the model's version, free-form ("1", "2024-05-01.2").
	Version string `json:"version"`
	// Kind is KindSensor or KindBehaviour.
	Kind string `json:"kind"`
	// Description is for people.
	Description string `json:"description,omitempty"`
	// SHA256 is the hex SHA-256 of NAME.tflite.
	SHA256        string        `json:"sha256"`
	Input         Input         `json:"input"`
	Normalization Normalization `json:"normalization"`
	// Shift is the largest level shift of each channel in the training
	// data (models/shift); absent: the agent's level-shift check is off.
	// Sensor models only.
	Shift     *LevelShift `json:"shift,omitempty"`
	Output    Output      `json:"output"`
	Threshold Threshold   `json:"threshold"`
	// Training says how the model was trained; absent for models made
	// elsewhere.
	Training *Training `json:"training,omitempty"`
	// Features declares how a behaviour model's channels are computed from
	// events; required for KindBehaviour, absent otherwise.
	Features *Features `json:"features,omitempty"`
}

// Input is the layout of one window.
type Input struct {
	// Window is the number of samples (time steps) in a window.
	Window int `json:"window"`
	// Hop is the number of samples between the starts of two windows.
	Hop int `json:"hop"`
	// Channels names the channels in the order the model takes them.
	Channels []string `json:"channels"`
	// Layout is how a window lies in the model's input tensor:
	// LayoutTimeMajor (the default when empty: sample after sample, each
	// holding every channel, as [window, channels] or flattened) or
	// LayoutChannelMajor (channel after channel, each holding every
	// sample, as [channels, window] or flattened). Any input shape whose
	// element count is window × channels is accepted; a reconstruction
	// model's output has the input's layout.
	Layout string `json:"layout,omitempty"`
}

// Input layouts (Input.Layout).
const (
	LayoutTimeMajor    = "time-major"
	LayoutChannelMajor = "channel-major"
)

// ChannelMajor reports whether the input is laid out channel after channel.
func (in Input) ChannelMajor() bool { return in.Layout == LayoutChannelMajor }

// Normalization standardises each channel before the model sees it:
// x' = (x - Mean[c]) / Std[c]. A channel whose Center value is true is then
// centred within each window: the mean of its x' over the window is
// subtracted from each of them, so that the model judges its shape in the window and not its
// level: for slowly varying channels (temperatures) whose level a short
// warm-up does not show all of.
type Normalization struct {
	Mean []float64 `json:"mean"`
	Std  []float64 `json:"std"`
	// Center is empty (no channel is centred) or holds one value per
	// channel.
	Center []bool `json:"center,omitempty"`
	// MaxRun is empty (not recorded) or holds, per channel, the longest
	// run of identical consecutive values in the training data: 1 for a
	// channel that never read the same value twice in a row. The agent's
	// stuck-sensor check sets its limits from them (docs/models.md).
	MaxRun []int `json:"max_run,omitempty"`
}

// LevelShift records, per channel, the largest level shift (shift.Z) of
// the training data's windows: the mean of a window's last Recent rows
// against the rows before, over their std or Floor[c], whichever is
// larger. A Max of 0 leaves the channel to the model (Vigil's trainer
// writes 0 for a channel smoother than white noise).
type LevelShift struct {
	Recent int       `json:"recent"`
	Floor  []float64 `json:"floor"`
	Max    []float64 `json:"max"`
}

// MaxRuns returns the longest run of identical consecutive values of each
// of the rows' channels (rows × channels, in time order): what a trainer
// records in Normalization.MaxRun. NaNs never equal one another.
func MaxRuns(rows [][]float64, channels int) []int {
	out := make([]int, channels)
	cur := make([]int, channels)
	for i, r := range rows {
		for c := range channels {
			if i > 0 && r[c] == rows[i-1][c] {
				cur[c]++
			} else {
				cur[c] = 1
			}
			out[c] = max(out[c], cur[c])
		}
	}
	return out
}

// Centered reports whether any channel is centred on its window mean.
func (n Normalization) Centered() bool { return slices.Contains(n.Center, true) }

// Output says what the model outputs and how it becomes one score.
type Output struct {
	// Kind is OutputReconstruction or OutputScore.
	Kind string `json:"kind"`
	// Reduction turns the output into one score per window: ReduceMSE,
	// ReduceMAE or ReduceMaxChannelMSE for reconstructions, ReduceFirst,
	// ReduceMax or ReduceMean for scores.
	Reduction string `json:"reduction"`
	// Size is the number of values a score model outputs per window; it is
	// omitted for reconstruction models, whose output is the window.
	Size int `json:"size,omitempty"`
}

// Threshold is the score above which a window is anomalous, and how that
// value was calibrated.
type Threshold struct {
	Value  float64 `json:"value"`
	Method string  `json:"method"`
	// Quantile is the quantile of the calibration scores taken by the
	// quantile method (0.99 for the 99th percentile).
	Quantile float64 `json:"quantile,omitempty"`
	// Factor multiplies the calibrated value (quantile and POT methods).
	Factor float64 `json:"factor,omitempty"`
	// POT holds the peaks-over-threshold fit of the POT method.
	POT *POT `json:"pot,omitempty"`
	// TrainScale, when set, is the factor the training windows' scores
	// were multiplied by before calibration: the ratio of the mean
	// validation score to the mean training score, which corrects for a
	// model scoring the data it was fitted to lower than unseen data.
	TrainScale float64 `json:"train_scale,omitempty"`
	// Scores describes the scores the threshold was calibrated on.
	Scores *ScoreStats `json:"scores,omitempty"`
	// Unseen, when present, is the distribution fitted at calibration to
	// the scores of normal windows the model has not seen, which
	// Confidence reads. Manifests without it (older ones, and thresholds
	// not calibrated on validation windows) fall back to Scores and POT.
	Unseen *UnseenFit `json:"unseen,omitempty"`
	// Uncalibrated marks a placeholder threshold (written by vigil model
	// init) that no scores have set yet: run vigil model calibrate.
	Uncalibrated bool `json:"uncalibrated,omitempty"`
}

// POT is a peaks-over-threshold fit (Siffer et al., "Anomaly detection in
// streams with extreme value theory", KDD 2017): the excesses of the scores
// over an initial threshold follow a generalised Pareto distribution, whose
// quantile at Risk gives the threshold.
type POT struct {
	// Risk is the target probability that a normal window exceeds the
	// threshold.
	Risk float64 `json:"risk"`
	// InitialQuantile is the quantile of the scores taken as the initial
	// threshold, whose value is Initial.
	InitialQuantile float64 `json:"initial_quantile"`
	Initial         float64 `json:"initial"`
	// Shape (ξ) and Scale (σ) are the fitted GPD parameters.
	Shape float64 `json:"shape"`
	Scale float64 `json:"scale"`
	// Peaks is the number of scores above Initial, out of Samples.
	Peaks   int `json:"peaks"`
	Samples int `json:"samples"`
}

// Unseen-score distributions (UnseenFit.Method).
const (
	// UnseenLogLaplace: log(score) follows a Laplace distribution,
	// P(score ≥ s) = ½·exp(−(ln s − Location)/Scale) above e^Location and
	// 1 − ½·exp((ln s − Location)/Scale) below it.
	UnseenLogLaplace = "log-laplace"
)

// UnseenFit is a parametric distribution of the scores of normal windows
// that the model has not seen (see Threshold.Confidence).
type UnseenFit struct {
	Method string `json:"method"`
	// Location and Scale are in units of ln(score): the median unseen
	// normal window scores e^Location.
	Location float64 `json:"location"`
	Scale    float64 `json:"scale"`
}

// ScoreStats summarises a set of scores.
type ScoreStats struct {
	// Source says which windows were scored: "train", "validation" or
	// "train+validation" (the trainer's), or "calibration" (a file of
	// normal data, by vigil model calibrate).
	Source string  `json:"source"`
	Count  int     `json:"count"`
	Mean   float64 `json:"mean"`
	Std    float64 `json:"std"`
	Min    float64 `json:"min"`
	P50    float64 `json:"p50"`
	P90    float64 `json:"p90"`
	P99    float64 `json:"p99"`
	Max    float64 `json:"max"`
	// Quantiles, when present, are the scores at probabilities 0, 1/(Q-1),
	// ..., 1 (Q values, ascending): the empirical distribution behind
	// Threshold.Survival. Manifests written before it have none; Survival
	// then interpolates between min, p50, p90, p99 and max.
	Quantiles []float64 `json:"quantiles,omitempty"`
}

// Training is the model's provenance.
type Training struct {
	// Trainer names the program that trained the model.
	Trainer string `json:"trainer"`
	// Arch is the architecture family ("dense", "conv") and Layers the
	// network as nn.Network.String describes it.
	Arch   string `json:"arch"`
	Layers string `json:"layers,omitempty"`
	// Quantization is "int8" for a full-integer model (int8 weights,
	// activations, input and output); empty for float32.
	Quantization string `json:"quantization,omitempty"`
	Params       int    `json:"params,omitempty"`
	Seed         uint64 `json:"seed"`
	// Epochs is the number of epochs run, out of at most MaxEpochs; the
	// exported weights are those of BestEpoch.
	Epochs       int     `json:"epochs"`
	MaxEpochs    int     `json:"max_epochs"`
	BestEpoch    int     `json:"best_epoch"`
	BatchSize    int     `json:"batch_size"`
	LearningRate float64 `json:"learning_rate"`
	// Validation is the fraction of windows held out for early stopping.
	Validation float64 `json:"validation"`
	// StoppedBy is why training ended: "max_epochs", "early_stopping" or
	// "budget" (the time budget ran out; the best weights so far are kept).
	StoppedBy string   `json:"stopped_by"`
	Data      DataInfo `json:"data"`
	Loss      Loss     `json:"loss"`
	// Started is when training started and Seconds how long it took; both
	// are omitted when the trainer ran with a fixed clock, so that a model
	// can be rebuilt byte for byte.
	Started time.Time `json:"started,omitzero"`
	Seconds float64   `json:"seconds,omitempty"`
}

// DataInfo describes the training data.
type DataInfo struct {
	// SHA256 is the hex SHA-256 of the training rows as float64 values in
	// row-major order, little-endian.
	SHA256 string `json:"sha256"`
	// Source names where the rows came from (a file name, "warm-up").
	Source  string `json:"source,omitempty"`
	Rows    int    `json:"rows"`
	Windows int    `json:"windows"`
	// Train and Validation are the windows used for each.
	Train      int `json:"train"`
	Validation int `json:"validation"`
}

// Loss summarises the loss (mean squared error on normalised data) over
// the epochs: Train and Val hold one value every Every epochs, at most 50.
type Loss struct {
	Initial float64   `json:"initial"`
	Final   float64   `json:"final"`
	BestVal float64   `json:"best_val"`
	Every   int       `json:"every"`
	Train   []float64 `json:"train"`
	Val     []float64 `json:"val,omitempty"`
}

// Features declares how a behaviour model's channels are computed from a
// stream of events: each feature is computed over the events of the last
// Window, every Step, per GroupBy key; Input.Channels lists the features'
// names in the same order.
type Features struct {
	Window Duration `json:"window"`
	Step   Duration `json:"step"`
	// GroupBy is the event field that separates streams ("user"); empty
	// for one stream.
	GroupBy string `json:"group_by,omitempty"`
	// Events lists the event names that count features refer to.
	Events []string  `json:"events"`
	List   []Feature `json:"list"`
}

// Feature operations (Feature.Op).
const (
	FeatureCount        = "count"         // events named Feature.Event in the window
	FeatureTotal        = "total"         // all events in the window
	FeatureDistinct     = "distinct"      // distinct event names in the window
	FeatureFailureRatio = "failure_ratio" // failed events / all events (0 when none)
	FeatureGapMean      = "gap_mean"      // mean seconds between consecutive events
	FeatureGapStd       = "gap_std"       // their standard deviation
	FeatureGapMin       = "gap_min"       // the shortest gap
	FeatureGapMax       = "gap_max"       // the longest gap
)

var featureOps = []string{FeatureCount, FeatureTotal, FeatureDistinct, FeatureFailureRatio,
	FeatureGapMean, FeatureGapStd, FeatureGapMin, FeatureGapMax}

// Feature is one behaviour feature.
type Feature struct {
	Name string `json:"name"`
	Op   string `json:"op"`
	// Event is the event name a count feature counts.
	Event string `json:"event,omitempty"`
}

// Duration is a time.Duration written in JSON as a string such as "5m0s".
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"5m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Spec is the per-window input and output shape the manifest declares, in
// inference's terms: [window, channels], or [channels, window] for a
// channel-major input. A model's tensors may have any shape with as many
// elements (see CheckSpec).
func (m *Manifest) Spec() inference.Spec {
	in := []int{m.Input.Window, len(m.Input.Channels)}
	if m.Input.ChannelMajor() {
		in = []int{len(m.Input.Channels), m.Input.Window}
	}
	if m.Output.Kind == OutputScore {
		return inference.Spec{Input: in, Output: []int{m.Output.Size}}
	}
	return inference.Spec{Input: in, Output: slices.Clone(in)}
}

// DecodeManifest reads a manifest strictly: an unknown or duplicated field,
// a value of the wrong type or trailing data is an error naming its path.
// It does not validate the values; see Validate.
func DecodeManifest(data []byte) (*Manifest, error) {
	if problems := checkKeys(data, manifestType); len(problems) > 0 {
		return nil, &ValidationError{Problems: problems}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	m := new(Manifest)
	if err := dec.Decode(m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("decode manifest: data after the manifest object")
	}
	return m, nil
}

// Encode writes the manifest as indented JSON with a final newline. The
// output is deterministic.
func (m *Manifest) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest %s: %w", m.Name, err)
	}
	return append(b, '\n'), nil
}

// Problem is one thing wrong with a manifest, at a field path such as
// "normalization.std[3]".
type Problem struct {
	Path string
	Msg  string
}

// String returns "path: message".
func (p Problem) String() string { return p.Path + ": " + p.Msg }

// ValidationError lists every problem found in a manifest.
type ValidationError struct {
	Problems []Problem
}

// Error lists the problems, separated by "; ".
func (e *ValidationError) Error() string {
	var sb strings.Builder
	if len(e.Problems) == 1 {
		sb.WriteString("manifest: ")
	} else {
		fmt.Fprintf(&sb, "manifest: %d problems: ", len(e.Problems))
	}
	for i, p := range e.Problems {
		if i > 0 {
			sb.WriteString("; ")
		}
		sb.WriteString(p.String())
	}
	return sb.String()
}

// problems collects Problems.
type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (ps *problems) finite(path string, v float64) bool {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		ps.add(path, "is %v, want a finite number", v)
		return false
	}
	return true
}

func (ps *problems) oneOf(path, v string, allowed ...string) {
	if v == "" {
		ps.add(path, "missing, want one of %s", strings.Join(allowed, ", "))
	} else if !slices.Contains(allowed, v) {
		ps.add(path, "is %q, want one of %s", v, strings.Join(allowed, ", "))
	}
}

func (ps *problems) probability(path string, v float64) {
	if !(v > 0 && v < 1) {
		ps.add(path, "is %v, want a value in (0, 1)", v)
	}
}

// Validate checks every field and returns a *ValidationError listing all
// problems with their field paths, or nil.
func (m *Manifest) Validate() error {
	var ps problems
	if m.Format != Format {
		ps.add("format", "is %d, want %d", m.Format, Format)
	}
	if m.Name == "" {
		ps.add("name", "missing")
	} else if !validName(m.Name) {
		ps.add("name", "%q may only hold letters, digits, '.', '_' and '-', and must not start with '.'", m.Name)
	}
	if m.Version == "" {
		ps.add("version", "missing")
	}
	ps.oneOf("kind", m.Kind, KindSensor, KindBehaviour)
	if !validSHA256(m.SHA256) {
		if m.SHA256 == "" {
			ps.add("sha256", "missing")
		} else {
			ps.add("sha256", "%q is not 64 lowercase hex digits", m.SHA256)
		}
	}
	m.validateInput(&ps)
	m.validateOutput(&ps)
	m.Threshold.validate(&ps)
	if m.Training != nil {
		m.Training.validate(&ps)
	}
	switch {
	case m.Kind == KindBehaviour && m.Features == nil:
		ps.add("features", "missing, a behaviour model must declare its features")
	case m.Kind != KindBehaviour && m.Features != nil:
		ps.add("features", "only behaviour models declare features")
	case m.Features != nil:
		m.Features.validate(&ps, m.Input.Channels)
	}
	if len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	return nil
}

func (m *Manifest) validateInput(ps *problems) {
	if m.Input.Window < 1 {
		ps.add("input.window", "is %d, want ≥ 1", m.Input.Window)
	}
	if m.Input.Hop < 1 {
		ps.add("input.hop", "is %d, want ≥ 1", m.Input.Hop)
	}
	if l := m.Input.Layout; l != "" && l != LayoutTimeMajor && l != LayoutChannelMajor {
		ps.add("input.layout", "is %q, want %s (the default) or %s", l, LayoutTimeMajor, LayoutChannelMajor)
	}
	ch := m.Input.Channels
	if len(ch) == 0 {
		ps.add("input.channels", "missing, want at least one channel name")
	}
	seen := map[string]int{}
	for i, c := range ch {
		path := fmt.Sprintf("input.channels[%d]", i)
		if strings.TrimSpace(c) == "" {
			ps.add(path, "empty name")
		} else if j, dup := seen[c]; dup {
			ps.add(path, "%q repeats input.channels[%d]", c, j)
		} else {
			seen[c] = i
		}
	}
	n := m.Normalization
	if len(n.Mean) != len(ch) {
		ps.add("normalization.mean", "has %d values, want one per channel (%d)", len(n.Mean), len(ch))
	}
	if len(n.Std) != len(ch) {
		ps.add("normalization.std", "has %d values, want one per channel (%d)", len(n.Std), len(ch))
	}
	for i, v := range n.Mean {
		ps.finite(fmt.Sprintf("normalization.mean[%d]", i), v)
	}
	for i, v := range n.Std {
		path := fmt.Sprintf("normalization.std[%d]", i)
		if ps.finite(path, v) && v <= 0 {
			ps.add(path, "is %v, want > 0", v)
		}
	}
	if len(n.Center) != 0 && len(n.Center) != len(ch) {
		ps.add("normalization.center", "has %d values, want none or one per channel (%d)", len(n.Center), len(ch))
	}
	if len(n.MaxRun) != 0 && len(n.MaxRun) != len(ch) {
		ps.add("normalization.max_run", "has %d values, want none or one per channel (%d)", len(n.MaxRun), len(ch))
	}
	for i, r := range n.MaxRun {
		if r < 1 {
			ps.add(fmt.Sprintf("normalization.max_run[%d]", i), "is %d, want ≥ 1", r)
		}
	}
	if sh := m.Shift; sh != nil {
		if m.Kind == KindBehaviour {
			ps.add("shift", "only sensor models record level shifts")
		}
		if sh.Recent < 1 || sh.Recent >= m.Input.Window {
			ps.add("shift.recent", "is %d, want 1 to input.window − 1 (%d)", sh.Recent, m.Input.Window-1)
		}
		for _, f := range []struct {
			name string
			vs   []float64
		}{{"shift.floor", sh.Floor}, {"shift.max", sh.Max}} {
			name, vs := f.name, f.vs
			if len(vs) != len(ch) {
				ps.add(name, "has %d values, want one per channel (%d)", len(vs), len(ch))
			}
			for i, v := range vs {
				if path := fmt.Sprintf("%s[%d]", name, i); ps.finite(path, v) && v < 0 {
					ps.add(path, "is %v, want ≥ 0", v)
				}
			}
		}
	}
}

func (m *Manifest) validateOutput(ps *problems) {
	o := m.Output
	ps.oneOf("output.kind", o.Kind, OutputReconstruction, OutputScore)
	switch o.Kind {
	case OutputReconstruction:
		ps.oneOf("output.reduction", o.Reduction, ReduceMSE, ReduceMAE, ReduceMaxChannelMSE)
		if o.Size != 0 {
			ps.add("output.size", "is %d; a reconstruction's size is the window's, leave it out", o.Size)
		}
	case OutputScore:
		ps.oneOf("output.reduction", o.Reduction, ReduceFirst, ReduceMax, ReduceMean)
		if o.Size < 1 {
			ps.add("output.size", "is %d, want ≥ 1 values per window", o.Size)
		}
	}
}

func (t *Threshold) validate(ps *problems) {
	ps.finite("threshold.value", t.Value)
	ps.oneOf("threshold.method", t.Method, MethodQuantile, MethodPOT, MethodManual)
	if t.Factor < 0 || math.IsNaN(t.Factor) || math.IsInf(t.Factor, 0) {
		ps.add("threshold.factor", "is %v, want a finite value > 0", t.Factor)
	}
	if t.TrainScale < 0 || math.IsNaN(t.TrainScale) || math.IsInf(t.TrainScale, 0) {
		ps.add("threshold.train_scale", "is %v, want a finite value > 0", t.TrainScale)
	}
	if t.Uncalibrated && t.Method != MethodManual {
		ps.add("threshold.uncalibrated", "only a manual threshold can be an uncalibrated placeholder")
	}
	switch t.Method {
	case MethodQuantile:
		ps.probability("threshold.quantile", t.Quantile)
		if t.Factor == 0 {
			ps.add("threshold.factor", "missing, want > 0 (1 for the quantile itself)")
		}
		if t.POT != nil {
			ps.add("threshold.pot", "only the pot method has a POT fit")
		}
	case MethodPOT:
		if t.Factor == 0 {
			ps.add("threshold.factor", "missing, want > 0 (1 for the POT quantile itself)")
		}
		if t.POT == nil {
			ps.add("threshold.pot", "missing, the pot method needs its fit")
			break
		}
		p := t.POT
		ps.probability("threshold.pot.risk", p.Risk)
		ps.probability("threshold.pot.initial_quantile", p.InitialQuantile)
		ps.finite("threshold.pot.initial", p.Initial)
		ps.finite("threshold.pot.shape", p.Shape)
		if ps.finite("threshold.pot.scale", p.Scale) && p.Scale <= 0 {
			ps.add("threshold.pot.scale", "is %v, want > 0", p.Scale)
		}
		if p.Peaks < 1 {
			ps.add("threshold.pot.peaks", "is %d, want ≥ 1", p.Peaks)
		}
		if p.Samples < p.Peaks {
			ps.add("threshold.pot.samples", "is %d, fewer than the %d peaks", p.Samples, p.Peaks)
		}
	}
	if u := t.Unseen; u != nil {
		ps.oneOf("threshold.unseen.method", u.Method, UnseenLogLaplace)
		ps.finite("threshold.unseen.location", u.Location)
		if ps.finite("threshold.unseen.scale", u.Scale) && u.Scale <= 0 {
			ps.add("threshold.unseen.scale", "is %v, want > 0", u.Scale)
		}
	}
	if s := t.Scores; s != nil {
		ps.oneOf("threshold.scores.source", s.Source, "train", "validation", "train+validation", "calibration")
		if s.Count < 1 {
			ps.add("threshold.scores.count", "is %d, want ≥ 1", s.Count)
		}
		for _, f := range []struct {
			name string
			v    float64
		}{{"mean", s.Mean}, {"std", s.Std}, {"min", s.Min}, {"p50", s.P50}, {"p90", s.P90}, {"p99", s.P99}, {"max", s.Max}} {
			ps.finite("threshold.scores."+f.name, f.v)
		}
		if !(s.Min <= s.P50 && s.P50 <= s.P90 && s.P90 <= s.P99 && s.P99 <= s.Max) {
			ps.add("threshold.scores", "min ≤ p50 ≤ p90 ≤ p99 ≤ max does not hold")
		}
		if q := s.Quantiles; q != nil {
			if len(q) < 2 || len(q) > 1001 {
				ps.add("threshold.scores.quantiles", "has %d values, want 2..1001", len(q))
			}
			for i, v := range q {
				if !ps.finite(fmt.Sprintf("threshold.scores.quantiles[%d]", i), v) {
					break
				}
				if i > 0 && v < q[i-1] {
					ps.add("threshold.scores.quantiles", "must not decrease, [%d] = %v < [%d] = %v", i, v, i-1, q[i-1])
					break
				}
			}
		}
	}
}

func (t *Training) validate(ps *problems) {
	if t.Trainer == "" {
		ps.add("training.trainer", "missing")
	}
	if t.Arch == "" {
		ps.add("training.arch", "missing")
	}
	if t.Quantization != "" && t.Quantization != "int8" {
		ps.add("training.quantization", "is %q, want int8 or none", t.Quantization)
	}
	if t.Epochs < 0 || t.MaxEpochs < t.Epochs {
		ps.add("training.epochs", "is %d with max_epochs %d, want 0 ≤ epochs ≤ max_epochs", t.Epochs, t.MaxEpochs)
	}
	if t.BestEpoch < 0 || t.BestEpoch > t.Epochs {
		ps.add("training.best_epoch", "is %d, want between 0 and epochs (%d)", t.BestEpoch, t.Epochs)
	}
	if t.Validation < 0 || t.Validation >= 1 || math.IsNaN(t.Validation) {
		ps.add("training.validation", "is %v, want a fraction in [0, 1)", t.Validation)
	}
	ps.oneOf("training.stopped_by", t.StoppedBy, "max_epochs", "early_stopping", "budget")
	if t.Data.SHA256 != "" && !validSHA256(t.Data.SHA256) {
		ps.add("training.data.sha256", "%q is not 64 lowercase hex digits", t.Data.SHA256)
	}
	if t.Data.Rows < 0 || t.Data.Windows < 0 || t.Data.Train < 0 || t.Data.Validation < 0 {
		ps.add("training.data", "counts must not be negative")
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"learning_rate", t.LearningRate}, {"seconds", t.Seconds}, {"loss.initial", t.Loss.Initial},
		{"loss.final", t.Loss.Final}, {"loss.best_val", t.Loss.BestVal}} {
		ps.finite("training."+f.name, f.v)
	}
	for i, v := range t.Loss.Train {
		ps.finite(fmt.Sprintf("training.loss.train[%d]", i), v)
	}
	for i, v := range t.Loss.Val {
		ps.finite(fmt.Sprintf("training.loss.val[%d]", i), v)
	}
}

// Validate checks a behaviour feature declaration against the channel
// names it must produce, in order; problems are reported with paths under
// "features".
func (f *Features) Validate(channels []string) error {
	var ps problems
	f.validate(&ps, channels)
	if len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	return nil
}

func (f *Features) validate(ps *problems, channels []string) {
	if f.Window <= 0 {
		ps.add("features.window", "is %v, want > 0", time.Duration(f.Window))
	}
	if f.Step <= 0 || f.Step > f.Window {
		ps.add("features.step", "is %v, want > 0 and ≤ features.window", time.Duration(f.Step))
	}
	events := map[string]bool{}
	for i, e := range f.Events {
		path := fmt.Sprintf("features.events[%d]", i)
		if e == "" {
			ps.add(path, "empty event name")
		} else if events[e] {
			ps.add(path, "%q is listed twice", e)
		}
		events[e] = true
	}
	if len(f.List) != len(channels) {
		ps.add("features.list", "has %d features, want one per input channel (%d)", len(f.List), len(channels))
	}
	for i, ft := range f.List {
		path := fmt.Sprintf("features.list[%d]", i)
		if i < len(channels) && ft.Name != channels[i] {
			ps.add(path+".name", "is %q, want input.channels[%d] = %q", ft.Name, i, channels[i])
		}
		ps.oneOf(path+".op", ft.Op, featureOps...)
		switch {
		case ft.Op == FeatureCount && ft.Event == "":
			ps.add(path+".event", "missing, a count feature counts one event name")
		case ft.Op == FeatureCount && !events[ft.Event]:
			ps.add(path+".event", "%q is not in features.events", ft.Event)
		case ft.Op != FeatureCount && ft.Event != "":
			ps.add(path+".event", "only count features name an event")
		}
	}
}

func validName(s string) bool {
	if s == "" || s[0] == '.' {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}
