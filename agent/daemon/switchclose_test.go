package daemon

import (
	"slices"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/models"
)

// episodeCount sums up a run's alerts per episode: its opens, its closes and
// the closes that no window caused (Reason set).
type episodeCount struct {
	model         string
	opened        time.Time
	opens, closes int
	reasons       []string
}

func countEpisodes(alerts []record.Alert) map[string]*episodeCount {
	out := map[string]*episodeCount{}
	for _, a := range alerts {
		e := out[a.Episode]
		if e == nil {
			e = &episodeCount{model: a.Model}
			out[a.Episode] = e
		}
		switch a.State {
		case "open":
			e.opens++
			e.opened = a.TS
		case "closed":
			e.closes++
			if a.Reason != "" {
				e.reasons = append(e.reasons, a.Reason)
			}
		}
	}
	return out
}

// TestPromotionClosesTheOpenEpisode (issue 18): a promotion that comes
// while the serving model has an episode open closes that episode with one
// "closed" alert saying the model switched (under the old model's id and
// episode); the promoted model opens its own. Every episode of the run is
// opened once and closed once (but one the baseline also leaves open at the
// end of the file), alert ids are unique, and, as in
// TestNoAlertLostOrDuplicatedAcrossPromotionAndRollback, every window is
// scored once and the other alerts keep their ids.
func TestPromotionClosesTheOpenEpisode(t *testing.T) {
	pub, priv, _ := models.GenerateKey()
	base := runReplay(t, 0, pub, nil)
	configured := base.scores[0].Model
	// The window index of each window end, and the baseline's longest
	// episode that opens after the first 40 windows (time to deploy).
	index := map[time.Time]int{}
	for i, s := range base.scores {
		index[s.TS] = i
	}
	baseEps := countEpisodes(base.alerts)
	var from, to int // the chosen episode's windows
	for _, a := range base.alerts {
		if a.State != "closed" {
			continue
		}
		o := index[baseEps[a.Episode].opened]
		if c := index[a.TS]; o >= 40 && c-o > to-from {
			from, to = o, c
		}
	}
	t.Logf("the baseline's longest episode after window 40: windows %d to %d of %d", from, to, len(base.scores))
	if to-from < 8 {
		t.Fatalf("no episode of 8 windows or more in the baseline: %d to %d", from, to)
	}
	v5 := newVersion(t, "5", priv, "pump8", 0)
	run := runReplay(t, 300, pub, func(d *Daemon) {
		deployDirect(t, d, v5, "5")
		waitFor(t, 60*time.Second, func() bool {
			st := d.Stats().Streams["pump1"]
			ep := st.Episodes
			return st.Windows >= uint64(from+2) && ep["open"]+ep["reopened"] > ep["closed"]
		})
		if st := d.Stats().Streams["pump1"]; st.Windows >= uint64(to) {
			t.Fatalf("the replay went past the episode (window %d, the episode ends at %d) before the promotion", st.Windows, to)
		}
		if rep := command(t, d, cmdPromote, `{"id":"p","stream":"pump1"}`); !rep.OK {
			t.Fatalf("promote: %+v", rep)
		}
	})
	checkSwitched(t, base, run, []string{configured, "pump8@5"})

	eps := countEpisodes(run.alerts)
	var switched []string
	unclosed := 0
	for id, e := range eps {
		if e.opens != 1 || e.closes > 1 {
			t.Errorf("episode %s (%s): %d opens, %d closes", id, e.model, e.opens, e.closes)
		}
		if e.closes == 0 {
			unclosed++
		}
		if len(e.reasons) > 0 {
			switched = append(switched, id)
			if e.model != configured || !slices.Equal(e.reasons, []string{"model switched: " + configured + " to pump8@5"}) {
				t.Errorf("episode %s of %s closed with %q", id, e.model, e.reasons)
			}
		}
	}
	baseUnclosed := 0
	for _, e := range baseEps {
		if e.closes == 0 {
			baseUnclosed++
		}
	}
	if len(switched) != 1 {
		t.Fatalf("%d episodes closed by the switch, want 1: %v", len(switched), switched)
	}
	if unclosed != baseUnclosed {
		t.Errorf("%d episodes left open at the end, the baseline %d", unclosed, baseUnclosed)
	}
	// The promoted model opens its own episode over the same anomaly.
	sw := eps[switched[0]]
	var next *episodeCount
	for _, e := range eps {
		if e.model == "pump8@5" && e.opened.After(sw.opened) && (next == nil || e.opened.Before(next.opened)) {
			next = e
		}
	}
	if next == nil || index[next.opened] > to {
		t.Fatalf("the promoted model opened no episode within the anomaly (windows %d to %d)", from, to)
	}
	for _, a := range run.alerts {
		if a.Episode == switched[0] && a.State == "closed" {
			t.Logf("episode opened at window %d by %s closed at %v (the last sample read): %s; %s opened its own at window %d",
				index[sw.opened], configured, a.TS.Format(time.TimeOnly), a.Reason, next.model, index[next.opened])
			if a.Model != configured || a.Update < 1 || a.TS.Before(sw.opened) {
				t.Errorf("close %+v", a)
			}
		}
	}
}
