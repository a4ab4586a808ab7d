package models

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vigil-edge/vigil/inference"
)

// Model is a loaded model and its manifest. It normalises raw windows,
// scores them with the scorer and reduces the output to one score per
// window and one contribution per channel. It is safe for concurrent use.
type Model struct {
	manifest *Manifest
	scorer   inference.Scorer
	spec     inference.Spec
	channels int
	window   int
	// cmajor: the model takes windows channel-major; Score transposes.
	cmajor bool
	mean   []float64
	invStd []float64
	// center is the manifest's normalization.center, nil when no channel
	// is centred.
	center []bool
	// free holds scratch buffers between Score calls, so that steady-state
	// scoring allocates nothing. A channel rather than a sync.Pool: the
	// pool drops items at random under the race detector and at each GC.
	free chan *scratch
}

type scratch struct {
	in, out []float32
	far     []bool // per window: a value out of float32 range
	// tin and tout hold the transposed windows of a channel-major model.
	tin, tout []float32
}

// New wraps a scorer with its manifest. The manifest must be valid and its
// shapes must match the scorer's; the Model takes ownership of the scorer
// (Close closes it).
func New(m *Manifest, s inference.Scorer) (*Model, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if err := CheckSpec(m, s.Spec()); err != nil {
		return nil, fmt.Errorf("model %s: %w", m.Name, err)
	}
	c := len(m.Input.Channels)
	md := &Model{
		manifest: m,
		scorer:   s,
		spec:     s.Spec(),
		cmajor:   m.Input.ChannelMajor(),
		channels: c,
		window:   m.Input.Window,
		mean:     slices.Clone(m.Normalization.Mean),
		invStd:   make([]float64, c),
		free:     make(chan *scratch, 16),
	}
	for i, sd := range m.Normalization.Std {
		md.invStd[i] = 1 / sd
	}
	if m.Normalization.Centered() {
		md.center = slices.Clone(m.Normalization.Center)
	}
	return md, nil
}

