package detect

import (
	"testing"
	"time"
)

func TestCloseEpisode(t *testing.T) {
	o := DefaultOptions()
	o.Threshold, o.K, o.N = 1, 1, 1
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1e9, 0)
	if r := d.CloseEpisode(t0); r.Change != None || d.InEpisode() {
		t.Fatalf("CloseEpisode without an episode: %+v", r)
	}
	open := d.Observe(t0, 3)
	if open.Change != Open || !d.InEpisode() {
		t.Fatalf("Observe: %+v, want Open", open)
	}
	r := d.CloseEpisode(t0.Add(time.Second))
	if r.Change != Close || r.EpisodeStart != open.EpisodeStart || r.Update != 1 || r.Severity != open.Severity || d.InEpisode() {
		t.Fatalf("CloseEpisode: %+v, want the Close of %+v", r, open)
	}
}
