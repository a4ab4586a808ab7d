package modeltool

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/vigil-edge/vigil/models"
	"github.com/vigil-edge/vigil/models/train"
)

// CalibrateOptions configure Calibrate.
type CalibrateOptions struct {
	// Data is a CSV or JSONL file of normal samples.
	Data string
	// Columns and TimeColumn say how to read it (see ReadOptions);
	// Columns defaults to the model's channel names.
	Columns    []string
	TimeColumn string
	// Calibration is the method and its parameters (On is not used).
	Calibration train.Calibration
}

// Calibrate scores the normal data in o.Data through the model at path
// (DIR/NAME), exactly as vigil score and the agent do, sets the manifest's
// threshold from the scores and rewrites DIR/NAME.json. It returns the new
// manifest and any warning (POT falling back to the quantile).
func Calibrate(ctx context.Context, path string, o CalibrateOptions) (*models.Manifest, string, error) {
	m, model, err := models.ReadFiles(path)
	if err != nil {
		return nil, "", err
	}
	md, err := loadModel(path)
	if err != nil {
		return nil, "", err
	}
	defer md.Close()
	cols := o.Columns
	if len(cols) == 0 {
		cols = m.Input.Channels
	} else if len(cols) != len(m.Input.Channels) {
		return nil, "", fmt.Errorf("%d columns given, the model takes %d channels (%v)", len(cols), len(m.Input.Channels), m.Input.Channels)
	}
	d, err := ReadData(o.Data, ReadOptions{Columns: cols, TimeColumn: o.TimeColumn})
	if err != nil {
		return nil, "", fmt.Errorf("read %s: %w", o.Data, err)
	}
	windows, _, err := ScoreData(ctx, md, d)
	if err != nil {
		return nil, "", err
	}
	if len(windows) == 0 {
		return nil, "", fmt.Errorf("%s: %d good rows, fewer than one window of %d", o.Data, len(d.Rows), m.Input.Window)
	}
	scores := make([]float64, len(windows))
	for i, w := range windows {
		scores[i] = w.Score
	}
	c := o.Calibration
	c.On = "train+validation"
	th, warn, err := train.Calibrate(scores, c, "calibration")
	if err != nil {
		return nil, "", err
	}
	m.Threshold = th
	dir, name := splitPath(path)
	if err := models.Save(dir, name, model, m); err != nil {
		return nil, "", err
	}
	return m, warn, nil
}

func splitPath(path string) (dir, name string) {
	base := strings.TrimSuffix(strings.TrimSuffix(path, ".json"), ".tflite")
	i := strings.LastIndexAny(base, `/\`)
	if i < 0 {
		return ".", base
	}
	return base[:i], base[i+1:]
}

func runCalibrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := train.DefaultCalibration()
	fs := newFlags("model calibrate", stderr, "DIR/NAME --data normal.csv [flags]")
	data := fs.String("data", "", "a CSV or JSONL file of normal samples (required)")
	method := fs.String("method", def.Method, "pot (peaks over threshold) or quantile")
	quantile := fs.Float64("quantile", def.Quantile, "the quantile of the scores (quantile method; POT's fallback)")
	factor := fs.Float64("factor", def.Factor, "multiplies the calibrated threshold")
	risk := fs.Float64("risk", def.Risk, "POT: the probability that a normal window exceeds the threshold")
	columns := fs.String("columns", "", "the file's columns for the model's channels, in their order (default: the channel names)")
	timeCol := fs.String("time-column", "", "the time column or field (default: found by name; without one rows are one step apart)")
	pos, err := parse(fs, args, 1, "one model, DIR/NAME")
	if err != nil {
		return err
	}
	if *data == "" {
		return usageErr(fs, "give --data")
	}
	if *method != models.MethodPOT && *method != models.MethodQuantile {
		return usageErr(fs, "--method is %q, want pot or quantile", *method)
	}
	c := def
	c.Method, c.Quantile, c.Factor, c.Risk = *method, *quantile, *factor, *risk
	m, warn, err := Calibrate(ctx, pos[0], CalibrateOptions{Data: *data, Columns: splitList(*columns), TimeColumn: *timeCol, Calibration: c})
	if err != nil {
		return err
	}
	if warn != "" {
		fmt.Fprintln(stderr, "warning:", warn)
	}
	s := m.Threshold.Scores
	fmt.Fprintf(stdout, "%s: threshold %.6g (%s) from %d windows of normal data (p50 %.4g, p99 %.4g, max %.4g); wrote %s.json\n",
		m.Name, m.Threshold.Value, m.Threshold.Method, s.Count, s.P50, s.P99, s.Max, strings.TrimSuffix(pos[0], ".json"))
	return nil
}
