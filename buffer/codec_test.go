package buffer

import (
	"bytes"
	"maps"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	key := recordKey([]byte("alert"), 7, 42)
	v, c := newRecordValue([]byte("payload"))
	sealRecord(v, c, key, 1234567890)
	at, data, err := decodeRecord(key, v)
	if err != nil || at != 1234567890 || string(data) != "payload" {
		t.Fatalf("decode = %d, %q, %v", at, data, err)
	}
	seg, lane, seq, ok := parseRecordKey(key)
	if !ok || seg != 7 || string(lane) != "alert" || seq != 42 {
		t.Fatalf("parseRecordKey = %d %q %d %v", seg, lane, seq, ok)
	}
	if _, _, err := decodeRecord(recordKey([]byte("alert"), 7, 43), v); err == nil {
		t.Fatal("a record under another key decoded")
	}
	for i := range v {
		bad := bytes.Clone(v)
		bad[i] ^= 0x01
		if _, _, err := decodeRecord(key, bad); err == nil {
			t.Fatalf("a flipped bit at byte %d went unnoticed", i)
		}
	}
	for n := range len(v) {
		if _, _, err := decodeRecord(key, v[:n]); err == nil {
			t.Fatalf("a record torn at %d bytes decoded", n)
		}
	}
}

func TestCursorRoundTrip(t *testing.T) {
	key := cursorKey("alert", "mqtt")
	for _, pending := range []map[uint64]struct{}{
		nil,
		{12: {}},
		{11: {}, 12: {}, 13: {}, 20: {}, 22: {}, 23: {}, 1 << 40: {}},
	} {
		v := encodeCursor(key, 10, pending)
		floor, got, err := decodeCursor(key, v)
		if err != nil || floor != 10 || !maps.Equal(got, pending) {
			t.Fatalf("decodeCursor = %d, %v, %v; want 10, %v", floor, got, err, pending)
		}
	}
	lane, consumer, ok := splitCursorKey(key)
	if !ok || lane != "alert" || consumer != "mqtt" {
		t.Fatalf("splitCursorKey = %q %q %v", lane, consumer, ok)
	}
}

func TestLaneMetaRoundTrip(t *testing.T) {
	key := laneMetaKey("score")
	next, head, err := decodeLaneMeta(key, encodeLaneMeta("score", 100, 42))
	if err != nil || next != 100 || head != 42 {
		t.Fatalf("decodeLaneMeta = %d, %d, %v", next, head, err)
	}
	if _, _, err := decodeLaneMeta(key, encodeLaneMeta("score", 10, 11)); err == nil {
		t.Fatal("a head above the next sequence number decoded")
	}
	if v, err := decodeFormat(encodeFormat(formatVersion)); err != nil || v != formatVersion {
		t.Fatalf("decodeFormat = %d, %v", v, err)
	}
}

// The decoders read what is on disk: they must reject damage, never panic.

func FuzzDecodeRecord(f *testing.F) {
	key := recordKey([]byte("score"), 1, 2)
	v, c := newRecordValue([]byte("hello"))
	sealRecord(v, c, key, 99)
	f.Add(key, v)
	f.Add(key, v[:5])
	f.Add([]byte("r/"), []byte{})
	f.Fuzz(func(t *testing.T, key, v []byte) {
		at, data, err := decodeRecord(key, v)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to the same bytes.
		w, c := newRecordValue(data)
		sealRecord(w, c, key, at)
		if !bytes.Equal(v, w) {
			t.Fatalf("decoded record does not re-encode to itself")
		}
		parseRecordKey(key)
	})
}

func FuzzDecodeCursor(f *testing.F) {
	key := cursorKey("alert", "mqtt")
	f.Add(key, encodeCursor(key, 5, map[uint64]struct{}{7: {}, 8: {}, 12: {}}))
	f.Add(key, encodeCursor(key, 0, nil))
	f.Add([]byte("s/cons/x/y"), []byte{1, 2, 3, 4, 5})
	f.Fuzz(func(t *testing.T, key, v []byte) {
		floor, pending, err := decodeCursor(key, v)
		if err != nil {
			return
		}
		for q := range pending {
			if q <= floor {
				t.Fatalf("pending %d at or below floor %d", q, floor)
			}
		}
		f2, p2, err := decodeCursor(key, encodeCursor(key, floor, pending))
		if err != nil || f2 != floor || !maps.Equal(p2, pending) {
			t.Fatalf("cursor does not round-trip")
		}
		splitCursorKey(key)
	})
}

func FuzzDecodeLaneMeta(f *testing.F) {
	key := laneMetaKey("score")
	f.Add(key, encodeLaneMeta("score", 10, 3))
	f.Fuzz(func(t *testing.T, key, v []byte) {
		next, head, err := decodeLaneMeta(key, v)
		if err == nil && head > next {
			t.Fatalf("head %d above next %d", head, next)
		}
		decodeFormat(v)
	})
}
