package pipeline

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/source"
)

// flagFeatures emits (5, 0) for a "bad" event and (0, 0) otherwise.
type flagFeatures struct{}

func (flagFeatures) Add(e *source.Event, dst []float64) bool {
	dst[0], dst[1] = 0, 0
	if e.Name == "bad" {
		dst[0] = 5
	}
	return true
}

func evictSpec() StreamSpec {
	m := &meanModel{id: "kiosk@1", length: 1, hop: 1, chans: []string{"bad", "zero"}, thr: 1}
	d := detect.DefaultOptions()
	d.K, d.N, d.CloseAfter = 1, 1, 0 // an episode closes at the first normal window
	return StreamSpec{Name: "kiosk", Source: "http", Kind: KindBehaviour, Key: "user_id", Model: m, Detect: d,
		Features: func() Featurizer { return flagFeatures{} }}
}

func event(user, name string, t time.Time) source.Input {
	return source.Input{Source: "http", Time: t, Event: &source.Event{ID: fmt.Sprint(user, name, t.UnixNano()), Name: name, UserID: user}}
}

// TestEvictionSparesKeysWithAnOpenEpisode: other user ids beyond MaxKeys
// evict keys without an open episode first; the user whose episode is
// open keeps it, and gets no fresh "open" within it.
func TestEvictionSparesKeysWithAnOpenEpisode(t *testing.T) {
	const maxKeys = 1000
	in := []source.Input{event("alice", "bad", t0)}
	for i := range 3 * maxKeys {
		in = append(in, event(fmt.Sprintf("u%05d", i), "ok", t0.Add(time.Second)))
	}
	in = append(in, event("alice", "bad", t0.Add(2*time.Second)), event("alice", "ok", t0.Add(3*time.Second)))
	p, buf := run(t, Options{Streams: []StreamSpec{evictSpec()}, MaxKeys: maxKeys}, in)
	var states []string
	eps := map[string]bool{}
	for _, a := range buf.alerts(t) {
		if a.Key != "alice" {
			t.Fatalf("alert for %s: %+v", a.Key, a)
		}
		states = append(states, a.State)
		eps[a.Episode] = true
	}
	if strings.Join(states, ",") != "open,closed" || len(eps) != 1 {
		t.Fatalf("alice's alerts %v in %d episodes, want open,closed in one", states, len(eps))
	}
	st := p.Stats().Streams["kiosk"]
	if st.KeyEvicts != 2*maxKeys+1 || st.KeyEvictsOpen != 0 || st.Keys != maxKeys {
		t.Fatalf("stats %+v: want %d evictions, none of an open episode, %d keys", st, 2*maxKeys+1, maxKeys)
	}
}

// TestEvictingAnOpenEpisodeClosesIt: when every tracked key has an open
// episode, the least recently seen is evicted and its episode closed by an
// alert that says why.
func TestEvictingAnOpenEpisodeClosesIt(t *testing.T) {
	var in []source.Input
	for i, u := range []string{"u1", "u2", "u3", "u4"} {
		in = append(in, event(u, "bad", t0.Add(time.Duration(i)*time.Second)))
	}
	p, buf := run(t, Options{Streams: []StreamSpec{evictSpec()}, MaxKeys: 3}, in)
	al := buf.alerts(t)
	var closed []string
	opened := map[string]string{}
	for _, a := range al {
		switch a.State {
		case "open":
			opened[a.Key] = a.Episode
		case "closed":
			closed = append(closed, a.Key)
			if a.Episode != opened[a.Key] || !strings.Contains(a.Reason, "evicted") || a.TS != t0 {
				t.Errorf("close alert %+v: want u1's episode, closed at its last time, saying it was evicted", a)
			}
		}
	}
	if len(opened) != 4 || strings.Join(closed, ",") != "u1" {
		t.Fatalf("alerts %+v: want 4 opens and u1 closed", al)
	}
	if st := p.Stats().Streams["kiosk"]; st.KeyEvicts != 1 || st.KeyEvictsOpen != 1 || st.Alerts != 5 {
		t.Fatalf("stats %+v: want 1 eviction, of an open episode, 5 alerts", st)
	}
	ids := map[string]bool{}
	for _, a := range al {
		if ids[a.ID] {
			t.Fatalf("alert id %s repeats", a.ID)
		}
		ids[a.ID] = true
	}
}

// TestEvictionAfterAReload: a reload that keeps a behaviour stream keeps
// both of its key lists: a key whose episode is open stays the eviction of
// last resort after it (the list of such keys was left behind, and
// evicting from the empty one panicked).
func TestEvictionAfterAReload(t *testing.T) {
	opts := Options{Streams: []StreamSpec{evictSpec()}, MaxKeys: 2}
	p1, buf1 := run(t, opts, []source.Input{event("u1", "bad", t0), event("u2", "bad", t0.Add(time.Second))})
	if n := len(buf1.alerts(t)); n != 2 {
		t.Fatalf("%d alerts before the reload, want u1's and u2's opens", n)
	}
	buf2 := &memBuffer{}
	opts.Device, opts.Buffer, opts.Streams = "dev-01", buf2, []StreamSpec{evictSpec()}
	p2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if kept := feed(t, p2, p1, []source.Input{event("u3", "bad", t0.Add(2*time.Second))}); len(kept) != 1 {
		t.Fatalf("kept %v, want kiosk", kept)
	}
	var got []string
	for _, a := range buf2.alerts(t) {
		got = append(got, a.Key+" "+a.State)
		if a.State == "closed" && !strings.Contains(a.Reason, "evicted") {
			t.Errorf("close %+v: want the eviction's reason", a)
		}
	}
	if strings.Join(got, ",") != "u1 closed,u3 open" {
		t.Fatalf("alerts after the reload %v, want u1 evicted and closed, then u3 open", got)
	}
}
