package modeltool

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/models"
	"github.com/vigil-edge/vigil/models/nn"
)

var chans = []string{"a", "b", "c"}

// writeTFLite writes a dense autoencoder for windows of w×3 taking
// input shape in (a time-major [w 3], a flattened [3w] or a channel-major
// [3 w]), float or full-integer int8.
func writeTFLite(t *testing.T, dir string, w int, in []int, int8 bool) string {
	t.Helper()
	n := len(chans) * w
	layers := []nn.Layer{&nn.Dense{Units: 6, Act: nn.Tanh}, &nn.Dense{Units: n}}
	if len(in) > 1 {
		layers = append(layers, &nn.Reshape{Shape: in})
	}
	net := &nn.Network{Input: in, Layers: layers}
	if err := net.Randomize(rand.New(rand.NewPCG(3, 4))); err != nil {
		t.Fatal(err)
	}
	var b []byte
	var err error
	if int8 {
		calib := make([]float32, 50*n)
		r := rand.New(rand.NewPCG(5, 6))
		for i := range calib {
			calib[i] = float32(r.NormFloat64())
		}
		q, qerr := nn.Quantize(net, nn.QuantOptions{Mode: nn.FullInteger, IO: nn.IOInt8, Calibration: calib})
		if qerr != nil {
			t.Fatal(qerr)
		}
		b, err = q.Marshal()
	} else {
		b, err = net.Marshal()
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ext.tflite")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeCSV writes rows of a, b, c around (10, 0, -5), with a time column
// when times is set.
func writeCSV(t *testing.T, path string, rows int, times bool) {
	t.Helper()
	var sb strings.Builder
	if times {
		sb.WriteString("timestamp,")
	}
	sb.WriteString("a,b,c,other\n")
	r := rand.New(rand.NewPCG(7, 8))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range rows {
		if times {
			sb.WriteString(t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339) + ",")
		}
		fmt.Fprintf(&sb, "%g,%g,%g,x\n", 10+r.NormFloat64(), r.NormFloat64()*2, -5+r.NormFloat64()*0.5)
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, f func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) error, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := f(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func model(ctx context.Context, args []string, o, e *bytes.Buffer) error {
	return Model(ctx, args, o, e)
}
func score(ctx context.Context, args []string, o, e *bytes.Buffer) error {
	return Score(ctx, args, o, e)
}

type jsonWindow struct {
	End       any     `json:"end"`
	Score     float64 `json:"score"`
	Threshold float64 `json:"threshold"`
	Anomalous bool    `json:"anomalous"`
}

func parseJSONLines(t *testing.T, s string) []jsonWindow {
	t.Helper()
	var out []jsonWindow
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var w jsonWindow
		if err := json.Unmarshal(sc.Bytes(), &w); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, w)
	}
	return out
}

// TestInitCalibrateScore takes models of each input layout, float and
// int8, through init (normalised from a file), calibrate and score, on a
// CSV without a time column: the windows end on row numbers, the
// threshold is calibrated, and the layouts score alike.
func TestInitCalibrateScore(t *testing.T) {
	const w = 8
	dir := t.TempDir()
	data := filepath.Join(dir, "normal.csv")
	writeCSV(t, data, 200, false)
	results := map[string][]jsonWindow{}
	for _, c := range []struct {
		name   string
		in     []int
		layout string
		int8   bool
	}{
		{"time-major", []int{w, 3}, "time-major", false},
		{"flat", []int{3 * w}, "time-major", false},
		{"channel-major", []int{3, w}, "channel-major", false},
		{"int8", []int{w, 3}, "time-major", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			sub := t.TempDir()
			file := writeTFLite(t, sub, w, c.in, c.int8)
			out, _, err := run(t, model, "init", file, "--window", fmt.Sprint(w), "--hop", "4", "--channels", "a,b,c",
				"--layout", c.layout, "--normalize-from", data, "--name", "m", "--out", sub)
			if err != nil {
				t.Fatalf("init: %v", err)
			}
			if !strings.Contains(out, "uncalibrated placeholder") {
				t.Errorf("init output %q does not say the threshold is a placeholder", out)
			}
			m, _, err := models.ReadFiles(filepath.Join(sub, "m"))
			if err != nil {
				t.Fatal(err)
			}
			if !m.Threshold.Uncalibrated || m.Normalization.Mean[0] < 9 || m.Normalization.Std[1] < 1.5 || len(m.Normalization.MaxRun) != 3 ||
				m.Shift == nil || len(m.Shift.Max) != 3 {
				t.Errorf("manifest threshold %+v normalization %+v", m.Threshold, m.Normalization)
			}
			if _, _, err := run(t, model, "calibrate", filepath.Join(sub, "m"), "--data", data, "--method", "quantile", "--quantile", "0.9"); err != nil {
				t.Fatalf("calibrate: %v", err)
			}
			if m, _, err = models.ReadFiles(filepath.Join(sub, "m")); err != nil {
				t.Fatal(err)
			}
			if m.Threshold.Uncalibrated || m.Threshold.Method != models.MethodQuantile || m.Threshold.Scores.Count != (200-w)/4+1 {
				t.Errorf("calibrated threshold %+v", m.Threshold)
			}
			out, summary, err := run(t, score, "--model", filepath.Join(sub, "m"), "--data", data, "--json")
			if err != nil {
				t.Fatalf("score: %v", err)
			}
			ws := parseJSONLines(t, out)
			if len(ws) != (200-w)/4+1 || ws[0].End != float64(w) || ws[1].End != float64(w+4) {
				t.Fatalf("%d windows, ends %v, %v; want %d ending at rows %d, %d", len(ws), ws[0].End, ws[1].End, (200-w)/4+1, w, w+4)
			}
			above := 0
			for _, x := range ws {
				if x.Threshold != m.Threshold.Value || x.Anomalous != (x.Score > x.Threshold) {
					t.Fatalf("window %+v with threshold %v", x, m.Threshold.Value)
				}
				if x.Anomalous {
					above++
				}
			}
			// The 0.9 quantile leaves about a tenth of the windows above.
			if above == 0 || above > len(ws)/5 {
				t.Errorf("%d of %d windows above the 0.9 quantile threshold", above, len(ws))
			}
			if !strings.Contains(summary, fmt.Sprintf("%d windows", len(ws))) {
				t.Errorf("summary %q", summary)
			}
			results[c.name] = ws
		})
	}
	ref := results["time-major"]
	// The flattened model is the time-major one's function.
	for i, x := range results["flat"] {
		if math.Abs(x.Score-ref[i].Score) > 1e-5*ref[i].Score {
			t.Errorf("flat window %d scores %v, time-major %v", i, x.Score, ref[i].Score)
		}
	}
}

