package pipeline

import (
	"testing"
)

// TestAdoptAcrossAModelSwitch (issue 18: no score lost or duplicated
// across a promotion or rollback): another model over the same windows
// takes the stream's timeline, partial window and duplicate filter, so a
// source read again from its start (a replay after the rebuild) scores no
// window twice, not even through the last sample taken, and skips none.
func TestAdoptAcrossAModelSwitch(t *testing.T) {
	in := samples(40, func(i int) []float64 { return []float64{float64(i % 3), 0} })
	buf1, buf2 := &memBuffer{}, &memBuffer{}
	p1, err := New(Options{Device: "dev-01", Buffer: buf1, Streams: []StreamSpec{sensorSpec(&meanModel{id: "mean@1", length: 4, hop: 2, chans: chans2, thr: 5})}})
	if err != nil {
		t.Fatal(err)
	}
	feed(t, p1, nil, in[:21]) // samples 0..20: windows ending at 3, 5, ..., 19
	p2, err := New(Options{Device: "dev-01", Buffer: buf2, Streams: []StreamSpec{sensorSpec(&meanModel{id: "mean@2", length: 4, hop: 2, chans: chans2, thr: 5})}})
	if err != nil {
		t.Fatal(err)
	}
	if kept := feed(t, p2, p1, in); len(kept) != 0 {
		t.Fatalf("kept %v: the detector of another model is not", kept)
	}
	s1, s2 := buf1.scores(t), buf2.scores(t)
	if len(s1) != 9 || len(s2) != 10 {
		t.Fatalf("%d windows scored before the switch, %d after; want 9 and 10", len(s1), len(s2))
	}
	// The new model's windows end at samples 21, 23, ..., 39.
	for i, s := range s2 {
		if want := in[21+2*i].Time; s.Model != "mean@2" || !s.TS.Equal(want) {
			t.Fatalf("score %d after the switch: %s at %v, want mean@2 at %v", i, s.Model, s.TS, want)
		}
	}
	if s1[len(s1)-1].TS.Compare(s2[0].TS) >= 0 {
		t.Fatal("windows overlap across the switch")
	}
}
