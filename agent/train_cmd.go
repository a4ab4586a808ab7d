package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/cli"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/agent/stream"
	"github.com/vigil-edge/vigil/models"
	"github.com/vigil-edge/vigil/models/train"
)

// runTrain fits an autoencoder to normal data and writes NAME.tflite and
// NAME.json: from a CSV of sensor samples (--data), or from a JSONL file of
// behaviour events (--events), featurized per user as the kiosk model
// declares.
func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("train", stderr)
	data := fs.String("data", "", "CSV of normal sensor samples (header row; , ; or tab)")
	events := fs.String("events", "", "JSONL of normal behaviour events ({event_id, event_name, timestamp, user_id, properties})")
	columns := fs.String("columns", "", "comma-separated CSV columns to use, in order (default: every numeric column but time and labels)")
	out := fs.String("out", "", "output path without extension: writes OUT.tflite and OUT.json (required)")
	def := train.DefaultOptions()
	window := fs.Int("window", 60, "samples per window (behaviour models: feature vectors per window)")
	hop := fs.Int("hop", 10, "samples between windows when scoring")
	stride := fs.Int("stride", 1, "samples between training windows")
	arch := fs.String("arch", "dense", "dense or conv")
	quantize := fs.String("quantize", "", "int8: write a full-integer model (int8 weights, activations, input and output; dense only)")
	epochs := fs.Int("epochs", def.Epochs, "most training epochs")
	patience := fs.Int("patience", def.Patience, "epochs without improvement before stopping")
	seed := fs.Uint64("seed", def.Seed, "random seed: the same data and seed give the same model")
	budget := fs.Duration("budget", 0, "most training time (0: no limit)")
	version := fs.String("version", "1", "model version recorded in the manifest")
	quantile := fs.Float64("quantile", 0, "calibrate the threshold as this quantile of training scores × --factor instead of peaks-over-threshold")
	factor := fs.Float64("factor", 0, "threshold factor (with --quantile; default the trainer's)")
	risk := fs.Float64("risk", 0, "peaks-over-threshold: false-alarm probability per window (default the trainer's)")
	reproducible := fs.Bool("reproducible", false, "leave the training time out of the manifest so a rebuild is byte for byte identical")
	featWindow := fs.Duration("feature-window", 2*time.Minute, "behaviour: the sliding time window features are computed over")
	quiet := fs.Bool("q", false, "no progress lines")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" || (*data == "") == (*events == "") {
		return cli.UsageError(fs, "vigil train: give --out and exactly one of --data or --events")
	}
	opts := def
	opts.Name, opts.Version = filepath.Base(*out), *version
	opts.Window, opts.Hop, opts.Stride, opts.Arch = *window, *hop, *stride, train.Arch(*arch)
	opts.Quantize = *quantize
	opts.Epochs, opts.Patience, opts.Seed, opts.Budget = *epochs, *patience, *seed, *budget
	if *quantile > 0 {
		opts.Calibration.Method = models.MethodQuantile
		opts.Calibration.Quantile = *quantile
	}
	if *factor > 0 {
		opts.Calibration.Factor = *factor
	}
	if *risk > 0 {
		opts.Calibration.Risk = *risk
	}
	if *reproducible {
		opts.Now = func() time.Time { return time.Time{} }
	}
	t0 := time.Now()
	if !*quiet {
		opts.Progress = func(p train.Progress) {
			fmt.Fprintf(stdout, "epoch %3d  loss %.5f  val %.5f  %s\n", p.Epoch, p.Loss, p.ValLoss, time.Since(t0).Round(time.Millisecond))
		}
	}

	var samples [][]float64
	switch {
	case *data != "":
		f, err := os.Open(*data)
		if err != nil {
			return err
		}
		defer f.Close()
		var cols []string
		if *columns != "" {
			cols = strings.Split(*columns, ",")
		}
		tab, err := source.ReadCSV(f, source.CSVOptions{Columns: cols})
		if err != nil {
			return fmt.Errorf("%s: %w", *data, err)
		}
		if len(tab.Bad) > 0 {
			b := tab.Bad[0]
			return fmt.Errorf("%s: %d bad rows, the first at line %d: %s", *data, len(tab.Bad), b.Line, b.Msg)
		}
		samples = normalRows(tab)
		opts.Channels = tab.Channels
		opts.Source = filepath.Base(*data)
	default:
		feats := KioskFeatures(*featWindow)
		s, err := featurizeEvents(*events, feats)
		if err != nil {
			return err
		}
		samples = s
		opts.Features = feats
		opts.Channels = featureNames(feats)
		opts.Source = filepath.Base(*events)
	}
	if len(samples) < opts.Window+1 {
		return fmt.Errorf("%d rows of normal data, fewer than one window of %d plus one", len(samples), opts.Window)
	}
	fmt.Fprintf(stdout, "training %s on %d rows × %d channels (window %d, hop %d)\n", opts.Arch, len(samples), len(opts.Channels), opts.Window, opts.Hop)
	res, err := train.Train(ctx, samples, opts)
	if err != nil {
		return err
	}
	dir := filepath.Dir(*out)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := res.Save(dir); err != nil {
		return err
	}
	m := res.Manifest
	th := m.Threshold
	fmt.Fprintf(stdout, "\nwrote %s.tflite (%d bytes) and %s.json\n", *out, len(res.TFLite), *out)
	fmt.Fprintf(stdout, "model     %s@%s, %s, %d parameters, %d epochs (best %d, stopped by %s)\n",
		m.Name, m.Version, opts.Arch, res.Network.Params(), res.Report.Epochs, res.Report.BestEpoch, res.Report.StoppedBy)
	fmt.Fprintf(stdout, "threshold %.6g (%s)\n", th.Value, th.Method)
	if s := th.Scores; s != nil {
		fmt.Fprintf(stdout, "scores    %s: n=%d mean %.4g p50 %.4g p90 %.4g p99 %.4g max %.4g\n", s.Source, s.Count, s.Mean, s.P50, s.P90, s.P99, s.Max)
	}
	for _, w := range res.Report.Warnings {
		fmt.Fprintf(stdout, "warning   %s\n", w)
	}
	fmt.Fprintf(stdout, "time      %s\n", time.Since(t0).Round(time.Millisecond))
	return nil
}

