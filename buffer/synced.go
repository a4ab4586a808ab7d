package buffer

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// The watermark file.
//
// Badger replays its write-ahead log (memtable log) at open up to the first
// damaged entry and drops the rest without a word; it starts afresh when its
// manifest is gone. So that a loss of records the buffer had made durable is
// noticed, the buffer keeps its own small file beside Badger's, vigil.synced:
// after every fsync round it writes, for each lane, the highest sequence
// number that round made durable; the file itself is fsynced with the next
// round. At open, a lane whose records end below its watermark, or that
// misses records in the middle which a consumer had not acknowledged, has
// lost records: they are logged and counted in [LaneStats.CorruptSkipped],
// and sequence numbers resume above the watermark.
//
// It also remembers, per lane, the ranges of sequence numbers already
// reported lost or damaged (until every consumer is past them), so that a
// hole is reported once, not at every start.
//
// The file holds two slots of syncedSlot bytes, written in turn, so that a
// torn write leaves the other one whole. A slot is
//
//	[0:4]    magic "VGS1"
//	[4:12]   generation, big-endian; the valid slot with the highest wins
//	[12:14]  number of lanes n, big-endian
//	then n times: name length (1 byte), name, sequence number (8 bytes),
//	         number of ranges m (2 bytes), m times first and last (8 bytes each)
//	then CRC32-C over everything before it, big-endian
//
// All numbers are big-endian.
//
// A missing or damaged file loses nothing but the check: it is logged and
// rewritten.

const (
	syncedName  = "vigil.synced"
	syncedMagic = "VGS1"
	syncedSlot  = 8 << 10
)

var errSyncedFormat = errors.New("malformed watermark slot")

// seqRange is the sequence numbers lo to hi.
type seqRange struct{ lo, hi uint64 }

// laneMark is what the watermark file holds for a lane.
type laneMark struct {
	seq  uint64     // highest sequence number made durable
	gone []seqRange // sequence numbers already reported lost or damaged
}

// maxGoneRanges bounds the ranges kept per lane; older ones are forgotten
// (and their holes may be reported again).
const maxGoneRanges = 32

// encodeSynced encodes a slot; lanes beyond the slot's room are left out
// (and then not checked).
func encodeSynced(gen uint64, marks map[string]laneMark, order []string) []byte {
	buf := make([]byte, 0, syncedSlot)
	buf = append(buf, syncedMagic...)
	buf = binary.BigEndian.AppendUint64(buf, gen)
	buf = append(buf, 0, 0)
	n := 0
	for _, name := range order {
		m, ok := marks[name]
		gone := m.gone[max(0, len(m.gone)-maxGoneRanges):]
		if !ok || len(name) > 255 || len(buf)+1+len(name)+8+2+16*len(gone)+crcLen > syncedSlot {
			continue
		}
		buf = append(buf, byte(len(name)))
		buf = append(buf, name...)
		buf = binary.BigEndian.AppendUint64(buf, m.seq)
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(gone)))
		for _, r := range gone {
			buf = binary.BigEndian.AppendUint64(buf, r.lo)
			buf = binary.BigEndian.AppendUint64(buf, r.hi)
		}
		n++
	}
	binary.BigEndian.PutUint16(buf[12:14], uint16(n))
	return binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
}

// decodeSynced decodes a slot (which may be followed by anything).
func decodeSynced(b []byte) (gen uint64, marks map[string]laneMark, err error) {
	if len(b) < 14+crcLen || string(b[:4]) != syncedMagic {
		return 0, nil, errSyncedFormat
	}
	gen = binary.BigEndian.Uint64(b[4:12])
	n := int(binary.BigEndian.Uint16(b[12:14]))
	off := 14
	marks = make(map[string]laneMark, n)
	for range n {
		if off >= len(b) {
			return 0, nil, errSyncedFormat
		}
		l := int(b[off])
		if off+1+l+8+2 > len(b) {
			return 0, nil, errSyncedFormat
		}
		name := string(b[off+1 : off+1+l])
		off += 1 + l
		m := laneMark{seq: binary.BigEndian.Uint64(b[off:])}
		nr := int(binary.BigEndian.Uint16(b[off+8:]))
		off += 10
		if nr > maxGoneRanges || off+16*nr > len(b) {
			return 0, nil, errSyncedFormat
		}
		for range nr {
			r := seqRange{binary.BigEndian.Uint64(b[off:]), binary.BigEndian.Uint64(b[off+8:])}
			if r.lo > r.hi {
				return 0, nil, errSyncedFormat
			}
			m.gone = append(m.gone, r)
			off += 16
		}
		marks[name] = m
	}
	if off+crcLen > len(b) {
		return 0, nil, errSyncedFormat
	}
	if crc32.Checksum(b[:off], castagnoli) != binary.BigEndian.Uint32(b[off:]) {
		return 0, nil, fmt.Errorf("%w: %w", errSyncedFormat, errChecksum)
	}
	return gen, marks, nil
}