// CheckSpec compares the scorer's tensor shapes (per window, without the
// batch dimension) with the manifest's and names the manifest fields that
// disagree. The input tensor may have any shape holding window × channels
// values: [window, channels], its flattening [window·channels], [window,
// channels, 1] and so on for a time-major input, [channels, window] and
// its flattenings for a channel-major one. A two-dimensional input that
// has the other layout's shape is refused with a hint to set input.layout.
func CheckSpec(m *Manifest, got inference.Spec) error {
	want := m.Spec()
	var diffs []string
	w, c := m.Input.Window, len(m.Input.Channels)
	if got.InputSize() != w*c {
		diffs = append(diffs, fmt.Sprintf("input.window=%d and %d input.channels declare input %v per window, the model's input tensor is %v (%d values, want %d)",
			w, c, want.Input, got.Input, got.InputSize(), w*c))
	} else if sq, swapped := squeeze(got.Input), []int{want.Input[1], want.Input[0]}; w != c && slices.Equal(sq, swapped) {
		other := LayoutChannelMajor
		if m.Input.ChannelMajor() {
			other = LayoutTimeMajor
		}
		diffs = append(diffs, fmt.Sprintf("the model's input tensor is %v per window, which is %s for input.window=%d and %d input.channels; the manifest declares %v (set input.layout to %q if the model takes %s windows)",
			got.Input, other, w, c, want.Input, other, other))
	}
	if got.OutputSize() != want.OutputSize() {
		if m.Output.Kind == OutputScore {
			diffs = append(diffs, fmt.Sprintf("output.kind=score with output.size=%d declares output %v per window, the model's output tensor is %v",
				m.Output.Size, want.Output, got.Output))
		} else {
			diffs = append(diffs, fmt.Sprintf("output.kind=reconstruction declares output %v per window (the input's shape), the model's output tensor is %v",
				want.Output, got.Output))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("tensors disagree with the manifest: %s", strings.Join(diffs, "; "))
	}
	return nil
}

// squeeze returns dims without its 1s.
func squeeze(dims []int) []int {
	var out []int
	for _, d := range dims {
		if d != 1 {
			out = append(out, d)
		}
	}
	return out
}

// ReadFiles reads and checks dir/NAME.json and dir/NAME.tflite without
// loading the model: the manifest is decoded strictly and validated, its
// name must be NAME, and the model file must have the manifest's SHA-256.
func ReadFiles(path string) (*Manifest, []byte, error) {
	base := strings.TrimSuffix(strings.TrimSuffix(path, ".json"), ".tflite")
	data, err := os.ReadFile(base + ".json")
	if err != nil {
		return nil, nil, fmt.Errorf("load model %s: %w", base, err)
	}
	m, err := DecodeManifest(data)
	if err != nil {
		return nil, nil, fmt.Errorf("load model %s: %s.json: %w", base, filepath.Base(base), err)
	}
	if err := m.Validate(); err != nil {
		return nil, nil, fmt.Errorf("load model %s: %s.json: %w", base, filepath.Base(base), err)
	}
	if name := filepath.Base(base); m.Name != name {
		return nil, nil, fmt.Errorf("load model %s: name: manifest says %q, the files are named %q", base, m.Name, name)
	}
	model, err := os.ReadFile(base + ".tflite")
	if err != nil {
		return nil, nil, fmt.Errorf("load model %s: %w", base, err)
	}
	if sum := SHA256(model); sum != m.SHA256 {
		return nil, nil, fmt.Errorf("load model %s: sha256: manifest says %s, %s.tflite has %s: %w",
			base, m.SHA256, filepath.Base(base), sum, ErrChecksum)
	}
	return m, model, nil
}

// ErrChecksum means a model file is not the one its manifest describes.
var ErrChecksum = errors.New("model file does not match the manifest's sha256")

// SHA256 returns the lowercase hex SHA-256 of b.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Save writes dir/NAME.tflite and dir/NAME.json. It sets m.SHA256 from the
// model bytes and m.Name to name, validates the manifest, and writes each
// file through a temporary file and a rename, the model first, so that a
// reader never sees a manifest without its model.
func Save(dir, name string, tflite []byte, m *Manifest) error {
	if !validName(name) {
		return fmt.Errorf("save model %q: name may only hold letters, digits, '.', '_' and '-'", name)
	}
	m.Name = name
	m.SHA256 = SHA256(tflite)
	if err := m.Validate(); err != nil {
		return fmt.Errorf("save model %s: %w", name, err)
	}
	js, err := m.Encode()
	if err != nil {
		return fmt.Errorf("save model %s: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save model %s: %w", name, err)
	}
	base := filepath.Join(dir, name)
	if err := writeFile(base+".tflite", tflite); err != nil {
		return fmt.Errorf("save model %s: %w", name, err)
	}
	if err := writeFile(base+".json", js); err != nil {
		return fmt.Errorf("save model %s: %w", name, err)
	}
	return nil
}

func writeFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// Manifest returns the model's manifest. Callers must not modify it.
func (md *Model) Manifest() *Manifest { return md.manifest }

// Threshold is the manifest's calibrated threshold.
func (md *Model) Threshold() float64 { return md.manifest.Threshold.Value }

// Window is the number of samples per window and Channels the number of
// channels per sample.
func (md *Model) Window() int { return md.window }

// Channels is the number of channels per sample.
func (md *Model) Channels() int { return md.channels }

// Scorer returns the underlying scorer.
func (md *Model) Scorer() inference.Scorer { return md.scorer }

// Close closes the scorer.
func (md *Model) Close() error { return md.scorer.Close() }

// Score scores a batch of raw windows. windows holds n windows back to back,
// each Window samples of Channels values in channel order (sample-major:
// windows[(w*Window+t)*Channels+c]), in the units the sensors report, in
// float64 so that large offsets keep their precision; they are normalised
// with the manifest's mean and std, and its centred channels centred on
// their window mean. scores receives one
// score per window (len n). contrib, when not nil, receives n×Channels
// values: for reconstruction models each channel's share of the error (its
// mean squared error for mse and max_channel_mse, its mean absolute error
// for mae, in normalised units), for score models zeros. A window with a
// NaN or infinite value is an error.
//
// A finite value that is out of float32 range once normalised (1e50, or
// 1e308, which overflows float64 when normalised) cannot be given to the
// model. Its window is not: it scores +Inf, and its contributions name
// the channels out of range, sharing 1 between them (all of it for one
// channel), with 0 for the others, for reconstruction and score models
// alike. The other windows of the batch are scored as usual. In steady
// state (batches no larger than before) Score allocates nothing.
func (md *Model) Score(ctx context.Context, windows, scores, contrib []float64) error {
	per := md.window * md.channels
	if len(windows) == 0 || len(windows)%per != 0 {
		return fmt.Errorf("model %s: %d values is not a whole number of windows of %d×%d", md.manifest.Name, len(windows), md.window, md.channels)
	}
	n := len(windows) / per
	if len(scores) != n {
		return fmt.Errorf("model %s: scores has room for %d windows, want %d", md.manifest.Name, len(scores), n)
	}
	if contrib != nil && len(contrib) != n*md.channels {
		return fmt.Errorf("model %s: contrib has %d values, want %d (windows × channels)", md.manifest.Name, len(contrib), n*md.channels)
	}
	s := md.getScratch(n)
	defer md.putScratch(s)
	in := s.in[:len(windows)]
	far := s.far[:n]
	clear(far)
	anyFar := false
	for i, x := range windows {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return md.badValue(i, x)
		}
		c := i % md.channels
		v := (x - md.mean[c]) * md.invStd[c]
		if !(math.Abs(v) <= math.MaxFloat32) {
			far[i/per], anyFar = true, true
			v = 0
		}
		in[i] = float32(v)
	}
	if md.center != nil {
		Centre(windows, in, md.mean, md.invStd, md.center, md.window)
	}
	if anyFar {
		// The model sees zeros for a window out of range (and Centre's sums
		// of its values may have overflowed).
		for w, f := range far {
			if f {
				clear(in[w*per : (w+1)*per])
			}
		}
	}
	out := s.out[:n*md.spec.OutputSize()]
	feed := in
	if md.cmajor {
		feed = transpose(s.tin[:len(in)], in, md.window, md.channels)
	}
	if err := md.scorer.Score(ctx, feed, out); err != nil {
		return fmt.Errorf("model %s: %w", md.manifest.Name, err)
	}
	if md.manifest.Output.Kind == OutputScore {
		reduceScores(md.manifest.Output.Reduction, out, md.manifest.Output.Size, scores)
		clear(contrib)
	} else {
		if md.cmajor {
			// The reconstruction is channel-major too: back to time-major.
			out = transpose(s.tout[:len(out)], out, md.channels, md.window)
		}
		reduceReconstruction(md.manifest.Output.Reduction, in, out, md.window, md.channels, scores, contrib)
		nonFinite(scores, contrib, md.channels)
	}
	if anyFar {
		md.scoreFar(windows, far, scores, contrib)
	}
	return nil
}