// adapter is a models.Model as the pipeline sees it (as the agent's).
type adapter struct{ *models.Model }

func (a adapter) ID() string         { return a.Manifest().Name + "@" + a.Manifest().Version }
func (a adapter) Window() (int, int) { return a.Manifest().Input.Window, a.Manifest().Input.Hop }
func (a adapter) Channels() []string { return a.Manifest().Input.Channels }

// TestScoreMatchesThePipeline scores a CSV file with vigil score and
// feeds the same rows through the agent's pipeline with the same model:
// every window ends at the same time with the same score. With an int8
// model the scores are identical to the bit. With a float model they may
// differ in the last bits: TFLite 2.9's float FULLY_CONNECTED sums a
// window's products in an order that depends on where it falls in the
// batch (rows are computed in tiles of 4), and the pipeline's batches
// depend on timing.
func TestScoreMatchesThePipeline(t *testing.T) {
	for _, int8 := range []bool{false, true} {
		dir := t.TempDir()
		data := filepath.Join(dir, "rec.csv")
		writeCSV(t, data, 150, true)
		file := writeTFLite(t, dir, 10, []int{10, 3}, int8)
		if _, _, err := run(t, model, "init", file, "--window", "10", "--hop", "3", "--channels", "a,b,c", "--normalize-from", data, "--name", "m", "--out", dir); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "m")
		out, _, err := run(t, score, "--model", path, "--data", data, "--json")
		if err != nil {
			t.Fatal(err)
		}
		got := parseJSONLines(t, out)

		md, err := loadModel(path)
		if err != nil {
			t.Fatal(err)
		}
		defer md.Close()
		f, err := os.Open(data)
		if err != nil {
			t.Fatal(err)
		}
		tab, err := source.ReadCSV(f, source.CSVOptions{})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		buf := &testkit.Lanes{}
		p, err := pipeline.New(pipeline.Options{Device: "d", Buffer: buf, MaxBatch: 7, Streams: []pipeline.StreamSpec{
			{Name: "s", Source: "rec", Kind: pipeline.KindSensor, Model: adapter{md}, Detect: detect.DefaultOptions()}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		for i, row := range tab.Values {
			if err := p.Put(ctx, source.Input{Source: "rec", Time: tab.Times[i], Channels: tab.Channels, Values: row}); err != nil {
				t.Fatal(err)
			}
		}
		p.CloseInput()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := testkit.Decode[record.Score](t, buf, record.LaneScore)
		slices.SortFunc(want, func(a, b record.Score) int { return a.TS.Compare(b.TS) })
		if len(got) != len(want) || len(got) == 0 {
			t.Fatalf("int8 %v: vigil score gave %d windows, the pipeline %d", int8, len(got), len(want))
		}
		for i := range got {
			end, _ := time.Parse(time.RFC3339Nano, got[i].End.(string))
			tol := 0.0
			if !int8 {
				tol = 1e-6 * want[i].Score
			}
			if !end.Equal(want[i].TS) || math.Abs(got[i].Score-want[i].Score) > tol {
				t.Fatalf("int8 %v window %d: vigil score %v %v, pipeline %v %v", int8, i, end, got[i].Score, want[i].TS, want[i].Score)
			}
		}
	}
}

// TestBadInput gives each command bad input: usage errors are ErrUsage
// (exit 2), failures one clear error (exit 1).
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	file := writeTFLite(t, dir, 8, []int{8, 3}, false)
	data := filepath.Join(dir, "d.csv")
	writeCSV(t, data, 50, true)
	if _, _, err := run(t, model, "init", file, "--window", "8", "--channels", "a,b,c", "--name", "ok", "--out", dir); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "ok")
	cases := []struct {
		name  string
		f     func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) error
		args  []string
		usage bool
		msg   string
	}{
		{"model without subcommand", model, nil, true, ""},
		{"inspect without file", model, []string{"inspect"}, true, "want one .tflite file"},
		{"inspect missing file", model, []string{"inspect", filepath.Join(dir, "none.tflite")}, false, "no such file"},
		{"inspect not a model", model, []string{"inspect", data}, false, "invalid model"},
		{"init without window", model, []string{"init", file, "--channels", "a", "--out", dir}, true, "give --window"},
		{"init bad layout", model, []string{"init", file, "--window", "8", "--channels", "a,b,c", "--layout", "rows", "--out", dir}, true, "--layout"},
		{"init missing file", model, []string{"init", filepath.Join(dir, "none.tflite"), "--window", "8", "--channels", "a,b,c", "--out", dir}, false, "no such file"},
		{"init wrong shapes", model, []string{"init", file, "--window", "9", "--channels", "a,b,c", "--out", dir}, false, "input tensor is [8 3] (24 values, want 27)"},
		{"init other layout", model, []string{"init", file, "--window", "3", "--channels", "a,b,c,d,e,f,g,h", "--out", dir}, false, `set input.layout to "channel-major"`},
		{"calibrate without data", model, []string{"calibrate", good}, true, "give --data"},
		{"calibrate missing columns", model, []string{"calibrate", good, "--data", data, "--columns", "a,b,zz"}, false, `no column "zz"`},
		{"score without model", score, []string{"--data", data}, true, "give --model"},
		{"score missing data", score, []string{"--model", good, "--data", filepath.Join(dir, "none.csv")}, false, "no such file"},
		{"score missing model", score, []string{"--model", filepath.Join(dir, "none"), "--data", data}, false, "no such file"},
		{"score missing columns", score, []string{"--model", good, "--data", data, "--columns", "a,q,c"}, false, `no column "q"`},
		{"score column count", score, []string{"--model", good, "--data", data, "--columns", "a,b"}, true, "2 columns"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, err := run(t, c.f, c.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrUsage) != c.usage {
				t.Fatalf("err %v: usage %v, want %v", err, errors.Is(err, ErrUsage), c.usage)
			}
			if msg := err.Error() + stderr; !strings.Contains(msg, c.msg) {
				t.Errorf("error %q, stderr %q: want %q", err, stderr, c.msg)
			}
		})
	}
}

