package buffer

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// This file holds the bookkeeping both implementations share: which records
// each lane holds (sequence number, append time, size), the caps and the
// eviction policy, TTLs, and consumer cursors. It decides; the
// implementations store. Badger keeps only this index in memory (about 24
// bytes per record) and the data on disk; Memory keeps the data in the index.
// Every method expects the owner's lock to be held.

// slot is one record in a lane's index. A slot with size 0 is dead: its
// record has been removed, and the slot is dropped at the next compaction.
type slot[P any] struct {
	// p comes first: a zero-size last field would be padded, and Badger's
	// slots (P is struct{}) would take 32 bytes instead of 24.
	p    P // payload, for implementations that keep data in memory
	seq  uint64
	at   int64  // append time, Unix nanoseconds
	size uint32 // stored bytes (data plus RecordOverhead)
	seg  uint32 // segment (Badger: part of the key)
}

// laneIndex holds a lane's records sorted by sequence number. Removing a
// record in the middle marks its slot dead; dead slots at the front are
// dropped at once, the others when they reach half of the slots.
type laneIndex[P any] struct {
	slots []slot[P] // slots[0] is live unless slots is empty
	dead  int
}

func (x *laneIndex[P]) live() int { return len(x.slots) - x.dead }

// search returns the position of the first slot with a sequence number of
// at least seq (dead or alive).
func (x *laneIndex[P]) search(seq uint64) int {
	return sort.Search(len(x.slots), func(i int) bool { return x.slots[i].seq >= seq })
}

// pos returns the position of the live slot holding seq, or -1.
func (x *laneIndex[P]) pos(seq uint64) int {
	i := x.search(seq)
	if i < len(x.slots) && x.slots[i].seq == seq && x.slots[i].size != 0 {
		return i
	}
	return -1
}

// nextLive returns the position of the first live slot at or after
// position i, or len(slots).
func (x *laneIndex[P]) nextLive(i int) int {
	for i < len(x.slots) && x.slots[i].size == 0 {
		i++
	}
	return i
}

func (x *laneIndex[P]) push(s slot[P]) {
	x.slots = append(x.slots, s)
}

// kill marks the slot at position i dead and keeps the invariants.
func (x *laneIndex[P]) kill(i int) {
	var zero P
	x.slots[i].size = 0
	x.slots[i].p = zero
	x.dead++
	if i == 0 {
		n := x.nextLive(0)
		// Reslicing from the front lets append reallocate, so the memory of
		// removed slots is released as the lane moves on.
		x.slots = x.slots[n:]
		x.dead -= n
		if len(x.slots) == 0 {
			x.slots = nil // let go of the array at once
		}
	}
	if x.dead > 64 && x.dead > len(x.slots)/2 {
		x.slots = slices.DeleteFunc(x.slots, func(s slot[P]) bool { return s.size == 0 })
		x.slots = slices.Clip(x.slots)
		x.dead = 0
	}
}

// cursor is a consumer's position on one lane: every sequence number up to
// floor is acknowledged (or has no record), and so is every number in
// pending, which only holds numbers above floor.
type cursor struct {
	floor   uint64
	pending map[uint64]struct{}
}

func (c *cursor) acked(seq uint64) bool {
	if seq <= c.floor {
		return true
	}
	_, ok := c.pending[seq]
	return ok
}

// lane is the state of one lane.
type lane[P any] struct {
	opts LaneOptions
	name []byte // opts.Name, for keys (Badger)

	next     uint64 // sequence number to assign next; >= 1
	dropFrom uint32 // segments below are gone from disk (Badger)
	done     uint64 // highest sequence number whose Append completed
	idx      laneIndex[P]
	bytes    int64
	lastAt   int64 // append time of the newest record; times never go back
	cursors  map[string]*cursor
	notify   chan struct{}

	evicted, expired, rejected, corrupt uint64
	noSpace                             uint64 // records refused for lack of disk space (Badger)
}

// oldest returns the sequence number of the oldest retained record, or the
// next one to be assigned if there is none.
func (l *lane[P]) oldest() uint64 {
	if len(l.idx.slots) == 0 {
		return l.next
	}
	return l.idx.slots[0].seq
}

