package modeltool

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/vigil-edge/vigil/agent/stream"
	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models"
)

// Window is one scored window of a data file.
type Window struct {
	// End is the time of the window's last row; zero when the file has no
	// time column.
	End time.Time
	// Row is the window's last row, counting the file's data rows from 1
	// (rows that were dropped do not count).
	Row   int
	Score float64
}

// rowStep is the time between rows of a file without a time column.
const rowStep = time.Second

// ScoreData scores every window of d with md as the agent's sensor
// streams do: windows cut by the agent's windower (the first when it is
// full, then every hop rows), scored in batches through the model
// (normalisation, layout, quantization and reduction as the manifest
// says), a non-finite score replaced by the largest float32. A row whose
// time is not after the previous row's is dropped, as the agent drops
// samples out of order; dropped counts them.
func ScoreData(ctx context.Context, md *models.Model, d *Data) (windows []Window, dropped int, err error) {
	m := md.Manifest()
	w, c := m.Input.Window, len(m.Input.Channels)
	if len(d.Channels) != c {
		return nil, 0, fmt.Errorf("the data has %d channels, the model takes %d", len(d.Channels), c)
	}
	win, err := stream.NewWindower(w, m.Input.Hop, c)
	if err != nil {
		return nil, 0, err
	}
	const batch = 256
	buf := make([]float64, 0, batch*w*c)
	scratch := make([]float64, w*c)
	var pending []Window
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		scores := make([]float64, len(pending))
		if err := md.Score(ctx, buf, scores, nil); err != nil {
			return err
		}
		for i := range pending {
			s := scores[i]
			if math.IsNaN(s) || math.IsInf(s, 0) {
				s = math.MaxFloat32
			}
			pending[i].Score = s
		}
		windows = append(windows, pending...)
		pending, buf = pending[:0], buf[:0]
		return nil
	}
	var last time.Time
	base := time.Unix(0, 0).UTC()
	for i, row := range d.Rows {
		t := base.Add(time.Duration(i) * rowStep)
		if d.Times != nil {
			t = d.Times[i]
			if i > 0 && !t.After(last) {
				dropped++
				continue
			}
		}
		last = t
		if _, end, ok := win.Push(t, row, scratch); ok {
			wd := Window{Row: i + 1}
			if d.Times != nil {
				wd.End = end
			}
			pending = append(pending, wd)
			buf = append(buf, scratch...)
			if len(pending) == batch {
				if err := flush(); err != nil {
					return nil, dropped, err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return nil, dropped, err
	}
	return windows, dropped, nil
}

// loadModel loads dir/NAME with one interpreter.
func loadModel(path string) (*models.Model, error) {
	return models.Load(path, inference.Options{Workers: 1})
}

// columnsFor returns the file columns for a model's channels: the
// --columns list, which must have one per channel, or the channel names.
func columnsFor(m *models.Manifest, flag string) ([]string, error) {
	cols := splitList(flag)
	if len(cols) == 0 {
		return m.Input.Channels, nil
	}
	if len(cols) != len(m.Input.Channels) {
		return nil, fmt.Errorf("--columns names %d columns, the model takes %d channels (%v)", len(cols), len(m.Input.Channels), m.Input.Channels)
	}
	return cols, nil
}

// Score runs `vigil score`.
func Score(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("score", stderr, "--model DIR/NAME --data FILE.csv|FILE.jsonl [--columns a,b,...] [--json]")
	model := fs.String("model", "", "the model: DIR/NAME for DIR/NAME.json and DIR/NAME.tflite (required)")
	data := fs.String("data", "", "the recorded samples: a CSV file, or JSONL (.jsonl, .ndjson) (required)")
	columns := fs.String("columns", "", "the file's columns for the model's channels, in their order (default: the channel names)")
	timeCol := fs.String("time-column", "", "the time column or field (default: datetime, timestamp, time, ts or date if present; without one rows are one step apart)")
	asJSON := fs.Bool("json", false, "one JSON object per window: end, score, threshold, anomalous")
	if _, err := parse(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	if *model == "" || *data == "" {
		return usageErr(fs, "give --model and --data")
	}
	md, err := loadModel(*model)
	if err != nil {
		return err
	}
	defer md.Close()
	m := md.Manifest()
	cols, err := columnsFor(m, *columns)
	if err != nil {
		return usageErr(fs, "%v", err)
	}
	d, err := ReadData(*data, ReadOptions{Columns: cols, TimeColumn: *timeCol})
	if err != nil {
		return fmt.Errorf("read %s: %w", *data, err)
	}
	if len(d.Rows) < m.Input.Window {
		return fmt.Errorf("%s: %d good rows, fewer than one window of %d", *data, len(d.Rows), m.Input.Window)
	}
	clamped := inference.ClampedTotal()
	windows, outOfOrder, err := ScoreData(ctx, md, d)
	if err != nil {
		return err
	}
	clamped = inference.ClampedTotal() - clamped
	thr := md.Threshold()
	anomalous, top := 0, math.Inf(-1)
	enc := json.NewEncoder(stdout)
	for _, w := range windows {
		a := w.Score > thr
		if a {
			anomalous++
		}
		top = max(top, w.Score)
		var end any = w.Row
		if !w.End.IsZero() {
			end = w.End.Format(time.RFC3339Nano)
		}
		if *asJSON {
			if err := enc.Encode(struct {
				End       any     `json:"end"`
				Score     float64 `json:"score"`
				Threshold float64 `json:"threshold"`
				Anomalous bool    `json:"anomalous"`
			}{end, w.Score, thr, a}); err != nil {
				return err
			}
			continue
		}
		mark := ""
		if a {
			mark = "  ANOMALOUS"
		}
		if _, err := fmt.Fprintf(stdout, "%v\t%.6g%s\n", end, w.Score, mark); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "%s: %d rows, %d windows of %d every %d, %d above the threshold %.6g, highest score %.6g",
		m.Name, len(d.Rows), len(windows), m.Input.Window, m.Input.Hop, anomalous, thr, top)
	if d.Dropped+outOfOrder > 0 {
		fmt.Fprintf(stderr, "; %d rows dropped", d.Dropped+outOfOrder)
		if d.FirstDrop != "" {
			fmt.Fprintf(stderr, " (first: %s)", d.FirstDrop)
		}
	}
	if clamped > 0 {
		fmt.Fprintf(stderr, "; %d input values clamped to the model's quantized range", clamped)
	}
	fmt.Fprintln(stderr)
	if m.Threshold.Uncalibrated {
		fmt.Fprintf(stderr, "warning: the threshold is an uncalibrated placeholder; run vigil model calibrate %s --data normal.csv\n", *model)
	}
	return nil
}
