package publish

import (
	"slices"
	"sync"
)

// seqSet is a set of sequence numbers kept as sorted, disjoint,
// non-adjacent intervals. The publisher keeps one per lane with what it has
// acknowledged, so that a replay reading the buffer by position skips
// records it acknowledged out of order on earlier connections. Acks come in
// runs, so it holds a few intervals per connection.
type seqSet struct {
	mu sync.Mutex
	iv []interval
}

type interval struct{ lo, hi uint64 }

// add puts seqs in the set.
func (s *seqSet) add(seqs ...uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range seqs {
		// First interval that q lies in, extends, or precedes.
		i, _ := slices.BinarySearchFunc(s.iv, q, func(v interval, q uint64) int {
			if v.hi+1 < q {
				return -1
			}
			return 1
		})
		switch {
		case i < len(s.iv) && s.iv[i].lo <= q && q <= s.iv[i].hi:
		case i < len(s.iv) && s.iv[i].hi+1 == q:
			s.iv[i].hi = q
			if i+1 < len(s.iv) && s.iv[i+1].lo == q+1 {
				s.iv[i].hi = s.iv[i+1].hi
				s.iv = slices.Delete(s.iv, i+1, i+2)
			}
		case i < len(s.iv) && s.iv[i].lo == q+1:
			s.iv[i].lo = q
		default:
			s.iv = slices.Insert(s.iv, i, interval{q, q})
		}
	}
}

// contains reports whether q is in the set.
func (s *seqSet) contains(q uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, found := slices.BinarySearchFunc(s.iv, q, func(v interval, q uint64) int {
		switch {
		case v.hi < q:
			return -1
		case v.lo > q:
			return 1
		}
		return 0
	})
	return found
}

// pruneBelow forgets the numbers below q.
func (s *seqSet) pruneBelow(q uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	for i < len(s.iv) && s.iv[i].hi < q {
		i++
	}
	s.iv = slices.Delete(s.iv, 0, i)
	if len(s.iv) > 0 && s.iv[0].lo < q {
		s.iv[0].lo = q
	}
}

// intervals returns the number of intervals held.
func (s *seqSet) intervals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.iv)
}
