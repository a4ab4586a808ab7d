package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
)

// On-disk layout (Badger keys):
//
//	r/<seg><lane>/<seq>       record: seg (4 bytes) and seq (8 bytes) big-endian;
//	                          segments are shared by all lanes and never
//	                          decrease as time goes, so a lane's keys sort in
//	                          sequence order
//	s/format                  format magic and version
//	s/lane/<lane>             lane state: next sequence number and head
//	s/cons/<lane>/<consumer>  consumer cursor on a lane: ack floor + acked set
//	t/flush                   throw-away key (see Badger.collect)
//
// The bookkeeping sorts after the records on purpose: it is rewritten with
// almost every batch, and a level-0 table spanning from it to the newest
// records would overlap every older table, and compaction would rewrite them
// all. Segments come first for the same reason: new records of every lane
// fall in the newest segments, instead of between the old records of two
// lanes.
//
// Every value ends with a CRC32-C (Castagnoli) that also covers the key, so
// a value that ends up under the wrong key is detected as well as a torn or
// flipped one.
//
// A record value is
//
//	[0]        record format version (1)
//	[1:9]      append time, Unix nanoseconds, big-endian
//	[9:13]     data length, big-endian
//	[13:13+n]  data
//	[13+n:]    CRC32-C over data, then bytes [0:13], then the key
//
// The checksum starts with the data so that it can be computed before the
// sequence number and time are known (outside the buffer's lock).

const (
	formatVersion = 1
	formatMagic   = "vigil.buffer"

	recordVersion   = 1
	recordHeaderLen = 13
	crcLen          = 4
	seqLen          = 8
	segLen          = 4

	// maxRecordBytesLimit bounds Options.MaxRecordBytes.
	maxRecordBytesLimit = 64 << 20
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)

	keyFormat      = []byte("s/format")
	prefixLaneMeta = []byte("s/lane/")
	prefixCursor   = []byte("s/cons/")
	prefixRecord   = []byte("r/")
	prefixMeta     = []byte("s/")
	// keyFlush is written and dropped to force Badger to flush its memtables
	// (see Badger.forceFlush); it never holds data.
	keyFlush = []byte("t/flush")

	errChecksum = errors.New("checksum mismatch")
)

// RecordOverhead is the number of bytes a record of lane counts against the
// caps on top of its data: its key and header.
func RecordOverhead(lane string) int64 {
	return int64(len(prefixRecord) + len(lane) + 1 + segLen + seqLen + recordHeaderLen + crcLen)
}

// recordKey returns the key of record seq of lane in segment seg.
func recordKey(lane []byte, seg uint32, seq uint64) []byte {
	k := make([]byte, recordKeyLen(len(lane)))
	putRecordKey(k, lane, seg, seq)
	return k
}

func recordKeyLen(laneLen int) int {
	return len(prefixRecord) + segLen + laneLen + 1 + seqLen
}

// putRecordKey writes a record key into k, which has the key's length.
func putRecordKey(k, lane []byte, seg uint32, seq uint64) {
	n := copy(k, prefixRecord)
	binary.BigEndian.PutUint32(k[n:], seg)
	n += segLen
	n += copy(k[n:], lane)
	k[n] = '/'
	binary.BigEndian.PutUint64(k[n+1:], seq)
}

// segmentPrefix is the prefix of the records of lane in segment seg.
func segmentPrefix(seg uint32, lane []byte) []byte {
	p := binary.BigEndian.AppendUint32(slices.Clip(prefixRecord), seg)
	p = append(p, lane...)
	return append(p, '/')
}

// parseRecordKey splits a record key.
func parseRecordKey(key []byte) (seg uint32, lane []byte, seq uint64, ok bool) {
	n := len(prefixRecord) + segLen
	if len(key) < n+1+1+seqLen || !bytes.HasPrefix(key, prefixRecord) || key[len(key)-seqLen-1] != '/' {
		return 0, nil, 0, false
	}
	lane = key[n : len(key)-seqLen-1]
	if !validName(string(lane)) {
		return 0, nil, 0, false
	}
	return binary.BigEndian.Uint32(key[len(prefixRecord):]), lane, binary.BigEndian.Uint64(key[len(key)-seqLen:]), true
}

