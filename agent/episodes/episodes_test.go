package episodes

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/record"
)

// memory is an Appender that keeps what it accepts, or refuses with err.
type memory struct {
	lanes map[string][][]byte
	err   error
}

func (m *memory) Append(_ context.Context, lane string, data ...[]byte) ([]uint64, error) {
	if m.err != nil {
		return nil, m.err
	}
	if m.lanes == nil {
		m.lanes = map[string][][]byte{}
	}
	m.lanes[lane] = append(m.lanes[lane], data...)
	return make([]uint64, len(data)), nil
}

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

func open(t *testing.T, path string) *Ledger {
	t.Helper()
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
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

// TestOrphansAreClosedOnce: an episode still open when the process stops
// is closed at the next start, as its next update, under its model, with
// the restart as reason; closing it twice (a crash during the start) gives
// the same alert id; once its close is stored, the next start has nothing
// to close.
func TestOrphansAreClosedOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "episodes.jsonl")
	buf := &memory{}
	l := open(t, path)
	if len(l.Orphans(t0)) != 0 {
		t.Fatal("a new ledger has orphans")
	}
	app := l.Wrap(buf)
	ctx := context.Background()
	app.Append(ctx, record.LaneScore, []byte(`{"id":"s-1"}`)) // not an alert: ignored
	app.Append(ctx, record.LaneAlert, alert("e-a", "open", 0, 0), alert("e-b", "open", 0, 1))
	app.Append(ctx, record.LaneAlert, alert("e-a", "escalated", 1, 5))
	app.Append(ctx, record.LaneAlert, alert("e-b", "closed", 1, 9))
	if n := l.OpenEpisodes(); n != 1 {
		t.Fatalf("%d episodes open, want e-a alone", n)
	}
	l.Close() // as a SIGKILL leaves it: nothing closed the episode

	var first []record.Alert
	restart := t0.Add(time.Hour)
	for range 2 { // a start that stops before it stores the closes, then another
		l2 := open(t, path)
		got := decode(t, l2.Orphans(restart))
		if len(got) != 1 {
			t.Fatalf("orphans %+v, want e-a's close", got)
		}
		c := got[0]
		last := t0.Add(5 * time.Second)
		if c.Episode != "e-a" || c.State != "closed" || c.Update != 2 || c.Severity != "major" || c.Model != "pump8@1" ||
			c.Stream != "pump1" || c.Device != "dev" || !c.TS.Equal(restart) || c.Window != (record.Window{Start: last, End: restart}) ||
			c.Reason != Reason || c.ID == "" {
			t.Fatalf("close %+v", c)
		}
		if first != nil && first[0].ID != c.ID {
			t.Fatalf("the second start's close has id %s, the first's %s: want the same", c.ID, first[0].ID)
		}
		first = got
		restart = restart.Add(time.Minute)
		l2.Close()
	}

	l3 := open(t, path)
	if _, err := l3.Wrap(buf).Append(ctx, record.LaneAlert, l3.Orphans(restart)...); err != nil {
		t.Fatal(err)
	}
	l3.Close()
	if got := open(t, path).Orphans(t0); len(got) != 0 {
		t.Fatalf("after its close was stored, orphans %s", got)
	}
}

// TestRefusedAlertsAreNotNoted: an alert the buffer did not take opened no
// episode the operator saw, and has nothing to close.
func TestRefusedAlertsAreNotNoted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "episodes.jsonl")
	l := open(t, path)
	buf := &memory{err: errors.New("disk full")}
	if _, err := l.Wrap(buf).Append(context.Background(), record.LaneAlert, alert("e-a", "open", 0, 0)); err == nil {
		t.Fatal("the buffer's error was lost")
	}
	l.Close()
	if got := open(t, path).Orphans(t0); len(got) != 0 {
		t.Fatalf("orphans %s of a refused alert", got)
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
	got := decode(t, open(t, path).Orphans(t0))
	if len(got) != 1 || got[0].Episode != "e-a" {
		t.Fatalf("orphans %+v, want e-a's close", got)
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
	l := open(t, path)
	app := l.Wrap(&memory{})
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
	got := decode(t, open(t, path).Orphans(t0))
	if len(got) != 1 || got[0].Episode != "e-long" {
		t.Fatalf("orphans %+v, want e-long's close", got)
	}
}

// TestOpenFailsOnAnUnwritableDirectory: the error names the ledger.
func TestOpenFailsOnAnUnwritableDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	_, err := Open(filepath.Join(file, "episodes.jsonl"), nil)
	if err == nil || !strings.Contains(err.Error(), "episode ledger") {
		t.Fatalf("Open under a file: %v", err)
	}
}
