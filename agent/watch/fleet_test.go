package watch

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// fleetMsg is one message of a simulated fleet.
type fleetMsg struct {
	topic   string
	payload []byte
	at      time.Time
}

// fleet returns the messages of n simulated devices as seen at t0: every
// tenth is offline, every seventh went silent five minutes ago (stale),
// and some have open episodes of rising severity.
func fleet(n int) []fleetMsg {
	var out []fleetMsg
	for i := range n {
		id := fmt.Sprintf("dev-%04d", i)
		at := t0
		if i%7 == 3 {
			at = t0.Add(-5 * time.Minute)
		}
		state := "online"
		if i%10 == 9 {
			state = "offline"
		}
		out = append(out,
			fleetMsg{"vigil/" + id + "/status", fmt.Appendf(nil, `{"state":%q,"since":"2025-06-01T07:00:00Z","version":"1.2.0","birth_seq":1,"models":["pump@3"]}`, state), at},
			fleetMsg{"vigil/" + id + "/health", fmt.Appendf(nil, `{"uptime_s":100,"models":{"pump":"pump@3","fan":"fan@1"},"backlog":{"score":{"records":%d},"alert":{"records":%d}}}`, i*3, i%4), at})
		sev := []string{"", "", "warning", "", "major", "", "critical"}[i%7]
		if sev != "" && state == "online" {
			for k := range i % 3 { // a few alerts each, so rates differ
				out = append(out, fleetMsg{"vigil/" + id + "/alerts/pump", fmt.Appendf(nil,
					`{"seq":%d,"ts":"2025-06-01T07:59:00Z","stream":"pump","severity":%q,"state":"open","score":3,"threshold":1}`, k, sev), at})
			}
		}
	}
	return out
}

func fleetView(n int) *view {
	v := newView("vigil")
	for _, m := range fleet(n) {
		v.apply(m.topic, m.payload, false, m.at)
	}
	return v
}