// signal wakes everyone waiting on Notify.
func (l *lane[P]) signal() {
	close(l.notify)
	l.notify = make(chan struct{})
}

// why a record is removed.
type removal int

const (
	removedAcked removal = iota
	removedEvicted
	removedExpired
	removedCorrupt
)

// hooks let an implementation follow the state's decisions.
type hooks[P any] interface {
	// removed: the record was dropped from the index; front tells whether
	// it was the oldest, so that the lane's head moved past it.
	removed(l *lane[P], s slot[P], front bool)
	// cursorChanged: a cursor was created or changed and should be stored.
	cursorChanged(l *lane[P], consumer string)
	// cursorRemoved: a cursor was removed.
	cursorRemoved(l *lane[P], consumer string)
}

// state is the bookkeeping of a buffer.
type state[P any] struct {
	lanes    map[string]*lane[P]
	byPrio   []*lane[P] // lanes by ascending priority, then name
	total    int64
	maxBytes int64
	// softCap, when positive, lowers the total cap for growth: under disk
	// pressure (Badger) the stored bytes may not grow past it, so appends
	// evict or are rejected by the lanes' policies before the disk fills.
	softCap int64
	// Records are appended to segment seg, shared by all lanes, which is
	// closed once it holds segmentBytes (never if 0); segBytes counts it.
	seg          uint32
	segBytes     int64
	segmentBytes int64
	now          func() time.Time
	h            hooks[P]
}

func newState[P any](opts Options, h hooks[P]) *state[P] {
	s := &state[P]{
		lanes:    make(map[string]*lane[P], len(opts.Lanes)),
		maxBytes: opts.MaxBytes,
		now:      opts.Now,
		h:        h,
	}
	if s.now == nil {
		s.now = time.Now
	}
	for _, lo := range opts.Lanes {
		l := &lane[P]{
			opts:    lo,
			name:    []byte(lo.Name),
			next:    1,
			cursors: make(map[string]*cursor),
			notify:  make(chan struct{}),
		}
		s.lanes[lo.Name] = l
		s.byPrio = append(s.byPrio, l)
	}
	slices.SortFunc(s.byPrio, func(a, b *lane[P]) int {
		return cmp.Or(cmp.Compare(a.opts.Priority, b.opts.Priority), strings.Compare(a.opts.Name, b.opts.Name))
	})
	return s
}

// core is what Memory and Badger share: the state, the lock that guards
// it, and whether the buffer is closed.
type core[P any] struct {
	mu     sync.Mutex
	st     *state[P]
	closed bool
}

// LastSeq returns the highest sequence number appended to lane.
func (c *core[P]) LastSeq(lane string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.st.lanes[lane]; ok {
		return l.done
	}
	return 0
}

// Notify returns a channel closed at the next append to lane. See [Buffer].
func (c *core[P]) Notify(lane string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.st.lanes[lane]; ok && !c.closed {
		return l.notify
	}
	return closedChan
}

// closedChan is returned by Notify when there is nothing to wait for.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// readLane checks a read's arguments against a buffer that is closed or
// not and returns the lane to read; Memory and Badger call it holding their
// lock.
func readLane[P any](s *state[P], closed bool, name string, max int) (*lane[P], error) {
	if max <= 0 {
		return nil, fmt.Errorf("read lane %q: max must be positive, got %d", name, max)
	}
	if closed {
		return nil, fmt.Errorf("read lane %q: %w", name, ErrClosed)
	}
	l, err := s.lane(name)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return l, nil
}

func (s *state[P]) lane(name string) (*lane[P], error) {
	l, ok := s.lanes[name]
	if !ok {
		return nil, fmt.Errorf("lane %q: %w", name, ErrUnknownLane)
	}
	return l, nil
}

func (s *state[P]) cursor(consumer string, l *lane[P]) (*cursor, error) {
	c, ok := l.cursors[consumer]
	if !ok {
		return nil, fmt.Errorf("consumer %q on lane %q: %w", consumer, l.opts.Name, ErrUnknownConsumer)
	}
	return c, nil
}

func (s *state[P]) nowNanos() int64 { return s.now().UnixNano() }

