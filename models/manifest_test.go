package models

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func readManifest(t testing.TB, name string) *Manifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "manifests", name))
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeManifest(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

func TestGoodManifests(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "manifests", "*.good.json"))
	if len(files) == 0 {
		t.Fatal("no testdata/manifests/*.good.json")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			m := readManifest(t, filepath.Base(f))
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			// Encode, decode: the same manifest.
			b, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			m2, err := DecodeManifest(b)
			if err != nil {
				t.Fatalf("decode re-encoded: %v\n%s", err, b)
			}
			if !reflect.DeepEqual(m, m2) {
				t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, m2)
			}
		})
	}
}

func TestGoodManifestValues(t *testing.T) {
	m := readManifest(t, "behaviour.good.json")
	if got := time.Duration(m.Features.Window); got != 10*time.Minute {
		t.Errorf("features.window = %v, want 10m", got)
	}
	if m.Features.List[0].Event != "login" || m.Output.Size != 1 {
		t.Errorf("decoded %+v", m)
	}
	s := readManifest(t, "sensor.good.json")
	if got := s.Spec(); got.Input[0] != 4 || got.Input[1] != 2 || got.Output[0] != 4 || got.Output[1] != 2 {
		t.Errorf("Spec() = %v, want input and output [4 2]", got)
	}
	if got := m.Spec(); got.Input[0] != 1 || got.Input[1] != 6 || len(got.Output) != 1 || got.Output[0] != 1 {
		t.Errorf("Spec() = %v, want input [1 6] output [1]", got)
	}
	if want := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC); !s.Training.Started.Equal(want) {
		t.Errorf("training.started = %v", s.Training.Started)
	}
}

// TestBadManifests decodes and validates every testdata/manifests/*.bad.json
// and requires every expected problem, by path and message, in the error.
func TestBadManifests(t *testing.T) {
	want := map[string][]string{
		"empty.bad.json": {
			"format: is 0, want 1", "name: missing", "version: missing",
			"kind: missing, want one of sensor, behaviour", "sha256: missing",
			"input.window: is 0, want ≥ 1", "input.hop: is 0", "input.channels: missing",
			"output.kind: missing", "threshold.method: missing",
		},
		"unknown-fields.bad.json": {
			"4 problems", "input.stride: unknown field",
			`output.Reduction: unknown field (did you mean "reduction"?)`,
			"threshold.pot.tail: unknown field", "extra: unknown field",
		},
		"duplicate.bad.json": {"name: given more than once"},
		"values.bad.json": {
			"format: is 2, want 1", `name: "../pump" may only hold`,
			`kind: is "sensors", want one of sensor, behaviour`,
			`sha256: "ABC" is not 64 lowercase hex digits`,
			"input.window: is 0", "input.hop: is -1",
			`input.channels[2]: "a" repeats input.channels[0]`, "input.channels[3]: empty name",
			"normalization.mean: has 3 values, want one per channel (4)",
			"normalization.std[1]: is 0, want > 0", "normalization.std[2]: is -2, want > 0",
			"normalization.center: has 1 values, want none or one per channel (4)",
			"normalization.max_run[1]: is 0, want ≥ 1",
			"shift.recent: is 0, want 1 to input.window − 1 (-1)",
			"shift.max: has 3 values, want one per channel (4)", "shift.max[1]: is -2, want ≥ 0",
			`output.reduction: is "first", want one of mse, mae, max_channel_mse`,
			"output.size: is 3; a reconstruction's size is the window's",
			"threshold.quantile: is 1.5, want a value in (0, 1)",
			"threshold.factor: missing, want > 0",
			"threshold.train_scale: is -1, want a finite value > 0",
			"features: only behaviour models declare features",
		},
		"pot.bad.json": {
			`output.reduction: is "mse", want one of first, max, mean`,
			"output.size: is 0, want ≥ 1",
			"threshold.pot.risk: is 0, want a value in (0, 1)",
			"threshold.pot.scale: is 0, want > 0",
			"threshold.pot.samples: is 3, fewer than the 5 peaks",
			`threshold.scores.source: is "test"`,
			"threshold.scores: min ≤ p50 ≤ p90 ≤ p99 ≤ max does not hold",
			"threshold.scores.quantiles: must not decrease, [1] = 0.5 < [0] = 1",
		},
		"behaviour.bad.json": {
			"features.step: is 2m0s, want > 0 and ≤ features.window",
			`features.events[1]: "login" is listed twice`,
			"features.list[0].event: \"logout\" is not in features.events",
			`features.list[1].name: is "y", want input.channels[1] = "x"`,
			`features.list[1].op: is "sum", want one of count, total`,
			"features.list[2].event: only count features name an event",
		},
		"type.bad.json":      {"cannot unmarshal string", "input.window"},
		"duration.bad.json":  {`features.window: time: invalid duration "ten minutes"`},
		"trailing.bad.json":  {"data after the manifest object"},
		"truncated.bad.json": {"(document): unexpected end of JSON"},
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "manifests", "*.bad.json"))
	if len(files) != len(want) {
		t.Errorf("%d bad manifests in testdata, %d in the table", len(files), len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := DecodeManifest(data)
			if err == nil {
				err = m.Validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range want[name] {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestValidationErrorIsTyped(t *testing.T) {
	m := readManifest(t, "sensor.good.json")
	m.Normalization.Std[1] = 0
	m.Input.Hop = 0
	var ve *ValidationError
	if err := m.Validate(); !errors.As(err, &ve) || len(ve.Problems) != 2 {
		t.Fatalf("Validate() = %v, want a *ValidationError with 2 problems", err)
	}
	if ve.Problems[0].Path != "input.hop" || ve.Problems[1].Path != "normalization.std[1]" {
		t.Errorf("problems %v", ve.Problems)
	}
}

// TestEncodeGolden pins the manifest's JSON form (go test -update rewrites
// it): field names and order are a contract with the agent and with people.
func TestEncodeGolden(t *testing.T) {
	m := readManifest(t, "sensor.good.json")
	got, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "golden", "sensor.json")
	want := golden.Want(t, path, got, *update)
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode() differs from %s (go test -update if intended):\n%s", path, got)
	}
}

func TestEncodeRejectsNaN(t *testing.T) {
	m := readManifest(t, "sensor.good.json")
	m.Threshold.Value = nanValue()
	if _, err := m.Encode(); err == nil {
		t.Error("Encode wrote a NaN threshold")
	}
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "threshold.value: is NaN") {
		t.Errorf("Validate() = %v", err)
	}
}

func nanValue() float64 {
	z := 0.0
	return z / z
}

func TestMaxRuns(t *testing.T) {
	rows := [][]float64{{1, 5, nanValue()}, {2, 5, nanValue()}, {2, 5, 0}, {2, 6, 0}, {3, 6, 0}}
	if got := MaxRuns(rows, 3); !reflect.DeepEqual(got, []int{3, 3, 3}) {
		t.Fatalf("MaxRuns = %v, want [3 3 3]", got)
	}
	if got := MaxRuns([][]float64{{1, nanValue()}, {1, nanValue()}}, 2); !reflect.DeepEqual(got, []int{2, 1}) {
		t.Fatalf("MaxRuns = %v, want [2 1]: NaN never equals NaN", got)
	}
}
