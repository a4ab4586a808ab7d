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

func TestWindowerCountsRunsOfOneValue(t *testing.T) {
	w, err := NewWindower(3, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float64, 6)
	if r := w.Runs(); r[0] != 0 || r[1] != 0 {
		t.Fatalf("runs %v before any sample, want 0", r)
	}
	t0 := time.Unix(0, 0)
	// channel 0 changes at every sample but one; channel 1 freezes at 7
	// from the second sample on, for longer than a window.
	vals := [][]float64{{1, 0}, {2, 7}, {2, 7}, {3, 7}, {4, 7}, {5, 7}, {6, 8}}
	want := [][2]int{{1, 1}, {1, 1}, {2, 2}, {1, 3}, {1, 4}, {1, 5}, {1, 1}}
	for i, v := range vals {
		w.Push(t0.Add(time.Duration(i)*time.Second), v, dst)
		if r := w.Runs(); r[0] != want[i][0] || r[1] != want[i][1] {
			t.Fatalf("after sample %d: runs %v, want %v", i, r, want[i])
		}
	}
	w.Reset()
	w.Push(t0, []float64{6, 8}, dst)
	if r := w.Runs(); r[0] != 1 || r[1] != 1 {
		t.Fatalf("runs %v after a Reset, want a fresh start", r)
	}

	// a window of one sample: the newest sample's row is the one the
	// next overwrites
	w1, err := NewWindower(1, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		v   float64
		run int
	}{{3, 1}, {3, 2}, {3, 3}, {4, 1}, {4, 2}} {
		w1.Push(t0, []float64{c.v}, dst)
		if r := w1.Runs()[0]; r != c.run {
			t.Fatalf("window of 1, sample %d: run %d, want %d", i, r, c.run)
		}
	}
}