// remove drops the live slot at position i of lane l.
func (s *state[P]) remove(l *lane[P], i int, why removal) {
	sl := l.idx.slots[i]
	l.bytes -= int64(sl.size)
	s.total -= int64(sl.size)
	switch why {
	case removedEvicted:
		l.evicted++
	case removedExpired:
		l.expired++
	case removedCorrupt:
		l.corrupt++
	}
	l.idx.kill(i)
	s.h.removed(l, sl, i == 0)
}

// removeSeq drops the record seq of lane l if it is live.
func (s *state[P]) removeSeq(l *lane[P], seq uint64, why removal) bool {
	i := l.idx.pos(seq)
	if i < 0 {
		return false
	}
	s.remove(l, i, why)
	return true
}

// add records a new record; the caller has made room with makeRoom.
func (s *state[P]) add(l *lane[P], size int64, at int64, p P) uint64 {
	seq := l.next
	l.next++
	if s.segmentBytes > 0 && s.segBytes >= s.segmentBytes {
		s.closeSegment()
	}
	s.segBytes += size
	l.idx.push(slot[P]{seq: seq, at: at, size: uint32(size), seg: s.seg, p: p})
	l.bytes += size
	s.total += size
	return seq
}

// appendTime returns the time to stamp on records appended now to l; it
// never goes back, so that TTLs can expire records from the front.
func (s *state[P]) appendTime(l *lane[P]) int64 {
	at := s.nowNanos()
	if at < l.lastAt {
		at = l.lastAt
	}
	l.lastAt = at
	return at
}

// makeRoom makes room for need more stored bytes on lane l, evicting as the
// policies allow, or explains why it cannot. It changes nothing when it
// fails.
func (s *state[P]) makeRoom(l *lane[P], need int64, nrec int) error {
	name := l.opts.Name
	if l.opts.MaxBytes > 0 && need > l.opts.MaxBytes {
		return fmt.Errorf("lane %q: %w: %d bytes can never fit the lane cap of %d bytes", name, ErrTooLarge, need, l.opts.MaxBytes)
	}
	if need > s.maxBytes {
		return fmt.Errorf("lane %q: %w: %d bytes can never fit the total cap of %d bytes", name, ErrTooLarge, need, s.maxBytes)
	}
	// Room the lane cap asks for, freed from the lane itself.
	var freedOwn int64
	if max := l.opts.MaxBytes; max > 0 && l.bytes+need > max {
		if l.opts.OnFull == Reject {
			l.rejected += uint64(nrec)
			return fmt.Errorf("lane %q: %w: lane cap of %d bytes reached (%d stored, %d to add)", name, ErrFull, max, l.bytes, need)
		}
		over := l.bytes + need - max
		for i := 0; freedOwn < over && i < len(l.idx.slots); i++ {
			freedOwn += int64(l.idx.slots[i].size)
		}
	}
	// Room the total cap asks for, freed from the lowest priorities first.
	capBytes, capWhat := s.maxBytes, fmt.Sprintf("total cap of %d bytes", s.maxBytes)
	if s.softCap > 0 && s.softCap < capBytes {
		capBytes, capWhat = s.softCap, fmt.Sprintf("disk limit of %d bytes (what the nearly full filesystem can hold)", s.softCap)
	}
	if over := s.total - freedOwn + need - capBytes; over > 0 {
		var avail int64
		for _, v := range s.byPrio {
			if s.canEvict(l, v) {
				avail += v.bytes
			}
		}
		if l.opts.OnFull == Evict {
			avail -= freedOwn // already counted once in l.bytes
		}
		if avail < over {
			l.rejected += uint64(nrec)
			return fmt.Errorf("lane %q: %w: %s reached (%d stored, %d to add) and lanes of priority <= %d with policy evict hold only %d bytes",
				name, ErrFull, capWhat, s.total, need, l.opts.Priority, avail+freedOwn)
		}
	}
	if max := l.opts.MaxBytes; max > 0 {
		for l.bytes+need > max {
			s.remove(l, 0, removedEvicted)
		}
	}
	for s.total+need > capBytes {
		v := s.victim(l)
		s.remove(v, 0, removedEvicted)
	}
	return nil
}