func TestCompactGolden(t *testing.T) {
	for _, tc := range []struct {
		name        string
		devices     int
		cols, lines int
		filter      Filter
	}{
		{"compact-12-80x24", 12, 80, 23, Filter{}},
		{"compact-40-80x12", 40, 80, 11, Filter{}},
		{"compact-40-200x60", 40, 200, 59, Filter{}},
		{"compact-filter-offline", 40, 80, 23, Filter{States: []string{"offline"}}},
		{"compact-filter-pattern", 40, 80, 23, Filter{Devices: "dev-001*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fleetView(tc.devices).renderCompact("tcp://broker:1883", true, 0, t0, tc.filter, time.Minute, tc.cols, tc.lines)
			if n := strings.Count(got, "\n"); n > tc.lines {
				t.Errorf("%d lines for a %d-line screen", n, tc.lines)
			}
			for l := range strings.SplitSeq(got, "\n") {
				if n := len([]rune(l)); n > tc.cols {
					t.Errorf("a line of %d columns on a %d-column screen: %q", n, tc.cols, l)
				}
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("render differs from %s (run with -update to accept):\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

// TestCompactWorstFirst checks the order: offline, stale, then online
// devices by their worst open episode and alert rate; the fold counts the
// rest.
func TestCompactWorstFirst(t *testing.T) {
	v := fleetView(70)
	rows := v.rows(Filter{}, t0, time.Minute)
	if len(rows) != 70 {
		t.Fatalf("%d rows; want 70", len(rows))
	}
	for i := 1; i < len(rows); i++ {
		a, b := rows[i-1], rows[i]
		if a.rank() < b.rank() || (a.rank() == b.rank() && a.rate < b.rate) {
			t.Fatalf("row %d (%s %s %s %.1f) before row %d (%s %s %s %.1f)", i-1, a.id, a.state, a.severity, a.rate, i, b.id, b.state, b.severity, b.rate)
		}
	}
	if rows[0].state != stateOffline || rows[len(rows)-1].severity != "" {
		t.Errorf("first %+v, last %+v", rows[0], rows[len(rows)-1])
	}
	frame := v.renderCompact("b", true, 0, t0, Filter{}, time.Minute, 80, 23)
	if !strings.Contains(frame, "… 51 more device(s) below") {
		t.Errorf("the fold does not count the 51 devices below it:\n%s", frame)
	}
}

func TestEpisodesAndRate(t *testing.T) {
	v := newView("vigil")
	alert := func(stream, key, sev, state string, at time.Time) {
		v.apply("vigil/d/alerts/"+stream, fmt.Appendf(nil, `{"stream":%q,"key":%q,"severity":%q,"state":%q}`, stream, key, sev, state), false, at)
	}
	alert("pump", "", "warning", "open", t0)
	alert("web", "u1", "critical", "open", t0)
	alert("web", "u1", "critical", "escalated", t0.Add(time.Second))
	d := v.devices["d"]
	if ep, sev := d.worst(); ep != "web/u1" || sev != "critical" {
		t.Errorf("worst = %q %q; want web/u1 critical", ep, sev)
	}
	alert("web", "u1", "critical", "closed", t0.Add(2*time.Second))
	if ep, sev := d.worst(); ep != "pump" || sev != "warning" {
		t.Errorf("after the close, worst = %q %q; want pump warning", ep, sev)
	}
	if r := d.rate.perMinute(t0.Add(30 * time.Second)); r != 4 {
		t.Errorf("rate after 30 s = %v; want 4", r)
	}
	if r := d.rate.perMinute(t0.Add(61 * time.Second)); r != 1 {
		t.Errorf("rate after 61 s = %v; want 1 (the alerts of t0 and t0+1s have left the minute)", r)
	}
	if r := d.rate.perMinute(t0.Add(time.Hour)); r != 0 {
		t.Errorf("rate an hour later = %v; want 0", r)
	}
	if st := d.state(t0.Add(30*time.Second), time.Minute); st != stateOnline {
		t.Errorf("state 30 s after the last message = %s", st)
	}
	if st := d.state(t0.Add(2*time.Minute), time.Minute); st != stateStale {
		t.Errorf("state 2 min after the last message = %s; want stale", st)
	}
}

func TestAutoLayout(t *testing.T) {
	w := &watcher{opts: DefaultOptions(), view: fleetView(3)}
	w.opts.Now = func() time.Time { return t0 }
	if f := w.frame(true, 0); strings.Contains(f, "WORST OPEN EPISODE") {
		t.Errorf("3 devices on 80×24 are not shown in detail:\n%s", f)
	}
	w.view = fleetView(6)
	if f := w.frame(true, 0); !strings.Contains(f, "WORST OPEN EPISODE") {
		t.Errorf("6 devices are not shown compact:\n%s", f)
	}
	w.opts.Mode = ModeDetail
	if f := w.frame(true, 0); strings.Contains(f, "WORST OPEN EPISODE") {
		t.Errorf("ModeDetail is compact")
	}
	w.view, w.opts.Mode = fleetView(2), ModeAuto
	w.opts.Size = func() (int, int) { return 80, 8 } // two devices do not fit 8 lines in detail
	if f := w.frame(true, 0); !strings.Contains(f, "WORST OPEN EPISODE") {
		t.Errorf("a detail taller than the terminal is not replaced by the compact view:\n%s", f)
	}
}

func TestControlCharactersEscaped(t *testing.T) {
	v := newView("vigil")
	v.apply("vigil/evil\x1b[2J/status", []byte(`{"state":"online","version":"1\n2"}`), false, t0)
	v.apply("vigil/evil\x1b[2J/alerts/s", []byte("{\"stream\":\"s\\u001b[31m\",\"key\":\"a\\nb\",\"severity\":\"major\",\"state\":\"open\"}"), false, t0)
	for _, f := range []string{
		v.renderCompact("b", true, 0, t0, Filter{}, time.Minute, 80, 23),
		v.render("b", true, 0, t0),
	} {
		if strings.ContainsAny(f, "\x1b") || strings.Contains(f, "a\nb") || strings.Contains(f, "1\n2") {
			t.Errorf("a control character reached the screen:\n%q", f)
		}
	}
}

func TestFilterOptions(t *testing.T) {
	o := DefaultOptions()
	o.Broker, o.Out = "tcp://127.0.0.1:1", &testkit.Buffer{}
	o.Mode, o.Filter = "wide", Filter{Devices: "[", States: []string{"asleep"}}
	err := o.validate()
	for _, w := range []string{"Options.Mode", "Options.Filter.Devices", "Options.Filter.States"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not name %s", err, w)
		}
	}
}

func BenchmarkApply(b *testing.B) {
	msgs := fleet(1000)
	v := newView("vigil")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m := msgs[i%len(msgs)]
		v.apply(m.topic, m.payload, false, t0)
		i++
	}
}

func BenchmarkRenderCompact(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			v := fleetView(n)
			b.ReportAllocs()
			for b.Loop() {
				v.renderCompact("tcp://broker:1883", true, 0, t0, Filter{}, time.Minute, 200, 59)
			}
		})
	}
}