// nonFinite handles the reconstruction of a window that overflowed inside
// the model (float32 arithmetic on large inputs): its score is +Inf, and
// the channels whose error is not finite share the contributions, so that
// an alert names them rather than the channels whose errors happened to
// be finite.
func nonFinite(scores, contrib []float64, channels int) {
	for w, sc := range scores {
		if !math.IsNaN(sc) && !math.IsInf(sc, 0) {
			continue
		}
		scores[w] = math.Inf(1)
		if contrib == nil {
			continue
		}
		ch := contrib[w*channels : (w+1)*channels]
		k := 0
		for c, e := range ch {
			if math.IsNaN(e) || math.IsInf(e, 0) {
				ch[c] = 1
				k++
			} else {
				ch[c] = 0
			}
		}
		for c := range ch {
			if k > 0 {
				ch[c] /= float64(k)
			}
		}
	}
}

// scoreFar scores the windows with values out of float32 range: +Inf, and
// the channels out of range share the contributions.
func (md *Model) scoreFar(windows []float64, far []bool, scores, contrib []float64) {
	per := md.window * md.channels
	for w, f := range far {
		if !f {
			continue
		}
		scores[w] = math.Inf(1)
		if contrib == nil {
			continue
		}
		ch := contrib[w*md.channels : (w+1)*md.channels]
		clear(ch)
		k := 0
		for i, x := range windows[w*per : (w+1)*per] {
			c := i % md.channels
			if ch[c] == 0 && !(math.Abs((x-md.mean[c])*md.invStd[c]) <= math.MaxFloat32) {
				ch[c] = 1
				k++
			}
		}
		for c := range ch {
			ch[c] /= float64(k)
		}
	}
}

// transpose writes each [rows, cols] matrix of src, back to back, into dst
// as [cols, rows] and returns dst.
func transpose(dst, src []float32, rows, cols int) []float32 {
	per := rows * cols
	for w := 0; w < len(src); w += per {
		a, b := src[w:w+per], dst[w:w+per]
		for r := range rows {
			for c := range cols {
				b[c*rows+r] = a[r*cols+c]
			}
		}
	}
	return dst
}