// canEvict tells whether an append to l may evict records of v.
func (s *state[P]) canEvict(l, v *lane[P]) bool {
	return v.opts.OnFull == Evict && v.opts.Priority <= l.opts.Priority && v.idx.live() > 0
}

// victim picks the lane to evict from for an append to l: the lowest
// priority, and among equals the one with the oldest record.
func (s *state[P]) victim(l *lane[P]) *lane[P] {
	var best *lane[P]
	for _, v := range s.byPrio {
		if !s.canEvict(l, v) {
			continue
		}
		if best == nil {
			best = v
			continue
		}
		if v.opts.Priority > best.opts.Priority {
			break
		}
		if v.idx.slots[0].at < best.idx.slots[0].at {
			best = v
		}
	}
	return best // makeRoom checked there is enough to evict
}

// expire removes the records of l that outlived its TTL.
func (s *state[P]) expire(l *lane[P], now int64) {
	ttl := int64(l.opts.TTL)
	if ttl <= 0 {
		return
	}
	for len(l.idx.slots) > 0 && now-l.idx.slots[0].at >= ttl {
		s.remove(l, 0, removedExpired)
	}
}

func (s *state[P]) expireAll() {
	now := s.nowNanos()
	for _, l := range s.byPrio {
		s.expire(l, now)
	}
}

// advance moves c's floor over everything acknowledged or without a record.
func (s *state[P]) advance(l *lane[P], c *cursor) {
	for {
		n := c.floor + 1
		if n >= l.next {
			return
		}
		if _, ok := c.pending[n]; ok {
			delete(c.pending, n)
			c.floor = n
			continue
		}
		i := l.idx.nextLive(l.idx.search(n))
		nl := l.next // first live record at or after n
		if i < len(l.idx.slots) {
			nl = l.idx.slots[i].seq
		}
		if nl == n {
			return // a record c has not acknowledged
		}
		// n .. nl-1 hold no record: skip them.
		c.floor = nl - 1
		if len(c.pending) > 0 {
			if gap := nl - n; gap <= uint64(len(c.pending)) {
				for q := n; q < nl; q++ {
					delete(c.pending, q)
				}
			} else {
				for q := range c.pending {
					if q <= c.floor {
						delete(c.pending, q)
					}
				}
			}
		}
	}
}

func (s *state[P]) ackedByAll(l *lane[P], seq uint64) bool {
	if len(l.cursors) == 0 {
		return false
	}
	for _, c := range l.cursors {
		if !c.acked(seq) {
			return false
		}
	}
	return true
}

// ack records consumer's acknowledgements and deletes the records every
// consumer of the lane has acknowledged.
func (s *state[P]) ack(consumer string, l *lane[P], seqs []uint64) error {
	c, err := s.cursor(consumer, l)
	if err != nil {
		return err
	}
	last := l.next - 1
	for _, q := range seqs {
		if q == 0 || q > last {
			return fmt.Errorf("ack %d on lane %q: no such sequence number (last is %d)", q, l.opts.Name, last)
		}
	}
	if len(c.pending)+len(seqs) > maxPending {
		return fmt.Errorf("ack on lane %q: %d acknowledgements already held above the floor %d; ack %d first",
			l.opts.Name, len(c.pending), c.floor, c.floor+1)
	}
	fresh := seqs[:0:0]
	for _, q := range seqs {
		if c.acked(q) {
			continue
		}
		c.pending[q] = struct{}{}
		fresh = append(fresh, q)
	}
	if len(fresh) == 0 {
		return nil
	}
	s.advance(l, c)
	for _, q := range fresh {
		if s.ackedByAll(l, q) {
			s.removeSeq(l, q, removedAcked)
		}
	}
	s.h.cursorChanged(l, consumer)
	return nil
}

// sweep deletes the records of l that all its consumers have acknowledged.
func (s *state[P]) sweep(l *lane[P]) {
	if len(l.cursors) == 0 {
		return
	}
	floor := uint64(math.MaxUint64)
	for _, c := range l.cursors {
		floor = min(floor, c.floor)
	}
	for len(l.idx.slots) > 0 && l.idx.slots[0].seq <= floor {
		s.remove(l, 0, removedAcked)
	}
	for _, c := range l.cursors {
		for q := range c.pending {
			if s.ackedByAll(l, q) {
				s.removeSeq(l, q, removedAcked)
			}
		}
	}
}

