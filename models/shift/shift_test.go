package shift

import (
	"math"
	"testing"
)

func TestZ(t *testing.T) {
	// two channels, 6 rows: the last 2 compared with the 4 before
	// channel 0: 1, 3, 1, 3 then 5, 7: mean 2, std 1, recent mean 6 → +4
	// channel 1: constant 10 then 10, 9: std 0 → the floor 0.5 → −1
	w := []float64{1, 10, 3, 10, 1, 10, 3, 10, 5, 10, 7, 9}
	z := make([]float64, 2)
	Z(w, 2, 2, []float64{0.1, 0.5}, z)
	if math.Abs(z[0]-4) > 1e-12 || math.Abs(z[1]+1) > 1e-12 {
		t.Fatalf("Z = %v, want [4 -1]", z)
	}
}

func TestMaxAndOver(t *testing.T) {
	rows := [][]float64{{1}, {3}, {1}, {3}, {1}, {3}, {5}}
	// windows of 4, recent 1: ending on rows 3..6; the last, 3 1 3 | 5,
	// has base mean 7/3, std 0.943, shift (5 − 7/3) / 0.943 = 2.83
	got := Max(rows, 4, 1, []float64{0.01})
	if len(got) != 1 || math.Abs(got[0]-2.828427) > 1e-5 {
		t.Fatalf("Max = %v, want [2.83]", got)
	}
	if Max(rows[:3], 4, 1, []float64{0.01}) != nil {
		t.Fatal("Max of fewer rows than a window is not nil")
	}
	for _, c := range []struct {
		z, max []float64
		factor float64
		want   int
		ratio  float64
	}{
		{[]float64{3, -5}, []float64{2, 2}, 2, 1, 1.25},
		{[]float64{3, -3}, []float64{2, 2}, 2, -1, 0},
		{[]float64{9, 0}, []float64{0, 2}, 2, -1, 0}, // a channel that never moved in training is the model's
		{[]float64{9, 9}, []float64{2, 2}, 0, -1, 0}, // off
	} {
		if ch, r := Over(c.z, c.max, c.factor); ch != c.want || math.Abs(r-c.ratio) > 1e-12 {
			t.Errorf("Over(%v, %v, %v) = %d, %v; want %d, %v", c.z, c.max, c.factor, ch, r, c.want, c.ratio)
		}
	}
}

func TestRecent(t *testing.T) {
	for length, want := range map[int]int{3: 0, 4: 1, 12: 2, 60: 10, 61: 10} {
		if got := Recent(length); got != want {
			t.Errorf("Recent(%d) = %d, want %d", length, got, want)
		}
	}
}

func BenchmarkZ(b *testing.B) {
	w := make([]float64, 60*8)
	for i := range w {
		w[i] = float64(i%17) * 0.1
	}
	z, floor := make([]float64, 8), make([]float64, 8)
	for b.Loop() {
		Z(w, 8, 10, floor, z)
	}
}
