package train

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models"
	"github.com/vigil-edge/vigil/models/shift"
)

// pumpRows simulates a pump's 8 sensor channels at 1 Hz: two periodic
// drivers, channels that follow them with different gains and lags, and
// noise.
func pumpRows(n int, seed uint64) [][]float64 {
	r := rand.New(rand.NewPCG(seed, 7))
	rows := make([][]float64, n)
	for i := range rows {
		t := float64(i)
		a, b := math.Sin(2*math.Pi*t/20), math.Cos(2*math.Pi*t/9)
		noise := func(s float64) float64 { return s * r.NormFloat64() }
		rows[i] = []float64{
			10 + 2*a + noise(0.1),
			5 + b + noise(0.1),
			100 + 10*a + 5*b + noise(0.5),
			0.3*a - 0.2*b + noise(0.02),
			60 + math.Sin(2*math.Pi*(t-3)/20) + noise(0.05),
			220 + noise(1),
			32 + 3*b + noise(0.2),
			1 + 0.5*a*b + noise(0.05),
		}
	}
	return rows
}

var pumpChannels = []string{"accel1", "accel2", "current", "pressure", "temperature", "voltage", "flow", "thermo"}

func quickOptions(arch Arch) Options {
	o := DefaultOptions()
	o.Name = "pump"
	o.Arch = arch
	o.Window = 12
	o.Epochs = 40
	o.Channels = pumpChannels
	o.Now = func() time.Time { return time.Time{} }
	return o
}

// scoreRows scores the windows of rows with the exported network through
// nn's reference pass and the manifest's normalisation: a path independent
// of the trainer's own forward pass.
func scoreRows(t *testing.T, res *Result, rows [][]float64) []float64 {
	t.Helper()
	m := res.Manifest
	w, c := m.Input.Window, len(m.Input.Channels)
	var scores []float64
	for s := 0; s+w <= len(rows); s++ {
		in := make([]float32, w*c)
		for i := range w {
			for j := range c {
				in[i*c+j] = float32((rows[s+i][j] - m.Normalization.Mean[j]) * (1 / m.Normalization.Std[j]))
			}
		}
		out := make([]float64, w*c)
		if err := res.Network.Forward(in, out); err != nil {
			t.Fatal(err)
		}
		mse := 0.0
		for i := range out {
			d := out[i] - float64(in[i])
			mse += d * d
		}
		scores = append(scores, mse/float64(w*c))
	}
	return scores
}

// TestTrainDetects trains each architecture on normal pump data and checks
// that it learned (the loss fell), that fresh normal data mostly stays
// under the threshold, and that a stuck sensor and a spike go over it.
func TestTrainDetects(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two models to convergence; run without -short")
	}
	for _, arch := range []Arch{Dense, Conv} {
		t.Run(string(arch), func(t *testing.T) {
			o := quickOptions(arch)
			if arch == Conv {
				o.Window = 15 // odd: exercises the decoder's crop
			}
			res := mustTrain(t, pumpRows(600, 1), o)
			rep, m := res.Report, res.Manifest
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			if rep.Loss > m.Training.Loss.Initial/3 {
				t.Errorf("loss %v at best epoch, initial %v: did not learn", rep.Loss, m.Training.Loss.Initial)
			}
			if !(rep.Threshold.Value > 0) {
				t.Fatalf("threshold %+v", rep.Threshold)
			}
			fresh := pumpRows(400, 2)
			normal := scoreRows(t, res, fresh)
			over := 0
			for _, s := range normal {
				if s > rep.Threshold.Value {
					over++
				}
			}
			if over > len(normal)/20 {
				t.Errorf("%d of %d fresh normal windows over the threshold %v", over, len(normal), rep.Threshold.Value)
			}
			stuck := pumpRows(400, 3)
			for i := 200; i < 260; i++ {
				stuck[i][2] = 100 // current sensor stuck at its mean
			}
			spike := pumpRows(400, 4)
			spike[300][6] += 8 // flow spike of about 4 std
			for name, rows := range map[string][][]float64{"stuck": stuck, "spike": spike} {
				best := 0.0
				for _, s := range scoreRows(t, res, rows) {
					best = max(best, s)
				}
				if best <= rep.Threshold.Value {
					t.Errorf("%s: highest score %v is not over the threshold %v", name, best, rep.Threshold.Value)
				}
			}
			t.Logf("%s: %s; %d epochs (best %d, %s), loss %.4f val %.4f, threshold %.4f (%s), %d params, %d bytes",
				arch, res.Network, rep.Epochs, rep.BestEpoch, rep.StoppedBy, rep.Loss, rep.ValLoss,
				rep.Threshold.Value, rep.Threshold.Method, rep.Params, rep.ModelBytes)
		})
	}
}