// TestReadPlainCSVDelimiter: the delimiter is the one the header line
// holds most of outside quotes, so a quoted column name full of ';' does
// not make ';' the delimiter.
func TestReadPlainCSVDelimiter(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		columns  []string
		want     [][]float64
	}{
		{"comma", "a,b\n1,2\n", []string{"b"}, [][]float64{{2}}},
		{"semicolon", "a;b;c\n1;2;3\n", []string{"c", "a"}, [][]float64{{3, 1}}},
		{"tab", "a\tb\n1\t2\n", []string{"a"}, [][]float64{{1}}},
		{"quoted semicolons", "\"x;y;z\",b\n1,2\n", []string{"x;y;z", "b"}, [][]float64{{1, 2}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ReadPlainCSV(strings.NewReader(tt.in), tt.columns)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.Rows, tt.want) {
				t.Errorf("rows %v, want %v", d.Rows, tt.want)
			}
		})
	}
}

// FuzzReadPlainCSV feeds arbitrary files to the reader of CSV files
// without a time column: it must not panic, and what it returns must be
// whole rows of finite values.
func FuzzReadPlainCSV(f *testing.F) {
	f.Add([]byte("a,b\n1,2\n3,4\n"), "a,b")
	f.Add([]byte("x;a;b\n1;2;3\n;;\n4;5;NaN\n"), "b,a")
	f.Add([]byte("\ufeffa\tb\n1\t2\n\"3\n"), "a")
	f.Add([]byte(""), "a")
	f.Fuzz(func(t *testing.T, b []byte, cols string) {
		columns := strings.Split(cols, ",")
		d, err := ReadPlainCSV(bytes.NewReader(b), columns)
		if err != nil {
			return
		}
		if len(d.Rows) != len(d.Lines) {
			t.Fatalf("%d rows, %d lines", len(d.Rows), len(d.Lines))
		}
		for _, r := range d.Rows {
			if len(r) != len(columns) {
				t.Fatalf("row %v, want %d values", r, len(columns))
			}
			for _, v := range r {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("row %v holds %v", r, v)
				}
			}
		}
	})
}

