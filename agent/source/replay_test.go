package source

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeSimCSV writes n simulated rows in SKAB's format and returns the
// file's path.
func writeSimCSV(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sim.csv")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultSimulatorOptions()
	o.Faults = true
	if err := WriteCSV(f, n, o); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func readTable(t *testing.T, path string) *Table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := ReadCSV(f, CSVOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestReplaySpeeds(t *testing.T) {
	path := writeSimCSV(t, 300)
	tab := readTable(t, path)
	for _, tt := range []struct {
		speed float64
		took  time.Duration // of clock time
	}{
		{0, 0},
		{1, 299 * time.Second},
		{10, 29900 * time.Millisecond},
	} {
		clock := newFakeClock()
		start := clock.Now()
		sink := &fakeSink{}
		o := DefaultReplayOptions()
		o.Path, o.Speed, o.Clock, o.Stream = path, tt.speed, clock, "skab"
		runNew(t, NewReplay, o, sink)
		if got := clock.Now().Sub(start); got != tt.took {
			t.Errorf("speed %v: took %v of clock time, want %v", tt.speed, got, tt.took)
		}
		ins := sink.Inputs()
		if len(ins) != 300 {
			t.Fatalf("speed %v: %d inputs, want 300", tt.speed, len(ins))
		}
		for i, in := range ins {
			if !in.Time.Equal(tab.Times[i]) || !slices.Equal(in.Values, tab.Values[i]) ||
				!slices.Equal(in.Channels, PumpChannels()) || in.Stream != "skab" || in.Source != "replay" {
				t.Fatalf("speed %v: input %d = %+v, want %v %v", tt.speed, i, in, tab.Times[i], tab.Values[i])
			}
		}
	}
}

func TestReplayLoopAndRetime(t *testing.T) {
	path := writeSimCSV(t, 10)
	tab := readTable(t, path)
	clock := newFakeClock()
	start := clock.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink := &fakeSink{putHook: func(n int) {
		if n == 25 {
			cancel()
		}
	}}
	o := DefaultReplayOptions()
	o.Path, o.Speed, o.Clock, o.Loop, o.Retime = path, 0, clock, true, true
	r, err := NewReplay(o, sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	ins := sink.Inputs()
	if len(ins) != 25 {
		t.Fatalf("%d inputs", len(ins))
	}
	for i, in := range ins {
		// Retimed to start at the clock's time, one second apart, going
		// on across passes.
		if want := start.Add(time.Duration(i) * time.Second); !in.Time.Equal(want) {
			t.Fatalf("input %d at %v, want %v", i, in.Time, want)
		}
		if !slices.Equal(in.Values, tab.Values[i%10]) {
			t.Fatalf("input %d: values of row %d expected", i, i%10)
		}
	}
}

func TestReplayBadRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.csv")
	os.WriteFile(path, []byte("datetime;A;B\r\n"+
		"2020-03-09 10:00:00;1;2\r\n"+
		"2020-03-09 10:00:01;oops;2\r\n"+
		"2020-03-09 10:00:02;NaN;2\r\n"+
		"2020-03-09 10:00:03;1\r\n"+
		"2020-03-09 10:00:04;3;4\r\n"), 0o600)
	var logs bytes.Buffer
	counter := &fakeCounter{}
	sink := &fakeSink{}
	o := DefaultReplayOptions()
	o.Path, o.Speed, o.Counter = path, 0, counter
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	runNew(t, NewReplay, o, sink)
	if sink.Len() != 2 {
		t.Fatalf("%d inputs, want 2", sink.Len())
	}
	if counter.Get(DropInvalid) != 1 || counter.Get(DropNonFinite) != 1 || counter.Get(DropMissing) != 1 {
		t.Fatalf("drops %v", counter.n)
	}
	// Logged, rate-limited: the first bad row with its line; the others
	// are suppressed within 10 s.
	if got := strings.Count(logs.String(), "dropped a bad row"); got != 1 || !strings.Contains(logs.String(), "line=3") {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

func TestReplayErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.csv")
	os.WriteFile(good, []byte("datetime;A\n2020-03-09 10:00:00;1\n"), 0o600)
	noHeader := filepath.Join(dir, "nohead.csv")
	os.WriteFile(noHeader, []byte("2020-03-09 10:00:00;1\n"), 0o600)
	tests := []struct {
		name string
		edit func(*ReplayOptions)
		want string
	}{
		{"no path", func(o *ReplayOptions) { o.Path = "" }, "Path: required"},
		{"missing file", func(o *ReplayOptions) { o.Path = filepath.Join(dir, "nope.csv") }, "no such file"},
		{"no header", func(o *ReplayOptions) { o.Path = noHeader }, "no header row"},
		{"unknown column", func(o *ReplayOptions) { o.CSV.Columns = []string{"Z"} }, `Columns: no column "Z"`},
		{"bad speed", func(o *ReplayOptions) { o.Speed = -2 }, "Speed"},
		{"bad format", func(o *ReplayOptions) { o.Format = "xml" }, "Format"},
		{"jsonl without time", func(o *ReplayOptions) {
			o.Format = FormatJSONL
			o.Payload.Fields = map[string]string{"A": "a"}
		}, "Payload.TimeField"},
	}
	for _, tt := range tests {
		o := DefaultReplayOptions()
		o.Path = good
		tt.edit(&o)
		_, err := NewReplay(o, &fakeSink{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestReplayJSONL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.jsonl")
	os.WriteFile(path, []byte(`{"ts":1718000000000,"dev":"p1","m":{"a":1,"b":2}}
{"ts":1718000001000,"dev":"p2","m":{"a":3,"b":4}}

{"ts":1718000002000,"dev":"p1","m":{"a":"x","b":4}}
not json
{"ts":1718000003000,"dev":"p1","m":{"a":5}}
{"ts":1718000004000,"dev":"p1","m":{"a":7,"b":8}}
`+`{"ts":1718000005000,"dev":"p1","m":{"a":9,"b":10},"pad":"`+strings.Repeat("x", 300)+`"}
{"ts":1718000006000,"dev":"p1","m":{"a":11,"b":12}}`), 0o600)
	clock := newFakeClock()
	counter := &fakeCounter{}
	sink := &fakeSink{}
	o := DefaultReplayOptions()
	o.Path, o.Clock, o.Counter, o.MaxLineBytes = path, clock, counter, 200
	o.Payload = PayloadOptions{Fields: map[string]string{"b": "m.b", "a": "m.a"}, Channels: []string{"a", "b"}, TimeField: "ts", StreamField: "dev"}
	start := clock.Now()
	runNew(t, NewReplay, o, sink)
	ins := sink.Inputs()
	want := [][]float64{{1, 2}, {3, 4}, {7, 8}, {11, 12}}
	if len(ins) != len(want) {
		t.Fatalf("%d inputs %+v", len(ins), ins)
	}
	for i, in := range ins {
		if !slices.Equal(in.Values, want[i]) || !slices.Equal(in.Channels, []string{"a", "b"}) {
			t.Errorf("input %d = %+v", i, in)
		}
	}
	if ins[1].Stream != "p2" || ins[0].Stream != "p1" {
		t.Errorf("streams %q %q", ins[0].Stream, ins[1].Stream)
	}
	if got := clock.Now().Sub(start); got != 6*time.Second {
		t.Errorf("took %v at speed 1, want 6s", got)
	}
	if counter.Get(DropInvalid) != 3 || counter.Get(DropMissing) != 1 {
		t.Errorf("drops %v, want 3 invalid (string, not JSON, too long) and 1 missing", counter.n)
	}
}

func TestReplayEventsJSONL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	f, _ := os.Create(path)
	ko := DefaultKioskOptions()
	if err := WriteEventsJSONL(f, 100, ko); err != nil {
		t.Fatal(err)
	}
	// A line holding an array with two bad events and a good one.
	f.WriteString(`[{"event_name":"x"},{"event_name":"y","user_id":"u","properties":{"kiosk_id":"kiosk-9"}},{"user_id":"u"}]` + "\n")
	// A recording's time is its own: one dated ahead of the clock replays.
	f.WriteString(`{"event_name":"z","user_id":"u","timestamp":"2999-01-01T00:00:00Z","properties":{"kiosk_id":"kiosk-9"}}` + "\n")
	f.Close()
	sink, counter := &fakeSink{}, &fakeCounter{}
	o := DefaultReplayOptions()
	o.Path, o.Speed, o.Payload.Events, o.Payload.StreamField, o.Counter = path, 0, true, "kiosk_id", counter
	runNew(t, NewReplay, o, sink)
	ins := sink.Inputs()
	if len(ins) != 102 || counter.Get(DropMissing) != 2 {
		t.Fatalf("%d inputs, drops %v", len(ins), counter.n)
	}
	for _, in := range ins {
		if in.Event == nil || !strings.HasPrefix(in.Stream, "kiosk-") || in.Event.UserID == "" || !in.Time.Equal(in.Event.Time) {
			t.Fatalf("input %+v", in)
		}
	}
}

func TestReplayRealSKAB(t *testing.T) {
	path := filepath.Join(skabDir, "valve1", "0.csv")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		t.Skipf("SKAB data not present at %s", path)
	}
	sink := &fakeSink{}
	o := DefaultReplayOptions()
	o.Path, o.Speed = path, 0
	o.CSV.TimeFormat = SKABTimeLayout
	r, err := NewReplay(o, sink)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Channels(), PumpChannels()) {
		t.Fatalf("channels %q", r.Channels())
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sink.Len() != 1147 {
		t.Fatalf("%d inputs, want 1147", sink.Len())
	}
}