// Centre overwrites the centred channels of in, normalised windows of
// window samples back to back (sample-major, len(center) channels), with
// each value minus the channel's mean over its window. The mean comes from
// raw, the same windows in sensor units, in float64: (raw-mean)·invStd
// summed in time order and divided by window; the result is then rounded
// to float32. Model.Score does this after normalising, and the trainer
// calls it so that it learns on exactly the numbers the model is given.
func Centre(raw []float64, in []float32, mean, invStd []float64, center []bool, window int) {
	channels := len(center)
	per := window * channels
	for w := 0; w < len(in); w += per {
		raw := raw[w : w+per]
		for c, on := range center {
			if !on {
				continue
			}
			sum := 0.0
			for t := c; t < per; t += channels {
				sum += (raw[t] - mean[c]) * invStd[c]
			}
			m := sum / float64(window)
			for t := c; t < per; t += channels {
				in[w+t] = float32((raw[t]-mean[c])*invStd[c] - m)
			}
		}
	}
}

func (md *Model) badValue(i int, x float64) error {
	per := md.window * md.channels
	return fmt.Errorf("model %s: window %d sample %d channel %q is %v after normalisation (raw %v)",
		md.manifest.Name, i/per, i%per/md.channels, md.manifest.Input.Channels[i%md.channels],
		(x-md.mean[i%md.channels])*md.invStd[i%md.channels], x)
}

func (md *Model) getScratch(n int) *scratch {
	var s *scratch
	select {
	case s = <-md.free:
	default:
		s = new(scratch)
	}
	if need := n * md.window * md.channels; cap(s.in) < need {
		s.in = make([]float32, need)
	}
	if need := n * md.spec.OutputSize(); cap(s.out) < need {
		s.out = make([]float32, need)
	}
	if cap(s.far) < n {
		s.far = make([]bool, n)
	}
	if md.cmajor {
		if need := n * md.window * md.channels; cap(s.tin) < need {
			s.tin = make([]float32, need)
		}
		if need := n * md.spec.OutputSize(); cap(s.tout) < need {
			s.tout = make([]float32, need)
		}
	}
	return s
}

func (md *Model) putScratch(s *scratch) {
	select {
	case md.free <- s:
	default:
	}
}

// reduceReconstruction computes per-window scores and per-channel
// contributions from normalised inputs and their reconstructions.
func reduceReconstruction(reduction string, in, out []float32, window, channels int, scores, contrib []float64) {
	per := window * channels
	for w := range scores {
		x, y := in[w*per:(w+1)*per], out[w*per:(w+1)*per]
		// Per-channel mean error, accumulated into contrib when given and
		// into a small stack array otherwise.
		var stack [64]float64
		var ch []float64
		if contrib != nil {
			ch = contrib[w*channels : (w+1)*channels]
		} else if channels <= len(stack) {
			ch = stack[:channels]
		} else {
			ch = make([]float64, channels) // only for > 64 channels without contrib
		}
		scores[w] = ReconstructionScore(reduction, x, y, ch)
	}
}

// ReconstructionScore is one window's anomaly score from its
// reconstruction, by reduction (ReduceMSE, ReduceMAE or
// ReduceMaxChannelMSE): x is the window and y its reconstruction, both
// window×channels values, time-major; ch (one per channel) receives each
// channel's mean error. The model scores with it and the trainer computes
// its thresholds with it, so both reduce alike.
func ReconstructionScore[T float32 | float64](reduction string, x, y []T, ch []float64) float64 {
	channels := len(ch)
	window := len(x) / channels
	clear(ch)
	for i := range x {
		d := float64(y[i]) - float64(x[i])
		if reduction == ReduceMAE {
			ch[i%channels] += math.Abs(d)
		} else {
			ch[i%channels] += d * d
		}
	}
	total, top := 0.0, 0.0
	for c := range ch {
		ch[c] /= float64(window)
		total += ch[c]
		top = max(top, ch[c])
	}
	if reduction == ReduceMaxChannelMSE {
		return top
	}
	return total / float64(channels)
}

func reduceScores(reduction string, out []float32, size int, scores []float64) {
	for w := range scores {
		o := out[w*size : (w+1)*size]
		switch reduction {
		case ReduceMax:
			m := float64(o[0])
			for _, v := range o[1:] {
				m = max(m, float64(v))
			}
			scores[w] = m
		case ReduceMean:
			s := 0.0
			for _, v := range o {
				s += float64(v)
			}
			scores[w] = s / float64(size)
		default: // ReduceFirst
			scores[w] = float64(o[0])
		}
	}
}
