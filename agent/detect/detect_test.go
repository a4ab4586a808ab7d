package detect

import (
	"math"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func sec(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

func TestDetectorEpisodes(t *testing.T) {
	type step struct {
		score  float64
		change Change
		sev    string
	}
	tests := []struct {
		name string
		opts func(*Options)
		// scores, one per second, and the change expected at each
		steps []step
	}{
		{
			name: "1 of 1 opens and closes at once",
			opts: func(o *Options) { o.K, o.N = 1, 1 },
			steps: []step{
				{0.5, None, ""}, {1.2, Open, "warning"}, {1.3, None, ""}, {0.4, Close, "warning"}, {0.4, None, ""},
			},
		},
		{
			name: "2 of 3 ignores a lone spike",
			steps: []step{
				{0.5, None, ""}, {5, None, ""}, {0.5, None, ""}, {0.5, None, ""}, {0.5, None, ""},
			},
		},
		{
			name: "2 of 3 opens on the second exceeding window and escalates once per band",
			steps: []step{
				{1.1, None, ""}, {1.2, Open, "warning"}, {1.6, Escalate, "major"}, {1.7, None, ""},
				{3.0, Escalate, "critical"}, {1.2, None, ""}, {0.1, None, ""}, {0.1, Close, "critical"},
			},
		},
		{
			name: "opening severity is the opening window's band",
			steps: []step{
				{3, None, ""}, {3, Open, "critical"}, {3, None, ""},
			},
		},
		{
			name: "an anomaly within the cooldown reopens the episode",
			opts: func(o *Options) { o.K, o.N, o.Cooldown = 1, 1, 5*time.Second },
			steps: []step{
				{2, Open, "major"}, {0, Close, "major"}, {0, None, ""}, {1.1, Reopen, "major"}, {0, Close, "major"},
			},
		},
		{
			name: "after the cooldown a new episode opens",
			opts: func(o *Options) { o.K, o.N, o.Cooldown = 1, 1, 2*time.Second },
			steps: []step{
				{2, Open, "major"}, {0, Close, "major"}, {0, None, ""}, {0, None, ""}, {1.1, Open, "warning"},
			},
		},
		{
			name: "NaN scores exceed",
			opts: func(o *Options) { o.K, o.N = 1, 1 },
			steps: []step{
				{math.NaN(), Open, "critical"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			o.Threshold, o.CloseAfter = 1, 0 // the cases below close at the first normal window
			if tt.opts != nil {
				tt.opts(&o)
			}
			d, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				r := d.Observe(sec(i), s.score)
				if r.Change != s.change {
					t.Fatalf("window %d (score %v): change %v, want %v", i, s.score, r.Change, s.change)
				}
				if s.change != None && r.Severity != s.sev {
					t.Fatalf("window %d: severity %q, want %q", i, r.Severity, s.sev)
				}
			}
		})
	}
}

func TestEpisodeIdentityAndUpdates(t *testing.T) {
	o := DefaultOptions()
	o.Threshold, o.K, o.N, o.CloseAfter = 1, 1, 1, 0
	d, _ := New(o)
	open := d.Observe(sec(10), 1.2)
	esc := d.Observe(sec(11), 2.0)
	cl := d.Observe(sec(12), 0.1)
	if open.Update != 0 || esc.Update != 1 || cl.Update != 2 {
		t.Fatalf("updates %d %d %d, want 0 1 2", open.Update, esc.Update, cl.Update)
	}
	for _, r := range []Result{open, esc, cl} {
		if !r.EpisodeStart.Equal(sec(10)) {
			t.Fatalf("episode start %v, want %v", r.EpisodeStart, sec(10))
		}
	}
	if cl.PeakRatio != 2.0 {
		t.Fatalf("peak %v, want 2", cl.PeakRatio)
	}
}

func TestSetThreshold(t *testing.T) {
	o := DefaultOptions()
	o.Threshold, o.K, o.N, o.CloseAfter = 1, 1, 1, 0
	d, _ := New(o)
	if r := d.Observe(sec(0), 1.5); r.Change != Open {
		t.Fatalf("change %v, want Open", r.Change)
	}
	if err := d.SetThreshold(2); err != nil {
		t.Fatal(err)
	}
	if r := d.Observe(sec(1), 1.5); r.Change != Close {
		t.Fatalf("after raising the threshold: change %v, want Close", r.Change)
	}
	if err := d.SetThreshold(-1); err == nil || d.Threshold() != 2 {
		t.Fatalf("SetThreshold(-1): err %v, threshold %v; want an error and 2 kept", err, d.Threshold())
	}
}

func TestValidate(t *testing.T) {
	base := DefaultOptions()
	base.Threshold = 1
	tests := []struct {
		mod  func(*Options)
		want string
	}{
		{func(o *Options) { o.Threshold = 0 }, "Threshold"},
		{func(o *Options) { o.Threshold = math.Inf(1) }, "Threshold"},
		{func(o *Options) { o.N = 0 }, "N is 0"},
		{func(o *Options) { o.K = 4 }, "K is 4"},
		{func(o *Options) { o.Cooldown = -1 }, "Cooldown"},
		{func(o *Options) { o.CloseAfter = -1 }, "CloseAfter"},
		{func(o *Options) { o.Bands.Major = 0.5 }, "Bands"},
	}
	for _, tt := range tests {
		o := base
		tt.mod(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %q", o, err, tt.want)
		}
	}
	if err := base.Validate(); err != nil {
		t.Fatalf("defaults with a threshold: %v", err)
	}
}

// TestCloseAfterNoFlap feeds hand-made score sequences, one window a
// second, that hover at the threshold: with CloseAfter the dips inside the
// span continue the episode, so each sequence gives exactly the alerts
// listed, and the flips it rode over are reported as Resumed.
func TestCloseAfterNoFlap(t *testing.T) {
	tests := []struct {
		name       string
		closeAfter time.Duration
		cooldown   time.Duration
		scores     []float64
		want       []Change // the changes, in order, None omitted
		resumed    int
		episodes   int // distinct EpisodeStart values among the alerts
	}{
		{
			name:       "without CloseAfter a hovering score flaps",
			closeAfter: 0, cooldown: 30 * time.Second,
			scores:   []float64{1.2, 0.8, 1.3, 0.9, 1.1, 0.7, 1.2, 0.5, 0.5},
			want:     []Change{Open, Close, Reopen, Close, Reopen, Close, Reopen, Close},
			episodes: 1,
		},
		{
			name:       "dips shorter than CloseAfter continue the episode",
			closeAfter: 3 * time.Second,
			scores:     []float64{1.2, 0.8, 1.3, 0.9, 1.1, 0.7, 1.2, 0.5, 0.5, 0.5, 0.5, 0.5},
			// normal from window 7 (t=7 s): closes at t=10 s, window 10
			want:     []Change{Open, Close},
			resumed:  3,
			episodes: 1,
		},
		{
			name:       "severity escalates inside the one episode",
			closeAfter: 2 * time.Second,
			scores:     []float64{1.1, 0.5, 1.7, 0.5, 2.6, 0.5, 0.5, 0.5},
			want:       []Change{Open, Escalate, Escalate, Close},
			resumed:    2,
			episodes:   1,
		},
		{
			name:       "a gap longer than CloseAfter gives two episodes",
			closeAfter: 2 * time.Second,
			scores:     []float64{1.2, 1.2, 0.5, 0.5, 0.5, 0.5, 1.2, 0.5, 0.5, 0.5},
			want:       []Change{Open, Close, Open, Close},
			episodes:   2,
		},
		{
			name:       "a cooldown still reopens after a real close",
			closeAfter: 2 * time.Second, cooldown: 10 * time.Second,
			scores:   []float64{1.2, 0.5, 0.5, 0.5, 1.2, 0.5, 0.5, 0.5},
			want:     []Change{Open, Close, Reopen, Close},
			episodes: 1,
		},
		{
			name:       "the normal run restarts after each resume",
			closeAfter: 3 * time.Second,
			// normal 1..2, resumed at 3, normal 4..6: closes at window 7 (t=7 ≥ 4+3)
			scores:   []float64{1.2, 0.5, 0.5, 1.2, 0.5, 0.5, 0.5, 0.5},
			want:     []Change{Open, Close},
			resumed:  1,
			episodes: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			o.Threshold, o.K, o.N, o.CloseAfter, o.Cooldown = 1, 1, 1, tt.closeAfter, tt.cooldown
			d, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			var got []Change
			resumed := 0
			starts := map[time.Time]bool{}
			closeAt := -1
			for i, s := range tt.scores {
				r := d.Observe(sec(i), s)
				if r.Resumed {
					resumed++
				}
				if r.Change != None {
					got = append(got, r.Change)
					starts[r.EpisodeStart] = true
				}
				if r.Change == Close {
					closeAt = i
					if r.InEpisode {
						t.Fatalf("window %d closed the episode but InEpisode is true", i)
					}
				} else if (r.Change == Open || r.Change == Reopen || r.Resumed) && !r.InEpisode {
					t.Fatalf("window %d: change %v resumed %v but not InEpisode", i, r.Change, r.Resumed)
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("changes %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("changes %v, want %v", got, tt.want)
				}
			}
			if resumed != tt.resumed {
				t.Fatalf("resumed %d, want %d", resumed, tt.resumed)
			}
			if len(starts) != tt.episodes {
				t.Fatalf("%d episodes, want %d", len(starts), tt.episodes)
			}
			if tt.name == "dips shorter than CloseAfter continue the episode" && closeAt != 10 {
				t.Fatalf("closed at window %d, want 10", closeAt)
			}
		})
	}
}

// TestCloseAfterKeepsUpdatesInOrder: one alert stream, updates 0, 1, 2, ...
func TestCloseAfterKeepsUpdatesInOrder(t *testing.T) {
	o := DefaultOptions()
	o.Threshold, o.K, o.N, o.CloseAfter = 1, 2, 3, 5*time.Second
	d, _ := New(o)
	scores := []float64{1.1, 1.2, 0.9, 0.9, 1.6, 1.6, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2}
	var updates []int
	for i, s := range scores {
		if r := d.Observe(sec(i), s); r.Change != None {
			updates = append(updates, r.Update)
		}
	}
	if len(updates) != 3 || updates[0] != 0 || updates[1] != 1 || updates[2] != 2 {
		t.Fatalf("updates %v, want [0 1 2] (open, escalate, close)", updates)
	}
}

func TestTop(t *testing.T) {
	got := Top([]string{"a", "b", "c", "d"}, []float64{1, 6, 0, 3}, 2)
	if len(got) != 2 || got[0].Name != "b" || got[1].Name != "d" {
		t.Fatalf("Top = %+v, want b then d", got)
	}
	if math.Abs(got[0].Share-0.6) > 1e-12 || math.Abs(got[1].Share-0.3) > 1e-12 {
		t.Fatalf("shares %v %v, want 0.6 0.3", got[0].Share, got[1].Share)
	}
	if z := Top([]string{"a"}, []float64{0}, 3); len(z) != 1 || z[0].Share != 0 {
		t.Fatalf("all-zero errors: %+v", z)
	}
}

func BenchmarkObserve(b *testing.B) {
	o := DefaultOptions()
	o.Threshold = 1
	d, _ := New(o)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		d.Observe(sec(i), float64(i%7)/4)
		i++
	}
}

func TestObserveExceedingOpensAWarningWhateverTheScore(t *testing.T) {
	o := DefaultOptions()
	o.Threshold = 1
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(0, 0)
	if r := d.ObserveExceeding(t0, 0.2, true); !r.Exceeds || r.Anomalous || r.Change != None || r.Ratio != 0.2 {
		t.Fatalf("first stuck window: %+v, want exceeding, not yet anomalous (2 of 3)", r)
	}
	r := d.ObserveExceeding(t0.Add(time.Second), 0.3, true)
	if r.Change != Open || r.Severity != "warning" {
		t.Fatalf("second stuck window: %+v, want an open warning", r)
	}
	if r := d.Observe(t0.Add(2*time.Second), 0.3); r.Exceeds {
		t.Fatalf("a plain window below the threshold exceeds: %+v", r)
	}
}

func TestStuckLimits(t *testing.T) {
	if l := StuckLimits([]int{1, 17}, 30, 10); len(l) != 2 || l[0] != 30 || l[1] != 170 {
		t.Fatalf("limits %v, want [30 170]: at least a window, else ten times the run", l)
	}
	if l := StuckLimits([]int{1, 17}, 30, 0); l != nil {
		t.Fatalf("limits %v with factor 0, want none (off)", l)
	}
	if l := StuckLimits(nil, 30, 10); l != nil {
		t.Fatalf("limits %v without runs, want none", l)
	}
}

func TestStuck(t *testing.T) {
	for _, c := range []struct {
		runs, limits []int
		want         int
	}{
		{[]int{1, 5}, []int{3, 6}, -1},
		{[]int{1, 6}, []int{3, 6}, 1},
		{[]int{4, 9}, []int{3, 6}, 0},
		{[]int{9, 9}, nil, -1},
		{[]int{9, 9}, []int{3}, -1},
	} {
		if got := Stuck(c.runs, c.limits); got != c.want {
			t.Errorf("Stuck(%v, %v) = %d, want %d", c.runs, c.limits, got, c.want)
		}
	}
}
