package episodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func alert(episode, state string, update int, sec int) []byte {
	ts := t0.Add(time.Duration(sec) * time.Second)
	b, _ := json.Marshal(record.Alert{
		ID: record.IDSeq(record.LaneAlert, "dev", "pump1", "", ts, "pump8@1", update), TS: ts,
		Device: "dev", Stream: "pump1", Kind: "sensor", Score: 3, Threshold: 1, Severity: "major",
		Episode: episode, Update: update, State: state, Model: "pump8@1",
	})
	return b
}

func open(t *testing.T, path string, now time.Time) *Ledger {
	t.Helper()
	l, err := Open(path, nil, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func score(stream string, sec int) []byte {
	b, _ := json.Marshal(record.Score{ID: fmt.Sprint("s-", sec), TS: t0.Add(time.Duration(sec) * time.Second), Stream: stream, Score: 1, Threshold: 1, Model: "pump8@1"})
	return b
}

func decode(t *testing.T, recs [][]byte) []record.Alert {
	t.Helper()
	out := make([]record.Alert, len(recs))
	for i, r := range recs {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// leaveOpen writes a ledger at path in which e-a (pump1, last alert at
// t0+5s, update 1) is open and e-b closed, as a process killed then leaves
// it.
func leaveOpen(t *testing.T, path string) {
	t.Helper()
	l := open(t, path, t0)
	app := l.Wrap(&testkit.Lanes{})
	ctx := context.Background()
	app.Append(ctx, record.LaneScore, score("pump1", 0))
	app.Append(ctx, record.LaneAlert, alert("e-a", "open", 0, 0), alert("e-b", "open", 0, 1))
	app.Append(ctx, record.LaneAlert, alert("e-a", "escalated", 1, 5))
	app.Append(ctx, record.LaneAlert, alert("e-b", "closed", 1, 9))
	if n := l.OpenEpisodes(); n != 1 {
		t.Fatalf("%d episodes open, want e-a alone", n)
	}
	l.Close()
}

// TestOrphanClosedWhenItsStreamMovesOn: an episode still open when the
// process stopped is closed by the first score of its stream after its last
// alert: as its next update, under its model, with the restart as reason,
// at the moment it is closed; closing it again after another crash gives
// the same alert id; once its close is stored, the next start has nothing
// to close.
func TestOrphanClosedWhenItsStreamMovesOn(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "episodes.jsonl")
	leaveOpen(t, path)
	twin := filepath.Join(dir, "twin.jsonl") // the same ledger, for a second restart
	b, _ := os.ReadFile(path)
	os.WriteFile(twin, b, 0o644)

	restart := t0.Add(time.Hour)
	ctx := context.Background()
	var ids []string
	for _, p := range []string{path, twin} {
		l := open(t, p, restart)
		if l.Orphans() != 1 {
			t.Fatalf("%d orphans, want e-a", l.Orphans())
		}
		buf := &testkit.Lanes{}
		app := l.Wrap(buf)
		app.Append(ctx, record.LaneScore, score("other", 60), score("pump1", 5)) // another stream; not after e-a's last alert
		if len(buf.Lane(record.LaneAlert)) != 0 || l.Orphans() != 1 {
			t.Fatalf("closed before pump1 moved past e-a: %s", buf.Lane(record.LaneAlert))
		}
		app.Append(ctx, record.LaneScore, score("pump1", 6))
		got := decode(t, buf.Lane(record.LaneAlert))
		if len(got) != 1 || l.Orphans() != 0 {
			t.Fatalf("alerts %+v, %d orphans: want e-a's close", got, l.Orphans())
		}
		c := got[0]
		last := t0.Add(5 * time.Second)
		if c.Episode != "e-a" || c.State != "closed" || c.Update != 2 || c.Severity != "major" || c.Model != "pump8@1" ||
			c.Stream != "pump1" || c.Device != "dev" || !c.TS.Equal(restart) || c.Window != (record.Window{Start: last, End: restart}) ||
			c.Reason != Reason || c.ID == "" {
			t.Fatalf("close %+v", c)
		}
		ids = append(ids, c.ID)
		l.Close()
		restart = restart.Add(time.Minute)
	}
	if ids[0] != ids[1] {
		t.Fatalf("two restarts closed e-a under ids %v: want one", ids)
	}
	if l := open(t, path, restart); l.Orphans() != 0 {
		t.Fatalf("after its close was stored, %d orphans", l.Orphans())
	}
}

// TestOrphanThatGoesOn: a replay scores its windows again after a restart
// and gives the episode the same id: it is carried on, not closed.
func TestOrphanThatGoesOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "episodes.jsonl")
	leaveOpen(t, path)
	l := open(t, path, t0.Add(time.Hour))
	buf := &testkit.Lanes{}
	app := l.Wrap(buf)
	ctx := context.Background()
	app.Append(ctx, record.LaneScore, score("pump1", 0))
	app.Append(ctx, record.LaneAlert, alert("e-a", "open", 0, 0))
	app.Append(ctx, record.LaneScore, score("pump1", 6))
	for _, a := range decode(t, buf.Lane(record.LaneAlert)) {
		if a.State == "closed" {
			t.Fatalf("the episode that went on was closed: %+v", a)
		}
	}
	if l.Orphans() != 0 || l.OpenEpisodes() != 1 {
		t.Fatalf("%d orphans, %d open: want e-a open, no orphan", l.Orphans(), l.OpenEpisodes())
	}
}

// TestRemovedStreamsClosedAtOnce: an orphan of a stream the config no
// longer has is closed at the start.
func TestRemovedStreamsClosedAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "episodes.jsonl")
	leaveOpen(t, path)
	l := open(t, path, t0.Add(time.Hour))
	if got := l.Removed(func(s string) bool { return s == "pump1" }); len(got) != 0 {
		t.Fatalf("closes %s of a stream still configured", got)
	}
	got := decode(t, l.Removed(func(string) bool { return false }))
	if len(got) != 1 || got[0].Episode != "e-a" || got[0].State != "closed" {
		t.Fatalf("closes %+v, want e-a's", got)
	}
	buf := &testkit.Lanes{}
	if _, err := l.Wrap(buf).Append(context.Background(), record.LaneAlert, l.Removed(func(string) bool { return false })...); err != nil {
		t.Fatal(err)
	}
	if l.Orphans() != 0 || l.OpenEpisodes() != 0 {
		t.Fatalf("after the close: %d orphans, %d open", l.Orphans(), l.OpenEpisodes())
	}
}

