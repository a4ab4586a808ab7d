package pipeline

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/source"
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

// TestAdoptKeysAcrossAModelSwitch (issue 18): at a switch to another model
// over the same windows, each key of a behaviour stream keeps its events so
// far, so the window they started ends at the same event as without the
// switch and is scored by the new model; an episode open at the switch is
// closed with the old model, and its key carries on too.
func TestAdoptKeysAcrossAModelSwitch(t *testing.T) {
	spec := func(id string) StreamSpec {
		s := evictSpec()
		s.Model = &meanModel{id: id, length: 3, hop: 3, chans: []string{"bad", "zero"}, thr: 1}
		return s
	}
	sec := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	buf1, buf2 := &memBuffer{}, &memBuffer{}
	p1, err := New(Options{Device: "dev-01", Buffer: buf1, Streams: []StreamSpec{spec("kiosk@1")}})
	if err != nil {
		t.Fatal(err)
	}
	feed(t, p1, nil, []source.Input{
		event("u1", "ok", sec(0)), event("u1", "ok", sec(1)), // 2 of a window
		event("u2", "ok", sec(2)), event("u2", "ok", sec(3)), event("u2", "ok", sec(4)), event("u2", "ok", sec(5)), // a window and 1
		event("u3", "bad", sec(6)), event("u3", "bad", sec(7)), event("u3", "bad", sec(8)), // a window that opens an episode
	})
	p2, err := New(Options{Device: "dev-01", Buffer: buf2, Streams: []StreamSpec{spec("kiosk@2")}})
	if err != nil {
		t.Fatal(err)
	}
	feed(t, p2, p1, []source.Input{
		event("u1", "ok", sec(10)),
		event("u2", "ok", sec(11)), event("u2", "ok", sec(12)),
		event("u3", "ok", sec(13)),
	})
	if n := len(buf1.scores(t)); n != 2 {
		t.Fatalf("%d windows scored before the switch, want u2's and u3's", n)
	}
	got := map[string]string{}
	for _, s := range buf2.scores(t) {
		got[s.Key] = s.Model + " " + s.TS.Format(time.TimeOnly)
	}
	want := map[string]string{"u1": "kiosk@2 12:00:10", "u2": "kiosk@2 12:00:12"}
	if !maps.Equal(got, want) {
		t.Fatalf("windows scored after the switch %v, want %v: the keys' first windows end where they would have", got, want)
	}
	var states []string
	for _, a := range buf2.alerts(t) {
		states = append(states, a.Key+" "+a.State+" "+a.Model)
	}
	if strings.Join(states, ",") != "u3 closed kiosk@1" {
		t.Fatalf("alerts after the switch %v, want u3's episode closed under kiosk@1", states)
	}
	if st := p2.Stats().Streams["kiosk"]; st.Keys != 3 {
		t.Fatalf("%d keys after the switch, want 3", st.Keys)
	}
}
