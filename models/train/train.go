// Package train fits autoencoders to normal data in pure Go and exports
// them as Vigil models: a TFLite flatbuffer (written with models/nn) and its
// manifest, with a threshold calibrated on the scores of normal windows.
//
// Two architectures are built: a dense autoencoder over the flattened
// window, and a temporal one of 1-D convolutions (strided encoder,
// upsampling decoder) that sees the window's time structure. Training is
// mini-batch Adam on the mean squared reconstruction error of standardised
// windows, with early stopping on a held-out tail of the data; it is
// deterministic for a seed and runs on one goroutine. Learn does all of it
// in-process within a time budget and returns the loaded model, for
// learning a stream's baseline on the device.
package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/models"
	"github.com/vigil-edge/vigil/models/nn"
	"github.com/vigil-edge/vigil/models/shift"
)

// Arch is an autoencoder architecture.
type Arch string

// The architectures Train builds.
const (
	// Dense flattens the window and encodes it through Hidden units
	// (decoder mirrored), back to window×channels.
	Dense Arch = "dense"
	// Conv encodes with 1-D convolutions of Filters (each halving the
	// steps, kernel Kernel), decodes with nearest-neighbour upsampling and
	// convolutions, crops to the window and ends with a linear convolution
	// back to the channels.
	Conv Arch = "conv"
)

// TrainerName is written into manifests as training.trainer.
const TrainerName = "vigil/models/train"

// Options configure training. Start from DefaultOptions: Train checks every
// field and names the ones that are wrong.
type Options struct {
	// Name, Version and Description go into the manifest.
	Name, Version, Description string
	// Channels names the columns of the samples, in order. Empty: "c0",
	// "c1", ...
	Channels []string
	// Window is the number of samples per window; Hop the step between
	// windows when the model runs (written to the manifest).
	Window, Hop int
	// Stride is the step between training windows (1 uses every window).
	Stride int
	Arch   Arch
	// Hidden is the dense encoder's layer sizes, the last one the
	// bottleneck; the decoder mirrors it. Nil picks sizes from the window:
	// [clamp(n/4, 2z, 128), z] with z = clamp(n/16, 2, 32) for n values.
	Hidden []int
	// Filters is the conv encoder's filters per layer and Kernel their
	// kernel size.
	Filters []int
	Kernel  int
	// Activation is used by every hidden layer; output layers are linear.
	Activation nn.Activation
	// Reduction turns a window's reconstruction error into its score
	// (models.ReduceMSE, ReduceMAE or ReduceMaxChannelMSE).
	Reduction string
	// Epochs is the most epochs to run; Patience stops training after that
	// many epochs without a better validation loss (0: never).
	Epochs, Patience int
	BatchSize        int
	LearningRate     float64
	// Validation is the fraction of rows, taken from the end, held out for
	// early stopping; 0 trains on everything and stops on training loss.
	Validation float64
	Seed       uint64
	// Calibration sets the threshold.
	Calibration Calibration
	// Budget, when positive, bounds the training time: when it is spent the
	// best model so far is exported.
	Budget time.Duration
	// Progress, when set, is called after every epoch.
	Progress func(Progress)
	// Now is the clock (default time.Now). A clock that returns the zero
	// time leaves the time out of the manifest, so that a model can be
	// rebuilt byte for byte.
	Now func() time.Time
	// Source names the data in the manifest ("pump.csv", "warm-up").
	Source string
	// Features makes a behaviour model: the manifest's kind is behaviour
	// and it declares these features (whose names must be the channels).
	Features *models.Features
	// Parallelism is the number of goroutines that compute a mini-batch's
	// gradient (0: up to 4, bounded by GOMAXPROCS). The result does not
	// depend on it: a batch is always split into the same 4 shards, summed
	// in order.
	Parallelism int
	// Workers and Threads configure the interpreters of the model Learn
	// loads (default 1 and 1).
	Workers, Threads int
	// DriftHorizon, when positive, widens the normalisation of each slowly
	// moving channel so that the drift seen in the training rows,
	// continued for this many more samples, counts as normal: the
	// channel's std becomes sqrt(std² + (slope·DriftHorizon)²), with slope
	// the least-squares trend per sample over all the rows given. A short
	// warm-up rarely sees a slowly warming machine reach its steady state;
	// without this the model flags the drift itself. Only channels whose
	// von Neumann ratio over the rows (see Center) is below 1, smoother
	// than white noise, are widened: a noisy channel's fitted trend is
	// mostly chance, and widening it would hide shifts in its level. 0 (the
	// default) leaves the standard deviations as measured.
	DriftHorizon int
	// Robust normalises each channel by its median and 1.4826 × its median
	// absolute deviation over the training rows instead of its mean and
	// std (the manifest's normalization.mean and .std hold them), so that
	// a few outliers in the warm-up neither shift nor widen it.
	Robust bool
	// Center, when positive, centres every channel whose von Neumann ratio
	// over the training rows (mean squared step over twice the variance:
	// about 1 for noise, near 0 for a slowly moving channel) is below it
	// on its mean within each window (models.Normalization.Center): the
	// model then judges such channels by their shape in the window, not by
	// a level that a short warm-up does not show all of. 0 (the default)
	// centres none; a value above 4 centres all.
	Center float64
	// Quantize, when QuantizeInt8, exports a full-integer model: int8
	// weights and activations, int32 biases, int8 input and output, the
	// activation ranges calibrated on the training windows; the threshold
	// is calibrated on the int8 model's scores. Only the dense
	// architecture is quantized. Empty exports float32.
	Quantize string
}

