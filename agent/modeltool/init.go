package modeltool

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models"
	"github.com/vigil-edge/vigil/models/shift"
)

// InitOptions describe a model made elsewhere, for Init.
type InitOptions struct {
	// Model is the .tflite file.
	Model         string
	Window, Hop   int
	Channels      []string
	Layout        string // models.LayoutTimeMajor (default) or LayoutChannelMajor
	Output        string // models.OutputReconstruction (default) or OutputScore
	Reduction     string // default mse for reconstructions, first for scores
	Name          string // default: the file's base name
	Version       string // default "1"
	Description   string
	NormalizeFrom string // a CSV or JSONL file of normal data; empty: identity
	Threshold     float64
	Out           string
}

// Init checks a .tflite model against a window description and writes
// Out/NAME.tflite and Out/NAME.json: the manifest has the file's sha256,
// identity normalization (or each channel's mean and standard deviation in
// NormalizeFrom, with its longest run of one value and its largest level
// shift there) and a manual placeholder threshold marked uncalibrated.
// A window the tensors cannot hold is refused with both shapes.
func Init(o InitOptions) (*models.Manifest, error) {
	b, err := os.ReadFile(o.Model)
	if err != nil {
		return nil, err
	}
	s, err := inference.Load(b, inference.Options{Workers: 1})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Model, err)
	}
	defer s.Close()
	if o.Name == "" {
		o.Name = strings.TrimSuffix(filepath.Base(o.Model), filepath.Ext(o.Model))
	}
	if o.Version == "" {
		o.Version = "1"
	}
	if o.Output == "" {
		o.Output = models.OutputReconstruction
	}
	if o.Reduction == "" {
		o.Reduction = models.ReduceMSE
		if o.Output == models.OutputScore {
			o.Reduction = models.ReduceFirst
		}
	}
	if o.Layout == models.LayoutTimeMajor {
		o.Layout = "" // the default
	}
	if o.Threshold == 0 {
		o.Threshold = 1
	}
	c := len(o.Channels)
	m := &models.Manifest{
		Format: models.Format, Name: o.Name, Version: o.Version, Kind: models.KindSensor,
		Description: o.Description,
		Input:       models.Input{Window: o.Window, Hop: o.Hop, Channels: o.Channels, Layout: o.Layout},
		Output:      models.Output{Kind: o.Output, Reduction: o.Reduction},
		Threshold:   models.Threshold{Value: o.Threshold, Method: models.MethodManual, Uncalibrated: true},
		Normalization: models.Normalization{
			Mean: make([]float64, c), Std: make([]float64, c),
		},
	}
	if o.Output == models.OutputScore {
		m.Output.Size = s.Spec().OutputSize()
	}
	for i := range m.Normalization.Std {
		m.Normalization.Std[i] = 1
	}
	m.SHA256 = models.SHA256(b)
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if err := models.CheckSpec(m, s.Spec()); err != nil {
		return nil, fmt.Errorf("a window of %d samples × %d channels does not fit %s: %w", o.Window, c, filepath.Base(o.Model), err)
	}
	if o.NormalizeFrom != "" {
		d, err := ReadData(o.NormalizeFrom, ReadOptions{Columns: o.Channels})
		if err != nil {
			return nil, fmt.Errorf("--normalize-from %s: %w", o.NormalizeFrom, err)
		}
		if len(d.Rows) < 2 {
			return nil, fmt.Errorf("--normalize-from %s: %d good rows, want at least 2", o.NormalizeFrom, len(d.Rows))
		}
		for ch := range c {
			sum, sq := 0.0, 0.0
			for _, r := range d.Rows {
				sum += r[ch]
			}
			mean := sum / float64(len(d.Rows))
			for _, r := range d.Rows {
				sq += (r[ch] - mean) * (r[ch] - mean)
			}
			sd := math.Sqrt(sq / float64(len(d.Rows)-1))
			if !(sd > 0) {
				sd = 1 // a constant channel: only its level is removed
			}
			m.Normalization.Mean[ch], m.Normalization.Std[ch] = mean, sd
		}
		// for the stuck-sensor check (detect.StuckLimits)
		m.Normalization.MaxRun = models.MaxRuns(d.Rows, c)
		// for the level-shift check (models/shift)
		if r, floor, mx := shift.Fit(d.Rows, o.Window, m.Normalization.Std); r > 0 {
			m.Shift = &models.LevelShift{Recent: r, Floor: floor, Max: mx}
		}
	}
	if err := models.Save(o.Out, o.Name, b, m); err != nil {
		return nil, err
	}
	return m, nil
}

func runInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model init", stderr, "FILE.tflite --window N --hop H --channels a,b,... --out DIR [flags]")
	window := fs.Int("window", 0, "samples per window (required)")
	hop := fs.Int("hop", 1, "samples between the starts of two windows")
	channels := fs.String("channels", "", "the channel names, comma-separated, in the order the model takes them (required)")
	layout := fs.String("layout", models.LayoutTimeMajor, "how a window lies in the input tensor: time-major ([window, channels] or flattened) or channel-major ([channels, window] or flattened)")
	output := fs.String("output", models.OutputReconstruction, "what the model outputs: reconstruction (of its input) or score")
	reduction := fs.String("reduction", "", "window score: mse, mae or max_channel_mse for a reconstruction (default mse); first, max or mean for scores (default first)")
	name := fs.String("name", "", "the model's name, and its files' (default: the file's base name)")
	version := fs.String("version", "1", "the model's version")
	desc := fs.String("description", "", "a description for people")
	normFrom := fs.String("normalize-from", "", "a CSV or JSONL file of normal data: normalise each channel by its mean and standard deviation there, and record its longest run of one value and its largest level shift, for the stuck-sensor and level-shift checks (default: none)")
	thr := fs.Float64("threshold", 1, "the placeholder threshold, marked uncalibrated")
	out := fs.String("out", "", "the directory to write NAME.tflite and NAME.json to (required)")
	pos, err := parse(fs, args, 1, "one .tflite file")
	if err != nil {
		return err
	}
	if *window < 1 || *channels == "" || *out == "" {
		return usageErr(fs, "give --window (≥ 1), --channels and --out")
	}
	if *hop < 1 {
		return usageErr(fs, "--hop is %d, want ≥ 1", *hop)
	}
	if *layout != models.LayoutTimeMajor && *layout != models.LayoutChannelMajor {
		return usageErr(fs, "--layout is %q, want time-major or channel-major", *layout)
	}
	if *output != models.OutputReconstruction && *output != models.OutputScore {
		return usageErr(fs, "--output is %q, want reconstruction or score", *output)
	}
	m, err := Init(InitOptions{
		Model: pos[0], Window: *window, Hop: *hop, Channels: splitList(*channels), Layout: *layout,
		Output: *output, Reduction: *reduction, Name: *name, Version: *version, Description: *desc,
		NormalizeFrom: *normFrom, Threshold: *thr, Out: *out,
	})
	if err != nil {
		return err
	}
	base := filepath.Join(*out, m.Name)
	fmt.Fprintf(stdout, "wrote %s.tflite and %s.json: windows of %d samples × %d channels every %d, %s, %s output reduced by %s\n",
		base, base, m.Input.Window, len(m.Input.Channels), m.Input.Hop, layoutName(m.Input), m.Output.Kind, m.Output.Reduction)
	fmt.Fprintf(stdout, "the threshold %g is an uncalibrated placeholder: run\n  vigil model calibrate %s --data normal.csv\n", m.Threshold.Value, base)
	return nil
}

func layoutName(in models.Input) string {
	if in.ChannelMajor() {
		return models.LayoutChannelMajor
	}
	return models.LayoutTimeMajor
}
