package buffer

import (
	"reflect"
	"testing"
)

func TestSyncedRoundTrip(t *testing.T) {
	marks := map[string]laneMark{
		"alert": {seq: 42, gone: []seqRange{{3, 5}, {9, 9}}},
		"score": {seq: 1 << 40},
	}
	b := encodeSynced(7, marks, []string{"score", "alert", "missing"})
	gen, got, err := decodeSynced(append(b, 0, 0, 0)) // trailing bytes are ignored
	if err != nil {
		t.Fatal(err)
	}
	if gen != 7 || !reflect.DeepEqual(got, marks) {
		t.Fatalf("decoded %d %+v, want 7 %+v", gen, got, marks)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x10
		if _, _, err := decodeSynced(c); err == nil {
			t.Fatalf("flipped byte %d not detected", i)
		}
	}
}

func FuzzDecodeSynced(f *testing.F) {
	f.Add(encodeSynced(1, map[string]laneMark{"alert": {seq: 9, gone: []seqRange{{1, 2}}}}, []string{"alert"}))
	f.Add(encodeSynced(2, nil, nil))
	f.Add([]byte("VGS1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		gen, marks, err := decodeSynced(b)
		if err != nil || len(b) > syncedSlot {
			return
		}
		order := make([]string, 0, len(marks))
		for name := range marks {
			order = append(order, name)
		}
		gen2, marks2, err := decodeSynced(encodeSynced(gen, marks, order))
		if err != nil || gen2 != gen || len(marks2) != len(marks) {
			t.Fatalf("re-encoding a valid slot: %v, %d lanes of %d", err, len(marks2), len(marks))
		}
	})
}
