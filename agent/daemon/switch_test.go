package daemon

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/models"
)

// The switch tests replay a pump CSV with faults (3000 rows, one a second:
// 295 windows of 60 with hop 10) and switch models mid-stream. A switch
// rebuilds the pipeline and the replay starts over from the file's first
// row: the stream's timeline, carried over (pipeline.Adopt), makes what was
// read before late, and its duplicate filter the last sample taken.
const (
	switchRows    = 3000
	switchWindows = (switchRows-60)/10 + 1
)

// replayRun is what a replay left in the buffer for stream pump1.
type replayRun struct {
	scores []record.Score
	alerts []record.Alert
}

// runReplay replays the CSV at speed (0: unpaced) with long shadow runs
// and trusted key pub, calls during(d) once the daemon runs, waits until
// every window was scored, stops and reads the buffer.
func runReplay(t *testing.T, speed int, pub []byte, during func(d *Daemon)) replayRun {
	t.Helper()
	cfgPath, dataDir := testConfig(t, switchRows, fmt.Sprintf("models: {trusted_keys: [%q], shadow: {windows: 100000000}}\n", models.EncodePublicKey(pub)))
	rewrite(t, cfgPath, "speed: 0,", fmt.Sprintf("speed: %d,", speed))
	d, stop := startDaemon(t, cfgPath)
	if during != nil {
		during(d)
	}
	waitFor(t, 90*time.Second, func() bool { return d.Stats().Streams["pump1"].Windows >= switchWindows })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	b := reopen(t, dataDir)
	var run replayRun
	for _, s := range readAll[record.Score](t, b, record.LaneScore) {
		if s.Stream == "pump1" {
			run.scores = append(run.scores, s)
		}
	}
	for _, a := range readAll[record.Alert](t, b, record.LaneAlert) {
		if a.Stream == "pump1" {
			run.alerts = append(run.alerts, a)
		}
	}
	b.Close()
	return run
}

// segment is a span of windows one model scored.
type segment struct {
	model      string
	start, end time.Time // window ends, inclusive
}

// checkSwitched compares a run that switched models with the baseline:
// every window scored exactly once; alert ids unique; in each model's
// segment, the baseline's alerts of episodes that opened well inside it
// (5 windows after its start, but for the first: the detector starts
// afresh at a switch) are
// there with the id that model version gives them: the baseline's own ids
// under the configured model. It returns the segments.
func checkSwitched(t *testing.T, base, run replayRun, wantModels []string) []segment {
	t.Helper()
	byEnd := map[time.Time]int{}
	for _, s := range run.scores {
		byEnd[s.TS]++
	}
	for _, s := range base.scores {
		if n := byEnd[s.TS]; n != 1 {
			t.Errorf("window ending %v scored %d times", s.TS, n)
		}
	}
	if len(run.scores) != len(base.scores) {
		t.Errorf("%d windows scored, the baseline %d", len(run.scores), len(base.scores))
	}
	scores := slices.Clone(run.scores)
	slices.SortFunc(scores, func(a, b record.Score) int { return a.TS.Compare(b.TS) })
	var segs []segment
	for _, s := range scores {
		if len(segs) == 0 || segs[len(segs)-1].model != s.Model {
			segs = append(segs, segment{model: s.Model, start: s.TS})
		}
		segs[len(segs)-1].end = s.TS
	}
	var models []string
	for _, s := range segs {
		models = append(models, s.model)
	}
	if !slices.Equal(models, wantModels) {
		t.Fatalf("models in window order: %v, want %v", models, wantModels)
	}
	ids := map[string]record.Alert{}
	for _, a := range run.alerts {
		if _, dup := ids[a.ID]; dup {
			t.Errorf("alert id %s twice", a.ID)
		}
		ids[a.ID] = a
	}
	opened := map[string]time.Time{}
	for _, a := range base.alerts {
		if a.Update == 0 {
			opened[a.Episode] = a.TS
		}
	}
	for i, seg := range segs {
		margin := 50 * time.Second
		if i == 0 {
			margin = 0 // the first model ran from the start, as in the baseline
		}
		compared := 0
		for _, a := range base.alerts {
			o, ok := opened[a.Episode]
			if !ok || o.Before(seg.start.Add(margin)) || a.TS.After(seg.end) {
				continue
			}
			id := record.IDSeq(record.LaneAlert, "test-device-01", "pump1", "", a.TS, seg.model, 0)
			got, ok := ids[id]
			if !ok {
				t.Errorf("segment %s: the baseline's alert at %v (%s, update %d) is missing", seg.model, a.TS, a.State, a.Update)
				continue
			}
			if got.Model != seg.model || got.State != a.State || got.Update != a.Update || got.Severity != a.Severity {
				t.Errorf("segment %s: alert at %v is %+v, the baseline's %+v", seg.model, a.TS, got, a)
			}
			compared++
		}
		t.Logf("segment %s, windows %v to %v: %d of the baseline's alerts found with the ids of %s", seg.model, seg.start.Format(time.TimeOnly), seg.end.Format(time.TimeOnly), compared, seg.model)
	}
	return segs
}