// register adds consumer to the lanes named (all lanes if none is named)
// that it is not on yet, at the oldest retained record.
func (s *state[P]) register(consumer string, names []string) error {
	lanes, err := s.lanesOf(names)
	if err != nil {
		return err
	}
	for _, l := range lanes {
		if _, ok := l.cursors[consumer]; ok {
			continue
		}
		l.cursors[consumer] = &cursor{floor: l.oldest() - 1, pending: map[uint64]struct{}{}}
		s.h.cursorChanged(l, consumer)
	}
	return nil
}

// reset moves consumer back to the oldest record of the lane named.
func (s *state[P]) reset(consumer, name string) error {
	l, err := s.lane(name)
	if err != nil {
		return err
	}
	c, err := s.cursor(consumer, l)
	if err != nil {
		return err
	}
	c.floor = l.oldest() - 1
	c.pending = map[uint64]struct{}{}
	s.h.cursorChanged(l, consumer)
	return nil
}

func (s *state[P]) removeConsumer(consumer string) error {
	found := false
	for _, l := range s.byPrio {
		if _, ok := l.cursors[consumer]; !ok {
			continue
		}
		found = true
		delete(l.cursors, consumer)
		s.h.cursorRemoved(l, consumer)
		s.sweep(l)
	}
	if !found {
		return fmt.Errorf("consumer %q: %w", consumer, ErrUnknownConsumer)
	}
	return nil
}

// lag counts the live records of l that c has not acknowledged.
func (s *state[P]) lag(l *lane[P], c *cursor) int {
	n := 0
	for i := l.idx.search(c.floor + 1); i < len(l.idx.slots); i++ {
		sl := &l.idx.slots[i]
		if sl.size == 0 {
			continue
		}
		if _, ok := c.pending[sl.seq]; !ok {
			n++
		}
	}
	return n
}

// stats fills everything but DiskBytes.
func (s *state[P]) stats() Stats {
	now := s.nowNanos()
	st := Stats{
		Lanes:     make(map[string]LaneStats, len(s.lanes)),
		Consumers: make(map[string]map[string]ConsumerStats),
		Bytes:     s.total,
	}
	for _, l := range s.byPrio {
		s.expire(l, now)
		ls := LaneStats{
			Records:        l.idx.live(),
			Bytes:          l.bytes,
			LastSeq:        l.done,
			Evicted:        l.evicted,
			Expired:        l.expired,
			Rejected:       l.rejected,
			CorruptSkipped: l.corrupt,
			NoSpace:        l.noSpace,
		}
		if len(l.idx.slots) > 0 {
			ls.OldestAge = max(time.Duration(now-l.idx.slots[0].at), 0)
		}
		st.Lanes[l.opts.Name] = ls
		for name, c := range l.cursors {
			s.advance(l, c)
			m := st.Consumers[name]
			if m == nil {
				m = make(map[string]ConsumerStats)
				st.Consumers[name] = m
			}
			m[l.opts.Name] = ConsumerStats{AckFloor: c.floor, Pending: len(c.pending), Lag: s.lag(l, c)}
		}
	}
	return st
}

// unread calls fn with the positions of up to max live records of l above
// c's floor that c has not acknowledged.
func (s *state[P]) unread(l *lane[P], c *cursor, max int, fn func(i int)) {
	s.advance(l, c)
	n := 0
	for i := l.idx.search(c.floor + 1); i < len(l.idx.slots) && n < max; i++ {
		sl := &l.idx.slots[i]
		if sl.size == 0 {
			continue
		}
		if _, ok := c.pending[sl.seq]; ok {
			continue
		}
		fn(i)
		n++
	}
}

// lanesOf returns the lanes named, or all lanes if none is named.
func (s *state[P]) lanesOf(names []string) ([]*lane[P], error) {
	if len(names) == 0 {
		return s.byPrio, nil
	}
	out := make([]*lane[P], 0, len(names))
	for _, n := range names {
		l, err := s.lane(n)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// closeSegment starts a new segment for the records to come.
func (s *state[P]) closeSegment() {
	s.seg++
	s.segBytes = 0
}