func laneMetaKey(lane string) []byte {
	return append(slices.Clip(prefixLaneMeta), lane...)
}

func cursorKey(lane, consumer string) []byte {
	k := append(slices.Clip(prefixCursor), lane...)
	k = append(k, '/')
	return append(k, consumer...)
}

// splitCursorKey returns the lane and consumer of a cursor key.
func splitCursorKey(key []byte) (lane, consumer string, ok bool) {
	rest, found := bytes.CutPrefix(key, prefixCursor)
	if !found {
		return "", "", false
	}
	l, c, found := bytes.Cut(rest, []byte{'/'})
	if !found || !validName(string(l)) || !validName(string(c)) {
		return "", "", false
	}
	return string(l), string(c), true
}

// newRecordValue returns a record value holding data, with the data part of
// the checksum computed; sealRecord completes it.
func newRecordValue(data []byte) (value []byte, dataCRC uint32) {
	v := make([]byte, recordHeaderLen+len(data)+crcLen)
	return v, fillRecordValue(v, data)
}

// fillRecordValue copies data into v, a value of the right length, and
// returns the data part of the checksum.
func fillRecordValue(v, data []byte) (dataCRC uint32) {
	copy(v[recordHeaderLen:], data)
	return crc32.Update(0, castagnoli, data)
}

// sealRecord writes the header of a value made by newRecordValue and its
// checksum.
func sealRecord(v []byte, dataCRC uint32, key []byte, at int64) {
	n := len(v) - recordHeaderLen - crcLen
	v[0] = recordVersion
	binary.BigEndian.PutUint64(v[1:9], uint64(at))
	binary.BigEndian.PutUint32(v[9:13], uint32(n))
	c := crc32.Update(dataCRC, castagnoli, v[:recordHeaderLen])
	c = crc32.Update(c, castagnoli, key)
	binary.BigEndian.PutUint32(v[len(v)-crcLen:], c)
}

// decodeRecord checks a record value stored under key and returns its append
// time and data (a sub-slice of v).
func decodeRecord(key, v []byte) (at int64, data []byte, err error) {
	if len(v) < recordHeaderLen+crcLen {
		return 0, nil, fmt.Errorf("record of %d bytes is shorter than its header", len(v))
	}
	if v[0] != recordVersion {
		return 0, nil, fmt.Errorf("unknown record version %d", v[0])
	}
	n := binary.BigEndian.Uint32(v[9:13])
	if int64(n) != int64(len(v)-recordHeaderLen-crcLen) {
		return 0, nil, fmt.Errorf("record says %d data bytes, has %d", n, len(v)-recordHeaderLen-crcLen)
	}
	data = v[recordHeaderLen : recordHeaderLen+int(n)]
	c := crc32.Update(0, castagnoli, data)
	c = crc32.Update(c, castagnoli, v[:recordHeaderLen])
	c = crc32.Update(c, castagnoli, key)
	if c != binary.BigEndian.Uint32(v[len(v)-crcLen:]) {
		return 0, nil, errChecksum
	}
	return int64(binary.BigEndian.Uint64(v[1:9])), data, nil
}

// sealMeta appends the checksum (over key and body) to a meta value body.
func sealMeta(key, body []byte) []byte {
	c := crc32.Update(0, castagnoli, key)
	c = crc32.Update(c, castagnoli, body)
	return binary.BigEndian.AppendUint32(body, c)
}

// openMeta checks a meta value's checksum and returns its body.
func openMeta(key, v []byte) ([]byte, error) {
	if len(v) < crcLen {
		return nil, fmt.Errorf("value of %d bytes is too short", len(v))
	}
	body := v[:len(v)-crcLen]
	c := crc32.Update(0, castagnoli, key)
	c = crc32.Update(c, castagnoli, body)
	if c != binary.BigEndian.Uint32(v[len(v)-crcLen:]) {
		return nil, errChecksum
	}
	return body, nil
}

func encodeFormat(version uint32) []byte {
	body := binary.BigEndian.AppendUint32([]byte(formatMagic), version)
	return sealMeta(keyFormat, body)
}

// decodeFormat returns the format version recorded in a buffer directory.
func decodeFormat(v []byte) (uint32, error) {
	body, err := openMeta(keyFormat, v)
	if err != nil {
		return 0, err
	}
	if len(body) != len(formatMagic)+4 || string(body[:len(formatMagic)]) != formatMagic {
		return 0, fmt.Errorf("bad format marker %q", body)
	}
	return binary.BigEndian.Uint32(body[len(formatMagic):]), nil
}

