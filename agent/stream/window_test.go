package stream

import (
	"testing"
	"time"
)

func TestWindowerEmitsEveryHop(t *testing.T) {
	w, err := NewWindower(4, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(0, 0)
	dst := make([]float64, 8)
	var got [][]float64
	var ends []int
	for i := 0; i < 10; i++ {
		_, end, ok := w.Push(t0.Add(time.Duration(i)*time.Second), []float64{float64(i), float64(-i)}, dst)
		if ok {
			got = append(got, append([]float64(nil), dst...))
			ends = append(ends, int(end.Sub(t0)/time.Second))
		}
	}
	// Windows end at samples 3, 5, 7, 9.
	wantEnds := []int{3, 5, 7, 9}
	if len(ends) != len(wantEnds) {
		t.Fatalf("windows end at %v, want %v", ends, wantEnds)
	}
	for i, e := range wantEnds {
		if ends[i] != e {
			t.Fatalf("windows end at %v, want %v", ends, wantEnds)
		}
		for r := 0; r < 4; r++ {
			v := float64(e - 3 + r)
			if got[i][2*r] != v || got[i][2*r+1] != -v {
				t.Fatalf("window %d row %d = %v, want [%v %v]", i, r, got[i][2*r:2*r+2], v, -v)
			}
		}
	}
}

func TestWindowerHopLongerThanWindow(t *testing.T) {
	w, _ := NewWindower(2, 3, 1)
	dst := make([]float64, 2)
	var ends []int
	for i := 0; i < 9; i++ {
		if _, _, ok := w.Push(time.Unix(int64(i), 0), []float64{float64(i)}, dst); ok {
			ends = append(ends, i)
		}
	}
	if want := []int{1, 4, 7}; len(ends) != 3 || ends[0] != 1 || ends[1] != 4 || ends[2] != 7 {
		t.Fatalf("windows end at %v, want %v", ends, want)
	}
}

func TestWindowerRejectsBadShapes(t *testing.T) {
	for _, c := range [][3]int{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}} {
		if _, err := NewWindower(c[0], c[1], c[2]); err == nil {
			t.Errorf("NewWindower%v: no error", c)
		}
	}
}

func BenchmarkWindowerPush(b *testing.B) {
	w, _ := NewWindower(60, 10, 8)
	dst := make([]float64, 480)
	v := make([]float64, 8)
	t0 := time.Unix(0, 0)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		v[0] = float64(i)
		w.Push(t0, v, dst)
		i++
	}
}