// TestSilentOrphansClosed: an orphan whose stream scored nothing in its
// wait after the start is closed then, with SilentReason; one whose stream
// scored, if only windows from before it (a replay catching up), is left
// to its stream; a wait of 0 never ends.
func TestSilentOrphansClosed(t *testing.T) {
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl"), filepath.Join(dir, "c.jsonl")}
	for _, p := range paths {
		leaveOpen(t, p) // e-a of pump1 open, last alert at t0+5s
	}
	restart := t0.Add(time.Hour)
	now := restart
	clock := func() time.Time { return now }
	ctx := context.Background()
	tenMin := func(string) time.Duration { return 10 * time.Minute }

	// Silent: nothing before the wait ends, the close when it has.
	var logs testkit.Buffer
	l, err := Open(paths[0], slog.New(slog.NewTextHandler(&logs, nil)), clock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	now = restart.Add(4 * time.Minute)
	if closes, next := l.Silent(tenMin); len(closes) != 0 || next != 6*time.Minute {
		t.Fatalf("after 4 min: closes %s, next %v; want none and 6m", closes, next)
	}
	now = restart.Add(10 * time.Minute)
	closes, next := l.Silent(tenMin)
	got := decode(t, closes)
	if len(got) != 1 || next != 0 || got[0].Episode != "e-a" || got[0].State != "closed" || got[0].Update != 2 ||
		got[0].Reason != SilentReason || !got[0].TS.Equal(now) || l.Orphans() != 0 {
		t.Fatalf("after 10 min: closes %+v, next %v, %d orphans; want e-a's close with SilentReason, nothing left", got, next, l.Orphans())
	}
	buf := &testkit.Lanes{}
	if _, err := l.Wrap(buf).Append(ctx, record.LaneAlert, closes...); err != nil {
		t.Fatal(err)
	}
	if l.OpenEpisodes() != 0 {
		t.Fatalf("%d episodes open after the close", l.OpenEpisodes())
	}
	// Its stream comes back later with a backlog that carries it on: the
	// alert goes through, and the log says the wait was too short.
	if _, err := l.Wrap(buf).Append(ctx, record.LaneAlert, alert("e-a", "escalated", 2, 8)); err != nil {
		t.Fatal(err)
	}
	if n := len(buf.Lane(record.LaneAlert)); n != 2 || !strings.Contains(logs.String(), "orphan_after") {
		t.Fatalf("%d alerts stored, log %q: want the close and the alert after it, and a warning", n, logs.String())
	}

	// A stream that scored, windows from before the orphan's last alert:
	// left to catch up.
	now = restart
	l2, err := Open(paths[1], nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	l2.Wrap(&testkit.Lanes{}).Append(ctx, record.LaneScore, score("pump1", 2))
	now = restart.Add(time.Hour)
	if closes, next := l2.Silent(tenMin); len(closes) != 0 || next != 0 || l2.Orphans() != 1 {
		t.Fatalf("a stream that scores: closes %s, next %v, %d orphans; want it left to its stream", closes, next, l2.Orphans())
	}

	// A wait of 0: never.
	now = restart
	l3, err := Open(paths[2], nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	now = restart.Add(24 * time.Hour)
	if closes, next := l3.Silent(func(string) time.Duration { return 0 }); len(closes) != 0 || next != 0 || l3.Orphans() != 1 {
		t.Fatalf("orphan_after 0: closes %s, next %v, %d orphans", closes, next, l3.Orphans())
	}
}

// TestFailedWriteRewritesTheFile: after a write that failed (here on a
// file closed under the ledger; a full disk cuts a line short) the ledger
// does not append after it: the next write rewrites the file from memory,
// so no line is glued to a fragment.
func TestFailedWriteRewritesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "episodes.jsonl")
	l := open(t, path, t0)
	app := l.Wrap(&testkit.Lanes{})
	ctx := context.Background()
	app.Append(ctx, record.LaneAlert, alert("e-a", "open", 0, 0))
	if err := os.WriteFile(path, []byte(`{"episode":"e-x","sta`), 0o644); err != nil { // a torn line where the file was
		t.Fatal(err)
	}
	l.f.Close() // the next append fails
	app.Append(ctx, record.LaneAlert, alert("e-b", "open", 0, 1))
	app.Append(ctx, record.LaneAlert, alert("e-c", "open", 0, 2))
	l.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l2 := open(t, path, t0.Add(time.Hour))
	if n := l2.Orphans(); n != 3 || strings.Contains(string(b), "e-x") {
		t.Fatalf("%d orphans from %q: want e-a, e-b and e-c, whole, and the fragment gone", n, b)
	}
}

// TestRefusedAlertsAreNotNoted: an alert the buffer did not take changes
// nothing: a refused open leaves no episode to close, a refused escalation
// leaves the episode as it was.
func TestRefusedAlertsAreNotNoted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "episodes.jsonl")
	l := open(t, path, t0)
	buf := &testkit.Lanes{}
	app := l.Wrap(buf)
	ctx := context.Background()
	app.Append(ctx, record.LaneAlert, alert("e-a", "open", 0, 0))
	buf.Err = errors.New("disk full")
	if _, err := app.Append(ctx, record.LaneAlert, alert("e-a", "escalated", 1, 3), alert("e-b", "open", 0, 4)); err == nil {
		t.Fatal("the buffer's error was lost")
	}
	l.Close()
	l2 := open(t, path, t0.Add(time.Hour))
	buf2 := &testkit.Lanes{}
	l2.Wrap(buf2).Append(ctx, record.LaneScore, score("pump1", 10))
	got := decode(t, buf2.Lane(record.LaneAlert))
	if len(got) != 1 || got[0].Episode != "e-a" || got[0].Update != 1 {
		t.Fatalf("closes %+v, want e-a's after its open alone (update 1)", got)
	}
}