// TestScoreJSONL scores the same samples from a CSV file and from a JSONL
// file (decoded as the agent decodes MQTT payloads): the windows and
// scores are the same.
func TestScoreJSONL(t *testing.T) {
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "rec.csv")
	writeCSV(t, csvPath, 60, true)
	f, err := os.Open(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := source.ReadCSV(f, source.CSVOptions{Columns: chans})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for i, row := range tab.Values {
		fmt.Fprintf(&sb, `{"ts":%q,"a":%v,"b":%v,"c":%v,"other":"x"}`+"\n", tab.Times[i].Format(time.RFC3339), row[0], row[1], row[2])
	}
	jsonPath := filepath.Join(dir, "rec.jsonl")
	if err := os.WriteFile(jsonPath, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	file := writeTFLite(t, dir, 8, []int{8, 3}, false)
	if _, _, err := run(t, model, "init", file, "--window", "8", "--hop", "2", "--channels", "a,b,c", "--name", "m", "--out", dir); err != nil {
		t.Fatal(err)
	}
	fromCSV, _, err := run(t, score, "--model", filepath.Join(dir, "m"), "--data", csvPath, "--json")
	if err != nil {
		t.Fatal(err)
	}
	fromJSONL, _, err := run(t, score, "--model", filepath.Join(dir, "m"), "--data", jsonPath, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if fromCSV != fromJSONL || len(parseJSONLines(t, fromCSV)) != (60-8)/2+1 {
		t.Errorf("CSV gives\n%s\nJSONL gives\n%s", fromCSV, fromJSONL)
	}
	// A field the model needs that no line has is one clear error.
	if _, _, err := run(t, score, "--model", filepath.Join(dir, "m"), "--data", jsonPath, "--columns", "a,b,zz"); err == nil || !strings.Contains(err.Error(), `no line has field "zz"`) {
		t.Errorf("err = %v, want one naming the missing field", err)
	}
}

// TestInspect describes an int8 model and a model with an operator
// version the runtime lacks: inspect lists it as missing, init refuses it
// naming the operator and version.
func TestInspect(t *testing.T) {
	dir := t.TempDir()
	out, _, err := run(t, model, "inspect", writeTFLite(t, dir, 8, []int{8, 3}, true))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"input   input   [1 8 3]  int8", "FULLY_CONNECTED  4", "TANH             2"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	js, _, err := run(t, model, "inspect", "--json", filepath.Join(dir, "ext.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Inputs    []struct{ Type string }
		Operators []struct{ Supported bool }
	}
	if err := json.Unmarshal([]byte(js), &info); err != nil || info.Inputs[0].Type != "int8" || !info.Operators[0].Supported {
		t.Errorf("--json: %v, %+v", err, info)
	}

	net := &nn.Network{Input: []int{8, 3}, Layers: []nn.Layer{&nn.Dense{Units: 4}, &nn.Dense{Units: 24}, &nn.Reshape{Shape: []int{8, 3}}}}
	if err := net.Randomize(rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
	q, err := nn.Quantize(net, nn.QuantOptions{Mode: nn.DynamicRange, PerChannel: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := q.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	newer := filepath.Join(dir, "newer.tflite")
	if err := os.WriteFile(newer, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err = run(t, model, "inspect", newer)
	if err != nil || !strings.Contains(out, "FULLY_CONNECTED  12       2      NO") || !strings.Contains(out, "will not load") {
		t.Errorf("inspect: %v\n%s", err, out)
	}
	_, _, err = run(t, model, "init", newer, "--window", "8", "--channels", "a,b,c", "--out", dir)
	if err == nil || errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "FULLY_CONNECTED version 12") {
		t.Errorf("init: %v, want a failure naming FULLY_CONNECTED version 12", err)
	}
}