const laneMetaVersion = 1

// encodeLaneMeta encodes a lane's state: the next sequence number to
// assign, and its head: every record below it is deleted, whether or not it
// is still on disk.
func encodeLaneMeta(lane string, next, head uint64) []byte {
	body := binary.BigEndian.AppendUint64([]byte{laneMetaVersion}, next)
	body = binary.BigEndian.AppendUint64(body, head)
	return sealMeta(laneMetaKey(lane), body)
}

// decodeLaneMeta is the inverse of encodeLaneMeta.
func decodeLaneMeta(key, v []byte) (next, head uint64, err error) {
	body, err := openMeta(key, v)
	if err != nil {
		return 0, 0, err
	}
	if len(body) != 17 || body[0] != laneMetaVersion {
		return 0, 0, fmt.Errorf("bad lane state of %d bytes, version %d", len(body), firstByte(body))
	}
	next, head = binary.BigEndian.Uint64(body[1:9]), binary.BigEndian.Uint64(body[9:17])
	if head > next {
		return 0, 0, fmt.Errorf("head %d above next sequence number %d", head, next)
	}
	return next, head, nil
}

const cursorVersion = 1

// maxPending bounds the acknowledgements a stored cursor may hold above its
// floor, so that a damaged one cannot make the buffer allocate without end.
const maxPending = 1 << 24

// encodeCursor encodes an ack floor and the acknowledged sequence numbers
// above it, compacted into runs: count of runs, then for each run the gap
// from the previous run's end and its length minus one, as uvarints.
func encodeCursor(key []byte, floor uint64, pending map[uint64]struct{}) []byte {
	seqs := make([]uint64, 0, len(pending))
	for s := range pending {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	type run struct{ start, n uint64 }
	var runs []run
	for _, s := range seqs {
		if k := len(runs) - 1; k >= 0 && runs[k].start+runs[k].n == s {
			runs[k].n++
			continue
		}
		runs = append(runs, run{s, 1})
	}
	body := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(runs)*4)
	body = append(body, cursorVersion)
	body = binary.AppendUvarint(body, floor)
	body = binary.AppendUvarint(body, uint64(len(runs)))
	prev := floor
	for _, r := range runs {
		body = binary.AppendUvarint(body, r.start-prev-1)
		body = binary.AppendUvarint(body, r.n-1)
		prev = r.start + r.n - 1
	}
	return sealMeta(key, body)
}

// decodeCursor is the inverse of encodeCursor.
func decodeCursor(key, v []byte) (floor uint64, pending map[uint64]struct{}, err error) {
	body, err := openMeta(key, v)
	if err != nil {
		return 0, nil, err
	}
	if len(body) == 0 || body[0] != cursorVersion {
		return 0, nil, fmt.Errorf("bad cursor version %d", firstByte(body))
	}
	r := body[1:]
	next := func() (uint64, error) {
		x, n := binary.Uvarint(r)
		if n <= 0 {
			return 0, errors.New("truncated cursor")
		}
		r = r[n:]
		return x, nil
	}
	if floor, err = next(); err != nil {
		return 0, nil, err
	}
	nruns, err := next()
	if err != nil {
		return 0, nil, err
	}
	if nruns > uint64(len(r)) { // each run takes at least 2 bytes
		return 0, nil, fmt.Errorf("cursor claims %d runs in %d bytes", nruns, len(r))
	}
	pending = make(map[uint64]struct{})
	prev := floor
	for range nruns {
		gap, err := next()
		if err != nil {
			return 0, nil, err
		}
		n, err := next()
		if err != nil {
			return 0, nil, err
		}
		start := prev + gap + 1
		end := start + n
		if start <= prev || end < start || n >= maxPending-uint64(len(pending)) {
			return 0, nil, errors.New("cursor run out of range")
		}
		for s := start; s <= end; s++ {
			pending[s] = struct{}{}
		}
		prev = end
	}
	if len(r) != 0 {
		return 0, nil, fmt.Errorf("%d trailing bytes in cursor", len(r))
	}
	return floor, pending, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}