// QuantizeInt8 is the Options.Quantize value for full-integer int8 models.
const QuantizeInt8 = "int8"

// DefaultOptions returns a dense autoencoder over windows of 32 samples,
// tanh hidden layers, MSE scores, at most 100 epochs with patience 10,
// batches of 16, learning rate 3e-3, the last 20% of rows for validation,
// seed 1 and POT calibration (DefaultCalibration).
func DefaultOptions() Options {
	return Options{
		Name: "model", Version: "1",
		Window: 32, Hop: 1, Stride: 1,
		Arch: Dense, Filters: []int{16, 8}, Kernel: 5,
		Activation: nn.Tanh, Reduction: models.ReduceMSE,
		Epochs: 100, Patience: 10, BatchSize: 16, LearningRate: 3e-3,
		Validation: 0.2, Seed: 1,
		Calibration: DefaultCalibration(),
	}
}

func (o *Options) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.Name == "" {
		bad("Options.Name is empty")
	}
	if o.Version == "" {
		bad("Options.Version is empty")
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"Window", o.Window}, {"Hop", o.Hop}, {"Stride", o.Stride}} {
		if f.v < 1 {
			bad("Options.%s is %d, want ≥ 1", f.name, f.v)
		}
	}
	switch o.Arch {
	case Dense:
		for i, h := range o.Hidden {
			if h < 1 {
				bad("Options.Hidden[%d] is %d, want ≥ 1", i, h)
			}
		}
	case Conv:
		if len(o.Filters) == 0 {
			bad("Options.Filters is empty, the conv encoder needs at least one layer")
		}
		for i, f := range o.Filters {
			if f < 1 {
				bad("Options.Filters[%d] is %d, want ≥ 1", i, f)
			}
		}
		if o.Kernel < 1 {
			bad("Options.Kernel is %d, want ≥ 1", o.Kernel)
		}
	default:
		bad("Options.Arch is %q, want %q or %q", o.Arch, Dense, Conv)
	}
	if _, err := nn.ParseActivation(o.Activation.String()); err != nil {
		bad("Options.Activation: %v", err)
	}
	if o.Reduction != models.ReduceMSE && o.Reduction != models.ReduceMAE && o.Reduction != models.ReduceMaxChannelMSE {
		bad("Options.Reduction is %q, want %s, %s or %s", o.Reduction, models.ReduceMSE, models.ReduceMAE, models.ReduceMaxChannelMSE)
	}
	for _, f := range []struct {
		name   string
		v, min int
	}{{"Epochs", o.Epochs, 1}, {"Patience", o.Patience, 0}, {"BatchSize", o.BatchSize, 1}} {
		if f.v < f.min {
			bad("Options.%s is %d, want ≥ %d", f.name, f.v, f.min)
		}
	}
	if !(o.LearningRate > 0) || math.IsInf(o.LearningRate, 0) {
		bad("Options.LearningRate is %v, want a finite value > 0", o.LearningRate)
	}
	if !(o.Validation >= 0 && o.Validation < 1) {
		bad("Options.Validation is %v, want a fraction in [0, 1)", o.Validation)
	}
	if o.Budget < 0 {
		bad("Options.Budget is %v, want ≥ 0", o.Budget)
	}
	if o.Parallelism < 0 {
		bad("Options.Parallelism is %d, want ≥ 0", o.Parallelism)
	}
	if !(o.Center >= 0) || math.IsInf(o.Center, 0) {
		bad("Options.Center is %v, want a finite value ≥ 0", o.Center)
	}
	if o.DriftHorizon < 0 {
		bad("Options.DriftHorizon is %d, want ≥ 0", o.DriftHorizon)
	}
	if o.Workers < 0 || o.Threads < 0 {
		bad("Options.Workers and Options.Threads must be ≥ 0")
	}
	if err := o.Calibration.validate(); err != nil {
		errs = append(errs, fmt.Errorf("Options.%w", err))
	}
	switch {
	case o.Quantize != "" && o.Quantize != QuantizeInt8:
		bad("Options.Quantize is %q, want %q or empty (float32)", o.Quantize, QuantizeInt8)
	case o.Quantize == QuantizeInt8 && o.Arch != Dense:
		bad("Options.Quantize %q is for the %s architecture, Options.Arch is %q", QuantizeInt8, Dense, o.Arch)
	}
	if o.Features != nil {
		if err := o.Features.Validate(o.Channels); err != nil {
			bad("Options.Features: %v", err)
		}
	}
	return errors.Join(errs...)
}