// mustTrain trains on rows with o.
func mustTrain(t testing.TB, rows [][]float64, o Options) *Result {
	t.Helper()
	res, err := Train(context.Background(), rows, o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestTrainScoresAreTrainers(t *testing.T) {
	// Result.Scores, the trainer's own, equal the reference pass's scores
	// of the same windows (train then validation, each cut separately).
	o := quickOptions(Dense)
	o.Epochs = 3
	rows := pumpRows(200, 1)
	res := mustTrain(t, rows, o)
	cut := 200 - 40
	ref := append(scoreRows(t, res, rows[:cut]), scoreRows(t, res, rows[cut:])...)
	if len(ref) != len(res.Scores) || res.Report.TrainWindows != cut-11 || res.Report.ValWindows != 40-11 {
		t.Fatalf("%d scores, %d reference; windows %d+%d", len(res.Scores), len(ref), res.Report.TrainWindows, res.Report.ValWindows)
	}
	for i := range ref {
		if math.Abs(res.Scores[i]-ref[i]) > 1e-9*ref[i] {
			t.Fatalf("window %d: trainer %v, reference %v", i, res.Scores[i], ref[i])
		}
	}
}

func TestTrainDeterministic(t *testing.T) {
	for _, arch := range []Arch{Dense, Conv} {
		o := quickOptions(arch)
		o.Epochs = 5
		rows := pumpRows(300, 9)
		a := mustTrain(t, rows, o)
		b := mustTrain(t, rows, o)
		ja, _ := a.Manifest.Encode()
		jb, _ := b.Manifest.Encode()
		if !bytes.Equal(a.TFLite, b.TFLite) || !bytes.Equal(ja, jb) {
			t.Errorf("%s: two runs with seed %d differ", arch, o.Seed)
		}
		if bytes.Contains(ja, []byte(`"started"`)) || bytes.Contains(ja, []byte(`"seconds"`)) {
			t.Errorf("%s: a zero clock must leave the time out of the manifest", arch)
		}
		// The number of goroutines computing gradients changes nothing.
		for _, par := range []int{1, 3} {
			o.Parallelism = par
			p := mustTrain(t, rows, o)
			if !bytes.Equal(a.TFLite, p.TFLite) {
				t.Errorf("%s: Parallelism %d changed the model", arch, par)
			}
		}
		o.Seed++
		c := mustTrain(t, rows, o)
		if bytes.Equal(a.TFLite, c.TFLite) {
			t.Errorf("%s: seeds %d and %d gave the same model", arch, o.Seed-1, o.Seed)
		}
	}
}

func TestTrainBadInput(t *testing.T) {
	good := pumpRows(100, 1)
	withNaN := pumpRows(100, 1)
	withNaN[42][3] = math.NaN()
	ragged := pumpRows(100, 1)
	ragged[7] = ragged[7][:5]
	tests := []struct {
		name string
		rows [][]float64
		edit func(*Options)
		want []string
	}{
		{"NaN", withNaN, nil, []string{"row 42 channel 3 is NaN"}},
		{"ragged", ragged, nil, []string{"row 7 has 5 values, want 8"}},
		{"too few rows", good[:11], nil, []string{"11 rows is fewer than one window of 12"}},
		{"no rows", nil, func(o *Options) { o.Channels = nil }, []string{"no samples"}},
		{"channels disagree", good, func(o *Options) { o.Channels = o.Channels[:3] }, []string{"row 0 has 8 values, want 3"}},
		{"options", good, func(o *Options) {
			o.Window, o.Epochs, o.BatchSize, o.LearningRate, o.Validation = 0, 0, -1, math.NaN(), 1
			o.Arch, o.Reduction, o.Calibration.Quantile = "lstm", "median", 2
		}, []string{"Options.Window is 0", "Options.Epochs is 0", "Options.BatchSize is -1", "Options.LearningRate is NaN",
			"Options.Validation is 1", `Options.Arch is "lstm"`, `Options.Reduction is "median"`, "Options.Calibration.Quantile is 2"}},
		{"conv options", good, func(o *Options) { o.Arch, o.Filters, o.Kernel = Conv, []int{4, 0}, 0 },
			[]string{"Options.Filters[1] is 0", "Options.Kernel is 0"}},
		{"dense hidden", good, func(o *Options) { o.Hidden = []int{8, -2} }, []string{"Options.Hidden[1] is -2"}},
		{"empty rows", [][]float64{{}, {}}, func(o *Options) { o.Channels = nil }, []string{"the samples have no values"}},
		{"features", good, func(o *Options) {
			o.Features = &models.Features{Window: models.Duration(time.Minute), Step: models.Duration(time.Minute),
				List: []models.Feature{{Name: "x", Op: models.FeatureTotal}}}
		}, []string{"Options.Features", "features.list: has 1 features, want one per input channel (8)", `features.list[0].name: is "x", want input.channels[0] = "accel1"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := quickOptions(Dense)
			if tt.edit != nil {
				tt.edit(&o)
			}
			_, err := Train(context.Background(), tt.rows, o)
			if err == nil {
				t.Fatal("Train succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestTrainConstantChannelAndNoValidation(t *testing.T) {
	rows := pumpRows(40, 1)
	for _, r := range rows {
		r[5] = 230 // voltage constant
	}
	o := quickOptions(Dense)
	o.Epochs = 5
	res := mustTrain(t, rows, o) // 8 validation rows < window 12
	w := strings.Join(res.Report.Warnings, "\n")
	for _, want := range []string{`channel "voltage" is constant (230)`, "too few rows (40) to hold out 20%", "POT calibration fell back"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings do not say %q:\n%s", want, w)
		}
	}
	m := res.Manifest
	if m.Normalization.Std[5] != 1 || m.Normalization.Mean[5] != 230 || m.Training.Validation != 0 ||
		res.Report.ValWindows != 0 || m.Threshold.Scores.Source != "train" {
		t.Errorf("manifest %+v %+v", m.Normalization, m.Training)
	}
	// the longest runs of one value over all the rows given, for the
	// stuck-sensor check: 40 for the constant voltage
	if want := models.MaxRuns(rows, len(rows[0])); !slices.Equal(m.Normalization.MaxRun, want) || want[5] != 40 {
		t.Errorf("max_run %v, want %v with 40 for voltage", m.Normalization.MaxRun, want)
	}
	// the largest level shifts over all the rows given, with floors from
	// the normalisation, for the level-shift check: 0 for the constant
	// voltage, and for the channels smoother than white noise (the
	// sinusoids), left to the model
	ls := m.Shift
	if ls == nil || ls.Recent != shift.Recent(o.Window) || len(ls.Max) != len(rows[0]) || ls.Floor[0] != shift.FloorShare*m.Normalization.Std[0] {
		t.Fatalf("shift %+v", ls)
	}
	want := shift.Max(rows, o.Window, ls.Recent, ls.Floor)
	for j, vn := range smoothness(rows, len(rows[0])) {
		if vn < 1 {
			want[j] = 0
		}
	}
	if !slices.Equal(ls.Max, want) || ls.Max[5] != 0 {
		t.Errorf("shift.max %v, want %v", ls.Max, want)
	}
}

func TestTrainBudget(t *testing.T) {
	// A fake clock that advances a second whenever it is read: a budget of
	// 30 s runs out after about 30 mini-batches, without any sleeping.
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	o := quickOptions(Dense)
	o.Epochs = 1000
	o.Patience = 0
	o.Now = func() time.Time { now = now.Add(time.Second); return now }
	o.Budget = 30 * time.Second
	res := mustTrain(t, pumpRows(400, 1), o)
	r := res.Report
	if r.StoppedBy != "budget" || r.Epochs >= 30 || r.Epochs < 1 || r.BestEpoch < 1 {
		t.Errorf("stopped by %s after %d epochs (best %d)", r.StoppedBy, r.Epochs, r.BestEpoch)
	}
	if res.Manifest.Training.StoppedBy != "budget" || res.Manifest.Training.Started.IsZero() || res.Manifest.Training.Seconds < 30 {
		t.Errorf("training %+v", res.Manifest.Training)
	}

	// A budget spent before the first epoch ends still gives a model.
	o.Budget = 3 * time.Second
	res = mustTrain(t, pumpRows(400, 1), o)
	if res.Report.Epochs != 0 || res.Report.StoppedBy != "budget" || !(res.Report.Threshold.Value > 0) {
		t.Errorf("report %+v", res.Report)
	}
	if err := res.Manifest.Validate(); err != nil {
		t.Error(err)
	}
}

func TestTrainProgressAndEarlyStopping(t *testing.T) {
	o := quickOptions(Dense)
	o.Epochs = 500
	o.Patience = 3
	o.LearningRate = 0.01
	var seen []Progress
	o.Progress = func(p Progress) { seen = append(seen, p) }
	res := mustTrain(t, pumpRows(300, 1), o)
	r := res.Report
	if r.StoppedBy != "early_stopping" || r.Epochs != r.BestEpoch+3 || len(seen) != r.Epochs {
		t.Fatalf("stopped by %s at epoch %d (best %d), %d progress calls", r.StoppedBy, r.Epochs, r.BestEpoch, len(seen))
	}
	for i, p := range seen {
		if p.Epoch != i+1 || p.Epochs != 500 || !(p.Loss > 0) || !(p.ValLoss > 0) {
			t.Fatalf("progress %d: %+v", i, p)
		}
		if p.Best != (i+1 == r.BestEpoch || p.Best && i+1 < r.BestEpoch) {
			t.Fatalf("progress %d: Best %v with best epoch %d", i, p.Best, r.BestEpoch)
		}
	}
	if seen[r.BestEpoch-1].ValLoss != r.ValLoss {
		t.Errorf("report val loss %v, progress at the best epoch %v", r.ValLoss, seen[r.BestEpoch-1].ValLoss)
	}
	l := res.Manifest.Training.Loss
	every := (r.Epochs + 49) / 50
	points := (r.Epochs + every - 1) / every
	if l.Every != every || len(l.Train) != points || len(l.Val) != points || l.Initial != seen[0].Loss ||
		l.Final != seen[len(seen)-1].Loss || l.Val[1] != seen[every].ValLoss {
		t.Errorf("loss summary %+v", l)
	}
}

func TestTrainCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	o := quickOptions(Dense)
	o.Progress = func(p Progress) {
		if p.Epoch == 2 {
			cancel()
		}
	}
	_, err := Train(ctx, pumpRows(300, 1), o)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Train() = %v, want context.Canceled", err)
	}
}

// A noisy channel gets its largest level shift; one that moves slowly
// against its noise gets 0: its window's end differs from its start by
// its trend.
func TestTrainLevelShiftsOfNoisyChannelsOnly(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	rows := make([][]float64, 300)
	prev := r.NormFloat64()
	for i := range rows {
		// differenced noise: a von Neumann ratio near 1.5, clear of 1
		e := r.NormFloat64()
		rows[i] = []float64{e - prev, math.Sin(float64(i)/30) + 0.01*r.NormFloat64()}
		prev = e
	}
	o := quickOptions(Dense)
	o.Channels, o.Epochs = []string{"noisy", "smooth"}, 2
	m := mustTrain(t, rows, o).Manifest
	if m.Shift == nil || !(m.Shift.Max[0] > 1) || m.Shift.Max[1] != 0 {
		t.Fatalf("shift %+v, want a max for the noisy channel and 0 for the smooth one", m.Shift)
	}
}

func TestTrainBehaviourManifest(t *testing.T) {
	rows := pumpRows(100, 1)
	o := quickOptions(Dense)
	o.Window, o.Epochs = 1, 3
	o.Features = &models.Features{Window: models.Duration(time.Minute), Step: models.Duration(time.Minute), Events: []string{"login"}}
	for i, c := range pumpChannels {
		f := models.Feature{Name: c, Op: models.FeatureTotal}
		if i == 0 {
			f = models.Feature{Name: c, Op: models.FeatureCount, Event: "login"}
		}
		o.Features.List = append(o.Features.List, f)
	}
	res := mustTrain(t, rows, o)
	if res.Manifest.Kind != models.KindBehaviour || res.Manifest.Features == nil {
		t.Errorf("manifest kind %s", res.Manifest.Kind)
	}
	if r := res.Manifest.Normalization.MaxRun; r != nil || res.Manifest.Shift != nil {
		t.Errorf("behaviour manifest records runs %v and shifts %+v: its features are not samples", r, res.Manifest.Shift)
	}
}

func TestCalibrationScores(t *testing.T) {
	train, val := []float64{1, 2, 3}, []float64{3, 5}
	c := DefaultCalibration()
	got, src, scale := calibrationScores(train, val, c)
	if src != "train+validation" || scale != 2 || !slices.Equal(got, []float64{2, 4, 6, 3, 5}) {
		t.Errorf("rescaled: %v %s %v", got, src, scale)
	}
	c.Rescale = false
	if got, _, scale := calibrationScores(train, val, c); scale != 0 || !slices.Equal(got, []float64{1, 2, 3, 3, 5}) {
		t.Errorf("not rescaled: %v %v", got, scale)
	}
	c.Rescale, c.On = true, "train"
	if got, src, _ := calibrationScores(train, val, c); src != "train" || !slices.Equal(got, []float64{2, 4, 6}) {
		t.Errorf("train: %v %s", got, src)
	}
	c.On = "validation"
	if got, src, scale := calibrationScores(train, val, c); src != "validation" || scale != 0 || !slices.Equal(got, val) {
		t.Errorf("validation: %v %s", got, src)
	}
	if _, _, scale := calibrationScores(train, []float64{0.5}, DefaultCalibration()); scale != 0 {
		t.Errorf("a validation mean below the training mean must not scale down: %v", scale)
	}
	if got, src, _ := calibrationScores(train, nil, DefaultCalibration()); src != "train" || !slices.Equal(got, train) {
		t.Errorf("no validation: %v %s", got, src)
	}
}

func TestLossHistoryThinned(t *testing.T) {
	o := quickOptions(Dense)
	o.Epochs, o.Patience = 120, 0
	res := mustTrain(t, pumpRows(60, 1), o)
	l := res.Manifest.Training.Loss
	if l.Every != 3 || len(l.Train) != 40 || l.Final != l.Final || res.Report.Epochs != 120 {
		t.Errorf("loss summary every %d, %d points, %d epochs", l.Every, len(l.Train), res.Report.Epochs)
	}
}
