package publish

import (
	"math/rand/v2"
	"testing"
)

// TestSeqSet checks the interval set against a plain map.
func TestSeqSet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var s seqSet
		want := map[uint64]bool{}
		n := 1 + r.IntN(300)
		for range n {
			q := 1 + r.Uint64N(200)
			s.add(q)
			want[q] = true
		}
		if round%2 == 0 {
			cut := 1 + r.Uint64N(200)
			s.pruneBelow(cut)
			for q := range want {
				if q < cut {
					delete(want, q)
				}
			}
		}
		for q := uint64(0); q <= 202; q++ {
			if s.contains(q) != want[q] {
				t.Fatalf("round %d: contains(%d) = %v; want %v (intervals %v)", round, q, s.contains(q), want[q], s.iv)
			}
		}
		for i := 1; i < len(s.iv); i++ {
			if s.iv[i-1].hi+1 >= s.iv[i].lo {
				t.Fatalf("intervals %v overlap or touch", s.iv)
			}
		}
	}
	var s seqSet
	for q := uint64(1); q <= 1000; q++ {
		s.add(q)
	}
	if s.intervals() != 1 {
		t.Fatalf("a run of acks kept %d intervals; want 1", s.intervals())
	}
}