// Progress is reported after every epoch.
type Progress struct {
	Epoch, Epochs int // this epoch (1-based) and the most epochs
	Loss          float64
	ValLoss       float64 // the training loss when nothing is held out
	Best          bool    // the best validation loss so far
	Elapsed       time.Duration
}

// Report summarises a training run.
type Report struct {
	Epochs, BestEpoch int
	// StoppedBy is "max_epochs", "early_stopping" or "budget".
	StoppedBy string
	// Loss and ValLoss are the losses at the best epoch.
	Loss, ValLoss float64
	Threshold     models.Threshold
	// Windows are the numbers of training and validation windows.
	TrainWindows, ValWindows int
	Params                   int
	ModelBytes               int
	Elapsed                  time.Duration
	// Warnings are things the caller should know: a constant channel, no
	// validation split, a calibration fallback.
	Warnings []string
}

// Result is a trained model.
type Result struct {
	Network  *nn.Network
	TFLite   []byte
	Manifest *models.Manifest
	Report   *Report
	// Scores are the trainer's own scores of the training windows then the
	// validation windows, computed with the exported (float32) weights.
	Scores []float64
}

// Save writes the model to dir as NAME.tflite and NAME.json.
func (r *Result) Save(dir string) error {
	return models.Save(dir, r.Manifest.Name, r.TFLite, r.Manifest)
}

