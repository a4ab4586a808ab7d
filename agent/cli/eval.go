package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/eval"
	"github.com/vigil-edge/vigil/models/train"
)

// Eval is `vigil eval`: it measures detection on labelled data. Its one
// subcommand, skab, runs the SKAB benchmark's protocol through the on-device
// learning API, TFLite and the agent's detector (see agent/eval).
func Eval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "skab" {
		fmt.Fprintln(stderr, "usage: vigil eval skab --data DIR [flags]\n\nRun 'vigil eval skab -h' for the flags.")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return ErrUsage
	}
	return evalSKAB(ctx, args[1:], stdout, stderr)
}

// evalSKAB is `vigil eval skab`: the per-file table and the totals go to
// stdout, ending with the summary line; progress goes to stderr.
func evalSKAB(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := eval.DefaultOptions()
	fs := NewFlags("eval skab", stderr)
	data := fs.String("data", "", "SKAB folder holding valve1/, valve2/ and other/ (required)")
	files := fs.String("files", "", `evaluate only the files this glob matches: "valve1/*.csv", "valve1/1?.csv"; a pattern without "/" matches base names`)
	trainRows := fs.Int("train-rows", def.TrainRows, "rows at the start of each file to learn on; the rest are scored")
	window := fs.Int("window", def.Train.Window, "samples per window")
	hop := fs.Int("hop", def.Train.Hop, "samples between scored windows")
	stride := fs.Int("stride", def.Train.Stride, "samples between training windows")
	arch := fs.String("arch", string(def.Train.Arch), "dense or conv")
	quantize := fs.String("quantize", "", "int8: learn full-integer models (dense only)")
	hidden := fs.String("hidden", "", "dense layer sizes, comma-separated, the last the bottleneck (default: from the window)")
	filters := fs.String("filters", ints(def.Train.Filters), "conv filters per encoder layer, comma-separated")
	kernel := fs.Int("kernel", def.Train.Kernel, "conv kernel size")
	reduction := fs.String("reduction", def.Train.Reduction, "window score: mse, mae or max_channel_mse")
	epochs := fs.Int("epochs", def.Train.Epochs, "most training epochs")
	patience := fs.Int("patience", def.Train.Patience, "epochs without improvement before stopping")
	seed := fs.Uint64("seed", def.Train.Seed, "random seed")
	drift := fs.Int("drift", def.Train.DriftHorizon, "widen each channel's normalisation by its training trend continued this many samples (0: off)")
	robust := fs.Bool("robust", def.Train.Robust, "normalise each channel by its median and MAD over the training rows instead of mean and std")
	center := fs.Float64("center", def.Train.Center, "centre each channel whose von Neumann ratio in the training rows is below this on its window mean (0: none, above 4: all)")
	method := fs.String("calibration", def.Train.Calibration.Method, "threshold calibration: pot or quantile")
	quantile := fs.Float64("quantile", def.Train.Calibration.Quantile, "quantile of normal scores (the quantile method, and POT's fallback)")
	factor := fs.Float64("factor", def.Train.Calibration.Factor, "threshold factor")
	risk := fs.Float64("risk", def.Train.Calibration.Risk, "POT: false-alarm probability per window")
	calibrateOn := fs.String("calibrate-on", def.Train.Calibration.On, "windows whose scores calibrate the threshold: train+validation, validation or train")
	threshold := fs.Float64("threshold", 0, "fixed detector threshold for every file (0: each model's calibrated one)")
	k := fs.Int("k", def.Detect.K, "detector hysteresis: anomalous while K of the last N windows exceed the threshold")
	n := fs.Int("n", def.Detect.N, "detector hysteresis window N")
	closeAfter := fs.Duration("close-after", def.Detect.CloseAfter, "an episode closes after the stream has been normal this long (as streams[].episode.close_after)")
	stuckFactor := fs.Int("stuck-factor", def.StuckFactor, "a channel on one value for this many times its longest run in the training rows (at least a window) is stuck, and its windows exceed (as streams[].stuck_factor; 0: off)")
	shiftFactor := fs.Float64("shift-factor", def.ShiftFactor, "a window in which a channel's last rows moved this many times as far from the rest as the most in the training rows exceeds (as streams[].shift_factor; 0: off)")
	cusum := fs.String("cusum", "", `"K,H": also anomalous while a CUSUM of each model's normalised log score (allowance K, interval H) reaches H (an experiment, agent/eval/README.md; the agent does not run it)`)
	cusumOnly := fs.Bool("cusum-only", false, "with --cusum: the CUSUM alone decides, without the threshold's K-of-N rule")
	jsonOut := fs.String("json", "", "also write the whole report (per file and in total, point-wise and alert-level) as JSON to this file")
	mapping := fs.String("mapping", string(def.Mapping), "window verdicts to rows: causal (in real time) or cover (every covering window, as SKAB's Conv-AE)")
	parallel := fs.Int("parallel", 0, "files evaluated at once (0: GOMAXPROCS); results do not depend on it")
	ensemble := fs.String("ensemble", "", `score windows by PCA statistics alone or beside the autoencoder (an experiment; the agent does not run it): "t2", "q", "mean:ae,t2", "max:ae,q,t2"`)
	pcaVariance := fs.Float64("pca-variance", 0, "share of the training rows' variance the ensemble's PCA keeps (0: the default, 0.9)")
	quiet := fs.Bool("q", false, "no progress on stderr")
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	if *data == "" || fs.NArg() > 0 {
		return UsageError(fs, "vigil eval skab: give --data DIR and no arguments")
	}

	opts := def
	opts.Data, opts.Files, opts.TrainRows, opts.Parallel = *data, *files, *trainRows, *parallel
	t := &opts.Train
	t.Window, t.Hop, t.Stride, t.Arch, t.Kernel = *window, *hop, *stride, train.Arch(*arch), *kernel
	t.Reduction, t.Epochs, t.Patience, t.Seed, t.DriftHorizon = *reduction, *epochs, *patience, *seed, *drift
	t.Calibration.Method, t.Calibration.Quantile = *method, *quantile
	t.Calibration.Factor, t.Calibration.Risk, t.Calibration.On = *factor, *risk, *calibrateOn
	t.Center, t.Robust = *center, *robust
	t.Quantize = *quantize
	var err error
	if *hidden != "" {
		if t.Hidden, err = parseInts(*hidden); err != nil {
			return fmt.Errorf("--hidden: %w", err)
		}
	}
	if t.Filters, err = parseInts(*filters); err != nil {
		return fmt.Errorf("--filters: %w", err)
	}
	opts.Detect.Threshold, opts.Detect.K, opts.Detect.N, opts.Detect.CloseAfter = *threshold, *k, *n, *closeAfter
	if *cusum != "" {
		if opts.Detect.CUSUM, err = parseCUSUM(*cusum); err != nil {
			return fmt.Errorf("--cusum: %w", err)
		}
	}
	opts.Detect.CUSUM.Only = *cusumOnly
	opts.Mapping = eval.Mapping(*mapping)
	opts.StuckFactor = *stuckFactor
	opts.ShiftFactor = *shiftFactor
	opts.Ensemble, opts.PCAVariance = *ensemble, *pcaVariance
	done := 0
	if !*quiet {
		opts.Progress = func(r eval.FileResult) {
			done++
			fmt.Fprintf(stderr, "eval: %3d done  %-16s F1 %.3f  FAR %6.2f  MAR %6.2f  %.1fs\n",
				done, r.Name, r.F1(), r.FAR(), r.MAR(), (r.Learn + r.Score).Seconds())
		}
	}

	rep, err := eval.SKAB(ctx, opts)
	if err != nil {
		return err
	}
	eval.WriteHeader(stdout)
	for _, r := range rep.Files {
		eval.WriteFile(stdout, r)
	}
	if *jsonOut != "" {
		f, err := os.Create(*jsonOut)
		if err != nil {
			return fmt.Errorf("--json: %w", err)
		}
		err = eval.WriteJSON(f, rep)
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("--json: %w", cerr)
		}
		if err != nil {
			return err
		}
	}
	eval.WriteTotal(stdout, rep)
	return nil
}

// parseCUSUM reads "K,H" (Location and Scale left 0: each model's fit).
func parseCUSUM(s string) (detect.CUSUM, error) {
	ks, hs, ok := strings.Cut(s, ",")
	if !ok {
		return detect.CUSUM{}, fmt.Errorf("%q: want K,H", s)
	}
	k, err := strconv.ParseFloat(strings.TrimSpace(ks), 64)
	if err != nil {
		return detect.CUSUM{}, fmt.Errorf("%q: K: %w", s, err)
	}
	h, err := strconv.ParseFloat(strings.TrimSpace(hs), 64)
	if err != nil {
		return detect.CUSUM{}, fmt.Errorf("%q: H: %w", s, err)
	}
	if !(h > 0) {
		return detect.CUSUM{}, fmt.Errorf("%q: H must be above 0", s)
	}
	return detect.CUSUM{K: k, H: h}, nil
}

// parseInts parses "32,16".
func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q is not a comma-separated list of integers", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// ints formats []int{32, 16} as "32,16".
func ints(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