// TestTornLineSkipped: a last line cut by a power loss is skipped, the
// lines before it count.
func TestTornLineSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "episodes.jsonl")
	whole := string(alert("e-a", "open", 0, 0))
	torn := string(alert("e-b", "open", 0, 1))
	if err := os.WriteFile(path, []byte(whole+"\n"+torn[:len(torn)/2]), 0o644); err != nil {
		t.Fatal(err)
	}
	if l := open(t, path, t0); l.Orphans() != 1 || l.OpenEpisodes() != 1 {
		t.Fatalf("%d orphans, want e-a", l.Orphans())
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), `"e-b"`) || strings.Count(string(b), "\n") != 1 {
		t.Fatalf("the ledger after Open holds %q, want e-a's line alone", b)
	}
}

// TestCompaction: many episodes opened and closed leave a file of a bounded
// size, and the open ones survive the rewrites.
func TestCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "episodes.jsonl")
	l := open(t, path, t0)
	app := l.Wrap(&testkit.Lanes{})
	ctx := context.Background()
	app.Append(ctx, record.LaneAlert, alert("e-long", "open", 0, 0))
	for i := range 5000 {
		id := "e-" + string(rune('a'+i%26)) + strings.Repeat("x", i%7)
		app.Append(ctx, record.LaneAlert, alert(id+"-short", "open", 0, i), alert(id+"-short", "closed", 1, i+1))
	}
	l.Close()
	b, _ := os.ReadFile(path)
	if lines := strings.Count(string(b), "\n"); lines > 2*compactMin+2 {
		t.Fatalf("%d lines after 10001 alerts of which one episode is open", lines)
	}
	if got := decode(t, open(t, path, t0).Removed(func(string) bool { return false })); len(got) != 1 || got[0].Episode != "e-long" {
		t.Fatalf("orphans closed %+v, want e-long's", got)
	}
}