// Train fits an autoencoder to samples (rows × channels, in time order, all
// normal behaviour), calibrates its threshold and exports it. It returns an
// error for bad options or data: non-finite values, rows of the wrong
// width, or fewer rows than a window. ctx cancels training.
func Train(ctx context.Context, samples [][]float64, opts Options) (*Result, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if len(opts.Channels) == 0 && len(samples) > 0 {
		for i := range samples[0] {
			opts.Channels = append(opts.Channels, fmt.Sprintf("c%d", i))
		}
	}
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if len(samples) == 0 {
		return nil, errors.New("train: no samples")
	}
	if len(opts.Channels) == 0 {
		return nil, errors.New("train: the samples have no values")
	}
	if err := checkRows(samples, len(opts.Channels)); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if len(samples) < opts.Window {
		return nil, fmt.Errorf("train: %d rows is fewer than one window of %d", len(samples), opts.Window)
	}
	start := opts.Now()
	t := &trainer{opts: opts, start: start, rng: rand.New(rand.NewPCG(opts.Seed, 0x76696769))}
	rep := &Report{}

	// Split rows: the last Validation of them are held out, cut into
	// windows separately so that no window spans both parts.
	rows := len(samples)
	trainRows, held := splitRows(rows, opts.Validation, opts.Window)
	if opts.Validation > 0 && !held {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"too few rows (%d) to hold out %.0f%% for validation with windows of %d: trained and stopped on the training loss",
			rows, 100*opts.Validation, opts.Window))
	}
	sc, warn := fitScaler(samples[:trainRows], opts.Channels, opts.Robust)
	if opts.Center > 0 {
		for j, r := range smoothness(samples, len(opts.Channels)) {
			if r < opts.Center {
				if sc.center == nil {
					sc.center = make([]bool, len(opts.Channels))
				}
				sc.center[j] = true
			}
		}
	}
	if opts.DriftHorizon > 0 {
		sc.widen(samples, opts.DriftHorizon)
	}
	rep.Warnings = append(rep.Warnings, warn...)
	trainW := sc.windows(samples, 0, trainRows, opts.Window, opts.Stride)
	valW := sc.windows(samples, trainRows, rows, opts.Window, opts.Stride)
	rep.TrainWindows, rep.ValWindows = len(trainW), len(valW)

	net := build(t.rng, opts, len(opts.Channels))
	t.net = net
	if err := t.fit(ctx, trainW, valW, rep); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}

	// Export the best weights; from here on the trainer's weights are the
	// float32 values in the file.
	exported := net.export(opts.Description)
	var model []byte
	var q *nn.Quantized
	var err error
	if opts.Quantize == QuantizeInt8 {
		q, err = nn.Quantize(exported, nn.QuantOptions{Mode: nn.FullInteger, IO: nn.IOInt8, Calibration: float32s(trainW)})
		if err == nil {
			model, err = q.Marshal()
		}
	} else {
		model, err = exported.Marshal()
	}
	if err != nil {
		return nil, fmt.Errorf("train: export: %w", err)
	}
	scores := make([]float64, 0, len(trainW)+len(valW))
	for _, w := range slices.Concat(trainW, valW) {
		if q != nil {
			scores = append(scores, t.quantizedScore(q, w))
		} else {
			scores = append(scores, t.score(w))
		}
	}
	calib, source, scale := calibrationScores(scores[:len(trainW)], scores[len(trainW):], opts.Calibration)
	if opts.Calibration.On == "validation" && len(valW) == 0 {
		rep.Warnings = append(rep.Warnings, "no validation windows: calibrated on the training windows")
	}
	th, warning, err := Calibrate(calib, opts.Calibration, source)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if warning != "" {
		rep.Warnings = append(rep.Warnings, warning)
	}
	th.TrainScale = scale
	rep.Threshold = th
	rep.Params = exported.Params()
	rep.ModelBytes = len(model)
	rep.Elapsed = opts.Now().Sub(start)

	m := t.manifest(exported, model, th, sc, samples, rep)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("train: the manifest it made is invalid: %w", err)
	}
	return &Result{Network: exported, TFLite: model, Manifest: m, Report: rep, Scores: scores}, nil
}

