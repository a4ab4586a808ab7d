package eval

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/stream"
)

// stuckWindows must find the stuck channels the pipeline finds: its
// windower is primed with the last window−1 training rows, then takes the
// rest (agent/pipeline, learn.go).
func TestStuckWindowsAsThePipeline(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const rows, trainRows, window, hop = 600, 200, 20, 5
	tab := make([][]float64, rows)
	for i := range tab {
		tab[i] = []float64{r.NormFloat64(), float64(r.IntN(3)), r.NormFloat64()}
		if i >= 150 && i < 260 { // frozen across the end of training
			tab[i][0] = 0.25
		}
		if i >= 400 && i < 470 {
			tab[i][2] = -1
		}
	}
	limits := []int{60, 40, 30}
	var ends []int
	for e := trainRows; e < rows; e += hop {
		ends = append(ends, e)
	}
	got := stuckWindows(tab, ends, trainRows-(window-1), limits)

	w, err := stream.NewWindower(window, hop, 3)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float64, window*3)
	want := make([]int, 0, len(ends))
	t0 := time.Unix(0, 0)
	for i := trainRows - (window - 1); i < rows; i++ {
		if _, _, done := w.Push(t0.Add(time.Duration(i)*time.Second), tab[i], dst); done {
			want = append(want, detect.Stuck(w.Runs(), limits))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d windows, the windower cut %d", len(got), len(want))
	}
	var n0, n2 int
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("window ending on row %d: stuck %d, the pipeline's windower says %d", ends[i], got[i], want[i])
		}
		switch got[i] {
		case 0:
			n0++
		case 2:
			n2++
		}
	}
	// channel 0: run counted from row 181, reaches 60 at row 240, ends at
	// 259 (windows 240..255); channel 2: 400..469, 30 at 429 (430..465).
	if n0 != 4 || n2 != 8 {
		t.Fatalf("stuck windows: %d of channel 0, %d of channel 2; want 4 and 8", n0, n2)
	}
}