// TestOpenFailsOnAnUnwritableDirectory: the error names the ledger.
func TestOpenFailsOnAnUnwritableDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	_, err := Open(filepath.Join(file, "episodes.jsonl"), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "episode ledger") {
		t.Fatalf("Open under a file: %v", err)
	}
}

// BenchmarkAppendAlertBadger is an alert's append to a real Badger buffer
// on this disk (a Sync lane: Append returns after its fsync), straight and
// through the ledger, which fsyncs its line once the buffer has the alert.
func BenchmarkAppendAlertBadger(b *testing.B) {
	for _, ledger := range []bool{false, true} {
		b.Run(fmt.Sprintf("ledger=%t", ledger), func(b *testing.B) {
			o := buffer.DefaultBadgerOptions(filepath.Join(b.TempDir(), "buffer"))
			o.Lanes = []buffer.LaneOptions{{Name: record.LaneAlert, Priority: 2, Durability: buffer.Sync}}
			buf, err := buffer.OpenBadger(o)
			if err != nil {
				b.Fatal(err)
			}
			defer buf.Close()
			var app Appender = buf
			if ledger {
				l, err := Open(filepath.Join(b.TempDir(), "episodes.jsonl"), nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				app = l.Wrap(buf)
			}
			ctx := context.Background()
			a := alert("e-a", "escalated", 1, 5)
			for b.Loop() {
				if _, err := app.Append(ctx, record.LaneAlert, a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendAlert is the ledger's cost per alert on this disk: one
// line written and fsynced while the (in-memory) buffer takes it.
func BenchmarkAppendAlert(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "episodes.jsonl"), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	app := l.Wrap(&testkit.Lanes{})
	ctx := context.Background()
	a := alert("e-a", "escalated", 1, 5)
	for b.Loop() {
		if _, err := app.Append(ctx, record.LaneAlert, a); err != nil {
			b.Fatal(err)
		}
	}
}
