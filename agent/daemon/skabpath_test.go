package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/eval"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
)

// The agent's path decides like `vigil eval skab`: a SKAB file replayed
// into a stream that learns its baseline on the device (learn.samples 400)
// gives exactly the alerts the evaluation reports for that file.

// skabPathFile is the SKAB file replayed: the shortest of valve1 (1,075
// rows at 1 s, 20 minutes of recording).
const skabPathFile = "valve1/2.csv"

// skabRealSpeedEnv runs the real-speed variant (about 20 minutes): the
// Makefile's test target sets it for one background `go test`.
const skabRealSpeedEnv = "VIGIL_SKAB_REAL_SPEED"

// skabData is the SKAB folder: $VIGIL_SKAB_DATA, else ../shared/datasets/skab
// beside the repository. The test skips when it is not there.
func skabData(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("VIGIL_SKAB_DATA")
	if dir == "" {
		dir = "../../../shared/datasets/skab"
	}
	if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(skabPathFile))); err != nil {
		t.Skipf("SKAB data not available (set VIGIL_SKAB_DATA to the folder holding valve1/): %v", err)
	}
	// Absolute: the config resolves a relative path against its own folder.
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func TestSKABReplayDecidesLikeEval(t *testing.T) {
	if testing.Short() {
		t.Skip("learns two models on real data: not in -short")
	}
	testkit.SkipUnderRace(t, "learns two models on real data")
	testSKABPath(t, 0)
}

func TestSKABReplayAtRealSpeedDecidesLikeEval(t *testing.T) {
	if os.Getenv(skabRealSpeedEnv) != "1" {
		t.Skipf("replays 20 minutes of SKAB in real time: runs when %s=1 (make test starts it in the background)", skabRealSpeedEnv)
	}
	testSKABPath(t, 1)
}

// pathAlert is one alert, as the agent publishes it or as the evaluation
// reports it.
type pathAlert struct {
	Time     time.Time
	State    string
	Update   int
	Severity string
	Score    float64
}

func (a pathAlert) String() string {
	return fmt.Sprintf("%s %-9s update %d %-8s score %.6g", a.Time.UTC().Format(time.TimeOnly), a.State, a.Update, a.Severity, a.Score)
}

func testSKABPath(t *testing.T, speed float64) {
	data := skabData(t)
	file := filepath.Join(data, filepath.FromSlash(skabPathFile))
	opts := eval.DefaultOptions()
	opts.Data, opts.Files, opts.Parallel = data, skabPathFile, 1

	// The agent replays the file while eval runs on it.
	cfgPath, dataDir := skabPathConfig(t, file, opts, speed)
	start := time.Now()
	d, stop := startDaemon(t, cfgPath)

	rep, err := eval.SKAB(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	res := rep.Files[0]
	var want []pathAlert
	for _, e := range res.Events {
		want = append(want, pathAlert{Time: e.Time, State: e.State, Update: e.Update, Severity: e.Severity, Score: e.Score})
	}
	if len(want) == 0 {
		t.Fatalf("eval raised no alert on %s: nothing to compare", skabPathFile)
	}

	// The replay has put every row in and the learnt model is scoring
	// what was held while it trained; stopping drains the rest.
	rows := uint64(res.TrainRows + res.TestRows)
	timeout := 5 * time.Minute
	if speed > 0 {
		timeout += time.Duration(float64(rows)/speed) * time.Second
	}
	waitFor(t, timeout, func() bool {
		s := d.Stats()
		st := s.Streams["valve"]
		return s.Inputs >= rows && st.State == "scoring" && st.Held == 0
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	elapsed := time.Since(start)
	s := d.Stats()
	if len(s.Drops) > 0 {
		t.Errorf("inputs dropped: %+v", s.Drops)
	}
	// Every row after the baseline ends one window, as eval scores them
	// (the first ones reach back into the baseline).
	if got, want := s.Streams["valve"].Windows, uint64(res.TestRows/opts.Train.Hop); got != want {
		t.Errorf("the agent scored %d windows, eval %d", got, want)
	}

	var got []pathAlert
	for _, a := range readAll[record.Alert](t, reopen(t, dataDir), record.LaneAlert) {
		if a.Stream != "valve" {
			continue
		}
		if math.Abs(a.Threshold-res.Threshold) > 1e-9*res.Threshold {
			t.Errorf("alert at %s: threshold %v, eval's %v", a.TS.UTC(), a.Threshold, res.Threshold)
		}
		got = append(got, pathAlert{Time: a.TS, State: a.State, Update: a.Update, Severity: a.Severity, Score: a.Score})
	}
	slices.SortStableFunc(got, func(a, b pathAlert) int { return a.Time.Compare(b.Time) })

	t.Logf("%s at speed %v: %d alerts from the agent in %v, %d from eval (threshold %.6g)",
		skabPathFile, speed, len(got), elapsed.Round(time.Second), len(want), res.Threshold)
	for _, a := range want {
		t.Logf("eval: %s", a)
	}
	if len(got) != len(want) {
		for _, a := range got {
			t.Logf("agent: %s", a)
		}
		t.Fatalf("the agent raised %d alerts, eval %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		// Both score with the same TFLite model file; the only freedom is
		// in how windows are batched, which may move the last bits.
		same := g.Time.Equal(w.Time) && g.State == w.State && g.Update == w.Update && g.Severity == w.Severity &&
			math.Abs(g.Score-w.Score) <= 1e-6*math.Max(1, math.Abs(w.Score))
		if !same {
			t.Errorf("alert %d: agent %s, eval %s", i, g, w)
		}
	}
}

// skabPathConfig writes the agent's config: a replay of file at speed into
// a stream that learns on its first opts.TrainRows samples, with the
// window and hop eval uses, and every other setting left to its default
// but learn.budget. The budget bounds the training's wall time, which eval
// does not: a training it cuts short learns another model. Training takes
// a few seconds here and, say, 20 s on a Raspberry Pi, well within the
// default minute, but over a minute under the race detector on a loaded
// machine, so the test gives it 30 minutes.
// The stream names a manifest without a .tflite (models_dir/skab.json):
// what learning takes from it is the window, the hop and the channels.
func skabPathConfig(t *testing.T, file string, opts eval.Options, speed float64) (path, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	chans := csvChannels(t, file)
	b, err := os.ReadFile(filepath.Join(repoModels, "pump8.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man map[string]any
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	man["name"] = "skab"
	man["input"] = map[string]any{"window": opts.Train.Window, "hop": opts.Train.Hop, "channels": chans}
	// pump8's normalization stays: SKAB has the same 8 channels, and what
	// the stream learns computes its own.
	b, _ = json.Marshal(man)
	modelsDir := filepath.Join(dir, "models")
	if err := os.MkdirAll(modelsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(modelsDir, "skab.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	cols, _ := json.Marshal(chans)
	return writeConfig(t, dir, "skab-device-01", modelsDir, fmt.Sprintf(`
buffer: {kind: badger, memory_budget: 16MiB}
sources:
  - name: rig
    type: replay
    replay: {path: %q, speed: %v, columns: %s}
streams:
  - {name: valve, source: rig, model: skab, learn: {samples: %d, budget: 30m}}
`, file, speed, cols, opts.TrainRows))
}

// csvChannels are a SKAB file's sensor columns: its header but the time
// and the label columns.
func csvChannels(t *testing.T, file string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, header, err := source.OpenCSV(f, ';')
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var chans []string
	for _, c := range header {
		if c != "datetime" && c != eval.LabelColumn && c != eval.ChangepointColumn {
			chans = append(chans, c)
		}
	}
	return chans
}
