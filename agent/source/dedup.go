package source

import (
	"strconv"
	"sync"
	"time"
)

// dedup remembers the event ids seen recently: at most size ids, each for
// at most ttl. Ids enter in time order, so one FIFO ring serves both bounds.
// It is safe for concurrent use.
type dedup struct {
	ttl  time.Duration
	size int

	mu   sync.Mutex
	seen map[string]int64 // id → when it was reserved (unix ns)
	ring []dedupEntry
	head int // oldest entry
	n    int
}

type dedupEntry struct {
	id string
	at int64
}

// dedupKey is what makes an event a duplicate: its event_id per user, so
// that one user's ids never collide with another's (kiosks number their
// events per session: alice's "1" is not bob's "1").
// The user id's length goes first, so no pair of ids can spell another.
func dedupKey(ev *Event) string {
	return strconv.Itoa(len(ev.UserID)) + ":" + ev.UserID + ev.ID
}

// newDedup returns a dedup window, or nil (which never finds a duplicate)
// when size or ttl is 0.
func newDedup(size int, ttl time.Duration) *dedup {
	if size <= 0 || ttl <= 0 {
		return nil
	}
	return &dedup{ttl: ttl, size: size, seen: make(map[string]int64, min(size, 1<<16)), ring: make([]dedupEntry, size)}
}

// reserve records id and reports true, or reports false when id was seen
// within the window.
func (d *dedup) reserve(id string, now time.Time) bool {
	if d == nil {
		return true
	}
	t := now.UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	// Expire the old and make room.
	for d.n > 0 {
		e := d.ring[d.head]
		if d.n < d.size && t-e.at < int64(d.ttl) {
			break
		}
		if at, ok := d.seen[e.id]; ok && at == e.at {
			delete(d.seen, e.id)
		}
		d.ring[d.head] = dedupEntry{}
		d.head = (d.head + 1) % d.size
		d.n--
	}
	if at, ok := d.seen[id]; ok && t-at < int64(d.ttl) {
		return false
	}
	d.seen[id] = t
	d.ring[(d.head+d.n)%d.size] = dedupEntry{id: id, at: t}
	d.n++
	return true
}

// release forgets id, reserved by a delivery that then failed, so that a
// retry of it is not taken for a duplicate.
func (d *dedup) release(id string) {
	if d == nil {
		return
	}
	d.mu.Lock()
	delete(d.seen, id)
	d.mu.Unlock()
}