// readSynced reads the watermark file of dir. It returns nil marks and no
// error if there is no file.
func readSynced(dir string) (marks map[string]laneMark, gen uint64, err error) {
	data, err := os.ReadFile(filepath.Join(dir, syncedName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var errs []error
	for off := 0; off < len(data); off += syncedSlot {
		g, m, err := decodeSynced(data[off:min(len(data), off+syncedSlot)])
		if err != nil {
			errs = append(errs, fmt.Errorf("slot at %d: %w", off, err))
			continue
		}
		if marks == nil || g > gen {
			marks, gen = m, g
		}
	}
	if marks == nil {
		return nil, 0, fmt.Errorf("no valid slot in %d bytes: %w", len(data), errors.Join(errs...))
	}
	return marks, gen, nil
}

// syncedFile writes the watermark file.
type syncedFile struct {
	mu    sync.Mutex
	f     *os.File
	gen   uint64
	order []string
	dirty bool
	last  map[string]laneMark
}

func openSynced(dir string, gen uint64, order []string) (*syncedFile, error) {
	f, err := os.OpenFile(filepath.Join(dir, syncedName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &syncedFile{f: f, gen: gen, order: order}, nil
}

// write stores marks in the next slot, without fsync, unless they did not
// change.
func (s *syncedFile) write(marks map[string]laneMark) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil || sameMarks(s.last, marks) {
		return nil
	}
	s.gen++
	if _, err := s.f.WriteAt(encodeSynced(s.gen, marks, s.order), int64(s.gen%2)*syncedSlot); err != nil {
		return err
	}
	s.last, s.dirty = marks, true
	return nil
}

// flush fsyncs what write wrote.
func (s *syncedFile) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil || !s.dirty {
		return nil
	}
	s.dirty = false
	return s.f.Sync()
}

func (s *syncedFile) close() error {
	err := s.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		err = errors.Join(err, s.f.Close())
		s.f = nil
	}
	return err
}

func sameMarks(a, b map[string]laneMark) bool {
	if len(a) != len(b) || a == nil {
		return false
	}
	for k, v := range a {
		w := b[k]
		if w.seq != v.seq || !slices.Equal(w.gone, v.gone) {
			return false
		}
	}
	return true
}

// addGone adds seqs lo to hi to l's ranges of sequence numbers reported
// gone. Call with mu held (or before the buffer runs).
func (b *Badger) addGone(l *lane[struct{}], lo, hi uint64) {
	if b.gone == nil {
		b.gone = map[*lane[struct{}]][]seqRange{}
	}
	rs := b.gone[l]
	if n := len(rs); n > 0 && rs[n-1].hi+1 >= lo && rs[n-1].lo <= hi+1 {
		rs[n-1] = seqRange{min(rs[n-1].lo, lo), max(rs[n-1].hi, hi)}
	} else {
		rs = append(rs, seqRange{lo, hi})
		slices.SortFunc(rs, func(a, c seqRange) int { return cmp.Compare(a.lo, c.lo) })
	}
	b.gone[l] = rs
}

// isGone tells whether seq of l was already reported gone.
func (b *Badger) isGone(l *lane[struct{}], seq uint64) bool {
	for _, r := range b.gone[l] {
		if seq >= r.lo && seq <= r.hi {
			return true
		}
	}
	return false
}

// noteDamage records and logs damage found at open. Call before the buffer
// runs.
func (b *Badger) noteDamage(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.damage = append(b.damage, msg)
}

// laneNames returns the configured lanes' names, in priority order.
func (b *Badger) laneNames() []string {
	names := make([]string, 0, len(b.st.byPrio))
	for _, l := range b.st.byPrio {
		names = append(names, l.opts.Name)
	}
	return names
}

// doneMarks returns every lane's highest completed sequence number, and
// the ranges reported gone that a consumer may still come across.
func (b *Badger) doneMarks() map[string]laneMark {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := make(map[string]laneMark, len(b.st.byPrio))
	for _, l := range b.st.byPrio {
		floor := uint64(1<<63 - 1)
		for _, c := range l.cursors {
			floor = min(floor, c.floor)
		}
		if len(l.cursors) == 0 {
			floor = 0
		}
		rs := slices.DeleteFunc(slices.Clone(b.gone[l]), func(r seqRange) bool { return r.hi <= floor })
		b.gone[l] = rs
		m[l.opts.Name] = laneMark{seq: l.done, gone: slices.Clone(rs)}
	}
	return m
}

// checkLosses compares what was loaded with the watermark file, counts and
// reports records that were made durable but are gone, and makes sure their
// sequence numbers are never handed out again. Call during recovery, after
// the records and cursors are loaded and before cursors advance.
func (b *Badger) checkLosses(marks map[string]laneMark, markErr error, fresh bool, heads map[*lane[struct{}]]uint64) {
	switch {
	case markErr != nil:
		b.noteDamage("watermark file %s is damaged (%v): records lost before this start cannot be detected; it is rewritten", syncedName, markErr)
	case marks == nil && !fresh:
		b.noteDamage("watermark file %s is missing beside buffer data: records lost before this start cannot be detected; it is written again", syncedName)
	}
	for _, l := range b.st.byPrio {
		for _, r := range marks[l.opts.Name].gone {
			b.addGone(l, r.lo, r.hi)
		}
		last := l.next - 1
		for _, c := range l.cursors {
			last = max(last, c.floor) // acknowledged, so it existed and was delivered
		}
		// Records missing in the middle that no consumer had acknowledged
		// (a record leaves the middle of a lane only once every consumer
		// has acknowledged it; those of a lane without consumers only go
		// from its head): a table, or part of the log, is gone.
		{
			floor := uint64(0)
			if len(l.cursors) > 0 {
				floor = 1<<63 - 1
				for _, c := range l.cursors {
					floor = min(floor, c.floor)
				}
			}
			from := max(heads[l], floor+1, 1)
			var lost uint64
			var lo, hi uint64
			count := func(a, z uint64) { // seqs a..z are missing
				for q := a; q <= z; q++ {
					if !ackedByAny(l, q) && !b.skipped[l][q] && !b.isGone(l, q) {
						if lost == 0 {
							lo = q
						}
						lost++
						hi = q
						b.addGone(l, q, q)
					}
				}
			}
			prev := from - 1
			for _, sl := range l.idx.slots {
				if sl.seq < from {
					continue
				}
				if sl.seq > prev+1 {
					count(prev+1, sl.seq-1)
				}
				prev = sl.seq
			}
			if lost > 0 {
				l.corrupt += lost
				b.noteDamage("lane %q: %d records between %d and %d are missing that consumers had not acknowledged (a damaged table or log): lost", l.opts.Name, lost, lo, hi)
				b.log.Error("buffer: records lost", "lane", l.opts.Name, "lost", lost, "first", lo, "last", hi)
			}
		}
		// Records at the end that were made durable but are gone.
		mk, ok := marks[l.opts.Name]
		if w := mk.seq; ok && w > last {
			lost := w - last
			l.corrupt += lost
			l.next = w + 1
			b.addGone(l, last+1, w)
			b.open.lanes[l] = true
			b.open.ops++
			b.noteDamage("lane %q: records %d to %d were made durable but are gone (damaged or truncated log): %d lost", l.opts.Name, last+1, w, lost)
			b.log.Error("buffer: durable records lost", "lane", l.opts.Name, "first", last+1, "last", w, "lost", lost)
		}
	}
}

// ackedByAny tells whether some consumer of l has acknowledged seq. (Not
// every one: a consumer registered after a record left the middle of the
// lane never saw it.)
func ackedByAny(l *lane[struct{}], seq uint64) bool {
	for _, c := range l.cursors {
		if c.acked(seq) {
			return true
		}
	}
	return false
}