// calibrationScores picks the scores to calibrate on, the source to
// record, and the factor the training scores were rescaled by (0 if not).
func calibrationScores(train, val []float64, c Calibration) (scores []float64, source string, scale float64) {
	if len(val) == 0 {
		return train, "train", 0
	}
	if c.On == "validation" {
		return val, "validation", 0
	}
	if c.Rescale {
		if r := mean(val) / mean(train); r > 1 && !math.IsInf(r, 0) {
			scale = r
		}
	}
	var out []float64
	for _, s := range train {
		if scale > 0 {
			s *= scale
		}
		out = append(out, s)
	}
	if c.On == "train" {
		return out, "train", scale
	}
	return append(out, val...), "train+validation", scale
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

type trainer struct {
	opts   Options
	start  time.Time
	rng    *rand.Rand
	net    *network
	losses []float64
	vals   []float64
}

// shards is the number of parts a mini-batch's gradient is computed in.
// It is fixed, so that the sum, and the trained model, do not depend on how
// many goroutines compute the parts.
const shards = 4

// fit runs the epochs and leaves the best weights in t.net.
func (t *trainer) fit(ctx context.Context, trainW, valW [][]float64, rep *Report) error {
	o := t.opts
	opt := &adam{lr: o.LearningRate, beta1: 0.9, beta2: 0.999, eps: 1e-8}
	order := make([]int, len(trainW))
	for i := range order {
		order[i] = i
	}
	workers := o.Parallelism
	if workers == 0 {
		workers = min(runtime.GOMAXPROCS(0), shards)
	}
	workers = min(workers, shards)
	parts := make([]*network, shards)
	for i := range parts {
		parts[i] = t.net.clone()
	}
	sums := make([]float64, shards)
	n := float64(len(trainW[0]))

	var best [][]float64
	bestVal, bestLoss := math.Inf(1), math.Inf(1)
	rep.StoppedBy = "max_epochs"
epochs:
	for epoch := 1; epoch <= o.Epochs; epoch++ {
		t.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		sum := 0.0
		for b := 0; b < len(order); b += o.BatchSize {
			if err := ctx.Err(); err != nil {
				return err
			}
			if o.Budget > 0 && o.Now().Sub(t.start) >= o.Budget {
				rep.StoppedBy = "budget"
				break epochs
			}
			batch := order[b:min(b+o.BatchSize, len(order))]
			scale := 2 / (n * float64(len(batch)))
			shard := func(p int) {
				net := parts[p]
				net.zeroGrad()
				s := 0.0
				for _, i := range batch[p*len(batch)/shards : (p+1)*len(batch)/shards] {
					x := trainW[i]
					y := net.forward(x)
					dy := net.grads[len(net.layers)]
					for k := range y {
						d := y[k] - x[k]
						s += d * d
						dy[k] = scale * d
					}
					net.backward()
				}
				sums[p] = s
			}
			var wg sync.WaitGroup
			for w := 1; w < workers; w++ {
				wg.Go(func() {
					for p := w; p < shards; p += workers {
						shard(p)
					}
				})
			}
			for p := 0; p < shards; p += workers {
				shard(p)
			}
			wg.Wait()
			t.net.zeroGrad()
			for p, part := range parts {
				t.net.addGrads(part)
				sum += sums[p]
			}
			opt.step(t.net.params, 1)
		}
		loss := sum / (n * float64(len(trainW)))
		val := loss
		if len(valW) > 0 {
			val = t.meanLoss(valW)
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return fmt.Errorf("epoch %d: the loss diverged (%v); lower Options.LearningRate", epoch, loss)
		}
		t.losses, t.vals = append(t.losses, loss), append(t.vals, val)
		rep.Epochs = epoch
		improved := val < bestVal
		if improved {
			bestVal, bestLoss, rep.BestEpoch = val, loss, epoch
			best = t.net.snapshot(best)
		}
		if o.Progress != nil {
			o.Progress(Progress{Epoch: epoch, Epochs: o.Epochs, Loss: loss, ValLoss: val, Best: improved, Elapsed: o.Now().Sub(t.start)})
		}
		if o.Patience > 0 && epoch-rep.BestEpoch >= o.Patience {
			rep.StoppedBy = "early_stopping"
			break
		}
	}
	if best != nil {
		t.net.restore(best)
	} else {
		// The budget ran out inside the first epoch: keep what there is.
		bestLoss = t.meanLoss(trainW)
		bestVal = bestLoss
		if len(valW) > 0 {
			bestVal = t.meanLoss(valW)
		}
	}
	rep.Loss, rep.ValLoss = bestLoss, bestVal
	return nil
}

// meanLoss is the mean squared reconstruction error over windows.
func (t *trainer) meanLoss(windows [][]float64) float64 {
	sum := 0.0
	for _, x := range windows {
		y := t.net.forward(x)
		for k := range y {
			d := y[k] - x[k]
			sum += d * d
		}
	}
	return sum / float64(len(windows)*len(windows[0]))
}

// score is a window's anomaly score with the options' reduction, as
// models.Model computes it from the exported model's output.
func (t *trainer) score(x []float64) float64 {
	return t.reduce(x, t.net.forward(x))
}

// quantizedScore is a window's score through the int8 model, computed by
// the Go reference of the runtime's integer arithmetic.
func (t *trainer) quantizedScore(q *nn.Quantized, x []float64) float64 {
	in := float32s([][]float64{x})
	y := make([]float64, len(x))
	if err := q.Forward(in, y); err != nil {
		panic(err) // the shapes are the network's own
	}
	// models.Model compares the reconstruction with the float32 input.
	xs := make([]float64, len(x))
	for i, v := range in {
		xs[i] = float64(v)
	}
	return t.reduce(xs, y)
}

func float32s(windows [][]float64) []float32 {
	var out []float32
	for _, w := range windows {
		for _, v := range w {
			out = append(out, float32(v))
		}
	}
	return out
}

// reduce is the options' reduction of a window x and its reconstruction y:
// the model's own (models.ReconstructionScore).
func (t *trainer) reduce(x, y []float64) float64 {
	return models.ReconstructionScore(t.opts.Reduction, x, y, make([]float64, len(t.opts.Channels)))
}

func (t *trainer) manifest(net *nn.Network, model []byte, th models.Threshold, sc scaler, samples [][]float64, rep *Report) *models.Manifest {
	o := t.opts
	kind := models.KindSensor
	if o.Features != nil {
		kind = models.KindBehaviour
	}
	every := max(1, (len(t.losses)+49)/50)
	loss := models.Loss{Every: every, BestVal: rep.ValLoss, Train: []float64{}}
	if len(t.losses) > 0 {
		loss.Initial, loss.Final = t.losses[0], t.losses[len(t.losses)-1]
	}
	for i := 0; i < len(t.losses); i += every {
		loss.Train = append(loss.Train, t.losses[i])
		if rep.ValWindows > 0 {
			loss.Val = append(loss.Val, t.vals[i])
		}
	}
	validation := 0.0
	if rep.ValWindows > 0 {
		validation = o.Validation
	}
	tr := &models.Training{
		Trainer: TrainerName, Arch: string(o.Arch), Layers: net.String(), Params: net.Params(), Quantization: o.Quantize,
		Seed: o.Seed, Epochs: rep.Epochs, MaxEpochs: o.Epochs, BestEpoch: rep.BestEpoch,
		BatchSize: o.BatchSize, LearningRate: o.LearningRate, Validation: validation,
		StoppedBy: rep.StoppedBy,
		Data: models.DataInfo{
			SHA256: dataHash(samples), Source: o.Source, Rows: len(samples),
			Windows: rep.TrainWindows + rep.ValWindows, Train: rep.TrainWindows, Validation: rep.ValWindows,
		},
		Loss: loss,
	}
	if !t.start.IsZero() {
		tr.Started = t.start.UTC()
		tr.Seconds = rep.Elapsed.Seconds()
	}
	var maxRuns []int
	var ls *models.LevelShift
	if kind == models.KindSensor {
		// for the stuck-sensor check (detect.StuckLimits in the agent)
		maxRuns = models.MaxRuns(samples, len(o.Channels))
		// for the level-shift check (models/shift)
		if r, floor, mx := shift.Fit(samples, o.Window, sc.std); r > 0 {
			ls = &models.LevelShift{Recent: r, Floor: floor, Max: mx}
			// A channel that moves slowly against its noise (von Neumann
			// ratio below 1, as for the drift horizon) differs from the
			// start of a window to its end by its trend: the check is for
			// the noisy channels, and leaves it to the model (max 0).
			for j, vn := range smoothness(samples, len(o.Channels)) {
				if vn < 1 {
					ls.Max[j] = 0
				}
			}
		}
	}
	return &models.Manifest{
		Format: models.Format, Name: o.Name, Version: o.Version, Kind: kind, Description: o.Description,
		SHA256:        models.SHA256(model),
		Input:         models.Input{Window: o.Window, Hop: o.Hop, Channels: slices.Clone(o.Channels)},
		Normalization: models.Normalization{Mean: sc.mean, Std: sc.std, Center: sc.center, MaxRun: maxRuns},
		Shift:         ls,
		Output:        models.Output{Kind: models.OutputReconstruction, Reduction: o.Reduction},
		Threshold:     th,
		Training:      tr,
		Features:      o.Features,
	}
}

// build makes the architecture's layers for windows of opts.Window ×
// channels.
func build(r *rand.Rand, o Options, channels int) *network {
	w := o.Window
	n := w * channels
	act := o.Activation
	var layers []layer
	switch o.Arch {
	case Dense:
		hidden := o.Hidden
		if len(hidden) == 0 {
			z := min(max(n/16, 2), 32, max(n/2, 1))
			hidden = []int{min(max(n/4, 2*z), 128), z}
		}
		in := n
		for _, h := range hidden {
			layers = append(layers, newDense(r, in, h, act))
			in = h
		}
		for i := len(hidden) - 2; i >= 0; i-- {
			layers = append(layers, newDense(r, in, hidden[i], act))
			in = hidden[i]
		}
		layers = append(layers, newDense(r, in, n, nn.Linear), &reshape{shape: []int{w, channels}, n: n})
	case Conv:
		steps, ch := w, channels
		for _, f := range o.Filters {
			l := newConv1D(r, steps, ch, f, o.Kernel, 2, nn.Same, act)
			layers = append(layers, l)
			steps, ch = l.outSteps, f
		}
		for i := len(o.Filters) - 1; i >= 0; i-- {
			layers = append(layers, &upsample{steps: steps, ch: ch, factor: 2})
			steps *= 2
			if i == 0 && steps > w {
				layers = append(layers, &crop{steps: steps, ch: ch, begin: 0, length: w})
				steps = w
			}
			f := o.Filters[i]
			l := newConv1D(r, steps, ch, f, o.Kernel, 1, nn.Same, act)
			layers = append(layers, l)
			ch = f
		}
		layers = append(layers, newConv1D(r, steps, ch, channels, o.Kernel, 1, nn.Same, nn.Linear))
	}
	return newNetwork([]int{w, channels}, layers)
}

// splitRows returns how many of rows train when the last validation share
// of them is held out, and whether they are: both parts must hold a window.
func splitRows(rows int, validation float64, window int) (train int, held bool) {
	if validation <= 0 {
		return rows, false
	}
	n := int(math.Round(float64(rows) * validation))
	if n >= window && rows-n >= window {
		return rows - n, true
	}
	return rows, false
}
