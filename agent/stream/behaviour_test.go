package stream

import (
	"math"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/models"
)

func TestBehaviourFeatures(t *testing.T) {
	spec := &models.Features{
		Window: models.Duration(time.Minute),
		Events: []string{"page_view", "form_error"},
		List: []models.Feature{
			{Name: "views", Op: models.FeatureCount, Event: "page_view"},
			{Name: "errors", Op: models.FeatureCount, Event: "form_error"},
			{Name: "total", Op: models.FeatureTotal},
			{Name: "distinct", Op: models.FeatureDistinct},
			{Name: "fail_ratio", Op: models.FeatureFailureRatio},
			{Name: "gap_mean", Op: models.FeatureGapMean},
			{Name: "gap_std", Op: models.FeatureGapStd},
			{Name: "gap_min", Op: models.FeatureGapMin},
			{Name: "gap_max", Op: models.FeatureGapMax},
		},
	}
	b, err := NewBehaviour(spec)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	ev := func(s int, name string) *source.Event {
		return &source.Event{Name: name, UserID: "u", Time: t0.Add(time.Duration(s) * time.Second)}
	}
	dst := make([]float64, len(spec.List))
	// Events at 0 (view), 10 (error), 12 (error), 16 (error), then 100 (view):
	// by then the first four are more than a minute old.
	for _, e := range []*source.Event{ev(0, "page_view"), ev(10, "form_error"), ev(12, "form_error")} {
		if !b.Add(e, dst) {
			t.Fatal("Add with Step 0 did not emit")
		}
	}
	b.Add(ev(16, "form_error"), dst)
	want := []float64{1, 3, 4, 2, 0.75, 16.0 / 3, 0, 2, 10}
	gaps := []float64{10, 2, 4}
	mean := (10.0 + 2 + 4) / 3
	var sq float64
	for _, g := range gaps {
		sq += (g - mean) * (g - mean)
	}
	want[6] = math.Sqrt(sq / 3)
	for i, w := range want {
		if math.Abs(dst[i]-w) > 1e-5 {
			t.Errorf("%s = %v, want %v", spec.List[i].Name, dst[i], w)
		}
	}
	b.Add(ev(100, "page_view"), dst)
	if dst[2] != 1 || dst[1] != 0 || dst[5] != 60 {
		t.Errorf("after the window slid: total %v errors %v gap_mean %v, want 1, 0, 60", dst[2], dst[1], dst[5])
	}
}

func TestBehaviourStep(t *testing.T) {
	spec := &models.Features{Window: models.Duration(time.Minute), Step: models.Duration(10 * time.Second),
		List: []models.Feature{{Name: "total", Op: models.FeatureTotal}}}
	b, _ := NewBehaviour(spec)
	dst := make([]float64, 1)
	t0 := time.Unix(0, 0)
	var emitted []int
	for _, s := range []int{0, 3, 9, 10, 15, 25} {
		if b.Add(&source.Event{Name: "x", Time: t0.Add(time.Duration(s) * time.Second)}, dst) {
			emitted = append(emitted, s)
		}
	}
	if len(emitted) != 3 || emitted[0] != 0 || emitted[1] != 10 || emitted[2] != 25 {
		t.Fatalf("emitted at %v, want [0 10 25]", emitted)
	}
}

func TestFailed(t *testing.T) {
	for _, c := range []struct {
		e    source.Event
		want bool
	}{
		{source.Event{Name: "form_error"}, true},
		{source.Event{Name: "payment_failed"}, true},
		{source.Event{Name: "payment", Properties: map[string]any{"ok": false}}, true},
		{source.Event{Name: "payment", Properties: map[string]any{"status": "failed"}}, true},
		{source.Event{Name: "payment", Properties: map[string]any{"ok": true}}, false},
		{source.Event{Name: "page_view"}, false},
	} {
		if got := Failed(&c.e); got != c.want {
			t.Errorf("Failed(%+v) = %v, want %v", c.e, got, c.want)
		}
	}
}