// normalRows drops rows labelled anomalous (an "anomaly" column of 1).
func normalRows(t *source.Table) [][]float64 {
	lab := t.Labels["anomaly"]
	if lab == nil {
		return t.Values
	}
	out := make([][]float64, 0, len(t.Values))
	for i, r := range t.Values {
		if lab[i] == 0 {
			out = append(out, r)
		}
	}
	return out
}

// KioskFeatures is the behaviour feature list of the default kiosk model:
// per user, over the last window, the count of each kiosk event, the total,
// the failure ratio and the gaps between events.
func KioskFeatures(window time.Duration) *models.Features {
	names := []string{"page_view", "form_start", "form_submit", "form_error", "payment_ok", "payment_failed", "help_click", "session_end"}
	f := &models.Features{Window: models.Duration(window), Step: models.Duration(time.Second), GroupBy: "user_id", Events: names}
	for _, n := range names {
		f.List = append(f.List, models.Feature{Name: "count_" + n, Op: models.FeatureCount, Event: n})
	}
	f.List = append(f.List,
		models.Feature{Name: "total", Op: models.FeatureTotal},
		models.Feature{Name: "failure_ratio", Op: models.FeatureFailureRatio},
		models.Feature{Name: "gap_mean", Op: models.FeatureGapMean},
		models.Feature{Name: "gap_std", Op: models.FeatureGapStd},
		models.Feature{Name: "gap_min", Op: models.FeatureGapMin},
	)
	return f
}

func featureNames(f *models.Features) []string {
	var out []string
	for _, x := range f.List {
		out = append(out, x.Name)
	}
	return out
}

// featurizeEvents reads normal events (those not labelled "anomaly": 1) and
// returns the feature vectors a behaviour stream would compute from them, in
// time order.
func featurizeEvents(path string, feats *models.Features) ([][]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	type timed struct {
		t   time.Time
		row []float64
	}
	users := map[string]*stream.Behaviour{}
	var rows []timed
	err = source.ReadEventLines(f, func(ev source.Event, anomalous bool) error {
		if anomalous {
			return nil
		}
		b := users[ev.UserID]
		if b == nil {
			var err error
			if b, err = stream.NewBehaviour(feats); err != nil {
				return err
			}
			users[ev.UserID] = b
		}
		row := make([]float64, len(feats.List))
		if b.Add(&ev, row) {
			rows = append(rows, timed{ev.Time, row})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].t.Before(rows[j].t) })
	out := make([][]float64, len(rows))
	for i, r := range rows {
		out[i] = r.row
	}
	if len(out) == 0 {
		return nil, errors.New(path + ": no normal events")
	}
	return out, nil
}
