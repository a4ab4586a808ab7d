//go:build cgo

package train

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/inference"
)

// TestQuantizedExport trains with Quantize int8: the file is a
// full-integer model (int8 input and output, FULLY_CONNECTED version 4),
// smaller than the float one; loaded through TFLite it scores the windows
// as the trainer computed (with the reference of the integer arithmetic)
// and close to the float model.
func TestQuantizedExport(t *testing.T) {
	o := quickOptions(Dense)
	o.Window, o.Epochs = 12, 15
	if testing.Short() {
		o.Epochs = 3
	}
	rows := pumpRows(300, 5)
	float := mustTrain(t, rows, o)
	o.Quantize = QuantizeInt8
	res := mustTrain(t, rows, o)
	if res.Manifest.Training.Quantization != "int8" {
		t.Errorf("training.quantization %q", res.Manifest.Training.Quantization)
	}
	info, err := inference.Inspect(res.TFLite)
	if err != nil {
		t.Fatal(err)
	}
	if info.Inputs[0].Type != "int8" || info.Outputs[0].Type != "int8" {
		t.Errorf("input %s output %s, want int8", info.Inputs[0], info.Outputs[0])
	}
	for _, op := range info.Operators {
		if op.Name == "FULLY_CONNECTED" && op.Version != 4 {
			t.Errorf("%s, want version 4 (int8)", op)
		}
	}
	if len(res.TFLite)*2 > len(float.TFLite) {
		t.Errorf("int8 model %d bytes, float %d: want under half", len(res.TFLite), len(float.TFLite))
	}
	_, got := loadedScores(t, res, rows, 300-60, 12, 1)
	worst, worstFloat, meanFloat := 0.0, 0.0, 0.0
	for i, want := range res.Scores {
		rel := math.Abs(got[i]-want) / want
		worst = max(worst, rel)
		if rel > 0.02 {
			t.Errorf("window %d: TFLite score %v, trainer's int8 reference %v", i, got[i], want)
		}
		d := math.Abs(got[i]-float.Scores[i]) / float.Scores[i]
		worstFloat = max(worstFloat, d)
		meanFloat += d / float64(len(got))
	}
	t.Logf("%d windows: worst relative difference %.2g from the int8 reference; from the float model %.2g on average, %.2g at worst",
		len(got), worst, meanFloat, worstFloat)
	// Quantization noise adds to every reconstruction error, most to
	// the lowest; on average the scores stay close.
	if meanFloat > 0.25 {
		t.Errorf("int8 scores differ from the float model's by %.0f%% on average", 100*meanFloat)
	}

	o.Arch = Conv
	if _, err := Train(context.Background(), rows, o); err == nil || !strings.Contains(err.Error(), "Options.Quantize") {
		t.Errorf("conv with int8: err %v, want one naming Options.Quantize", err)
	}
}