// TestNoAlertLostOrDuplicatedAcrossPromotionAndRollback (issue 18 item 2,
// "no alert and no score is lost across a promotion or rollback, and ids
// stay stable per model version"): a deterministic replay is run once
// without a switch, then with a model in shadow promoted mid-stream and
// rolled back later, then with a shadow run rolled back mid-stream. Every
// window is scored exactly once, alert ids are unique, and alerts keep
// the baseline's ids under the configured model.
func TestNoAlertLostOrDuplicatedAcrossPromotionAndRollback(t *testing.T) {
	pub, priv, _ := models.GenerateKey()
	base := runReplay(t, 0, pub, nil)
	if len(base.scores) != switchWindows || len(base.alerts) == 0 {
		t.Fatalf("baseline: %d scores, %d alerts", len(base.scores), len(base.alerts))
	}
	configured := base.scores[0].Model
	v5 := newVersion(t, "5", priv, "pump8", 0)
	windows := func(d *Daemon) uint64 { return d.Stats().Streams["pump1"].Windows }

	t.Run("promote then rollback", func(t *testing.T) {
		var promoteTook, rollbackTook time.Duration
		run := runReplay(t, 300, pub, func(d *Daemon) {
			deployDirect(t, d, v5, "5")
			waitFor(t, 60*time.Second, func() bool { return windows(d) >= switchWindows/3 })
			t0 := time.Now()
			if rep := command(t, d, cmdPromote, `{"id":"p","stream":"pump1"}`); !rep.OK {
				t.Fatalf("promote: %+v", rep)
			}
			promoteTook = time.Since(t0)
			waitFor(t, 60*time.Second, func() bool { return windows(d) >= 2*switchWindows/3 })
			t0 = time.Now()
			if rep := command(t, d, cmdRollback, `{"id":"r","stream":"pump1"}`); !rep.OK || !strings.Contains(rep.Message, "pump8@5") {
				t.Fatalf("rollback: %+v", rep)
			}
			rollbackTook = time.Since(t0)
		})
		t.Logf("promote took %v, rollback %v (command to the new pipeline running)", promoteTook.Round(time.Millisecond), rollbackTook.Round(time.Millisecond))
		checkSwitched(t, base, run, []string{configured, "pump8@5", configured})
	})
	t.Run("shadow rolled back", func(t *testing.T) {
		run := runReplay(t, 300, pub, func(d *Daemon) {
			deployDirect(t, d, v5, "5")
			waitFor(t, 60*time.Second, func() bool { return windows(d) >= switchWindows/2 })
			if rep := command(t, d, cmdRollback, `{"id":"r","stream":"pump1"}`); !rep.OK || !strings.Contains(rep.Message, "pump8@5 rolled back") {
				t.Fatalf("rollback: %+v", rep)
			}
		})
		checkSwitched(t, base, run, []string{configured})
		// Nothing switched the serving model: the very same alerts.
		if len(run.alerts) != len(base.alerts) {
			t.Errorf("%d alerts, the baseline %d", len(run.alerts), len(base.alerts))
		}
		for i := range min(len(run.alerts), len(base.alerts)) {
			if run.alerts[i].ID != base.alerts[i].ID {
				t.Errorf("alert %d: id %s, the baseline's %s", i, run.alerts[i].ID, base.alerts[i].ID)
			}
		}
	})
}
