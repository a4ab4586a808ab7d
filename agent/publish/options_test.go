package publish

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Options)
		want   []string // every substring must appear; none means valid
	}{
		{"defaults with broker and device", func(*Options) {}, nil},
		{"missing broker and device", func(o *Options) { o.Broker, o.Device = "", "" },
			[]string{"Options.Broker: required", `Options.Device: "" must not be empty`}},
		{"unknown scheme", func(o *Options) { o.Broker = "http://x:1" }, []string{`Options.Broker: unknown scheme "http"`}},
		{"no host", func(o *Options) { o.Broker = "tcp://" }, []string{"has no host:port"}},
		{"credentials in URL", func(o *Options) { o.Broker = "tcp://u:p@x:1" }, []string{"credentials in the URL"}},
		{"wildcards in device", func(o *Options) { o.Device = "a+b" }, []string{"Options.Device", "must not contain"}},
		{"empty prefix level", func(o *Options) { o.Prefix = "acme//vigil" }, []string{"Options.Prefix", `level ""`}},
		{"multi-level prefix", func(o *Options) { o.Prefix = "acme/vigil" }, nil},
		{"QoS 2", func(o *Options) { o.AlertQoS = 2 }, []string{"Options.AlertQoS: must be 0 or 1, got 2"}},
		{"in-flight", func(o *Options) { o.InFlight = 0 }, []string{"Options.InFlight"}},
		{"replay", func(o *Options) { o.ReplayRate, o.ReplayBurst = -1, 0 }, []string{"Options.ReplayRate"}},
		{"burst", func(o *Options) { o.ReplayRate, o.ReplayBurst = 10, 0 }, []string{"Options.ReplayBurst"}},
		{"durations", func(o *Options) { o.KeepAlive, o.PingTimeout, o.ReconnectMin = 0, 0, time.Minute },
			[]string{"Options.KeepAlive", "Options.PingTimeout", "Options.ReconnectMax: 10s is below ReconnectMin 1m0s"}},
		{"unknown allowed command", func(o *Options) { o.AllowCommands = []string{"reboot"} }, []string{`Options.AllowCommands: unknown command "reboot"`}},
		{"TLS on tcp", func(o *Options) { o.TLS.InsecureSkipVerify = true }, []string{"Options.TLS: set, but the broker URL's scheme \"tcp\""}},
		{"cert without key", func(o *Options) { o.Broker = "ssl://x:1"; o.TLS.CertFile = "c.pem" }, []string{"CertFile and KeyFile go together"}},
		{"missing CA file", func(o *Options) { o.Broker = "mqtts://x:1"; o.TLS.CAFile = "/nonexistent/ca.pem" }, []string{"Options.TLS: read CA file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			o.Broker, o.Device = "tcp://127.0.0.1:1883", "dev1"
			tt.modify(&o)
			_, err := New(newMemBuffer(t), o)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("New: want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if _, err := New(nil, DefaultOptions()); err == nil {
		t.Error("New(nil buffer): want an error")
	}
}

func TestBirthStore(t *testing.T) {
	dir := t.TempDir()
	b, err := loadBirth(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.next() != 1 || b.current() != 0 {
		t.Fatalf("fresh store: next %d current %d", b.next(), b.current())
	}
	for n := uint64(1); n <= 3; n++ {
		if err := b.commit(b.next()); err != nil {
			t.Fatal(err)
		}
	}
	b2, err := loadBirth(dir)
	if err != nil || b2.current() != 3 || b2.next() != 4 {
		t.Fatalf("reloaded store: current %d, %v; want 3", b2.current(), err)
	}
	if err := os.WriteFile(filepath.Join(dir, birthFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadBirth(dir); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged file: %v", err)
	}
	mem, _ := loadBirth("")
	if err := mem.commit(5); err != nil || mem.next() != 6 {
		t.Fatalf("in-memory store: %v, next %d", err, mem.next())
	}
}

// TestWriterPriority checks the order in which the writer takes prepared
// messages: live before replay, and alerts, advice, scores in that order.
func TestWriterPriority(t *testing.T) {
	p, err := New(newMemBuffer(t), testOptions("tcp://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	s := &session{p: p}
	for _, l := range p.lanes {
		s.lanes = append(s.lanes, &sessLane{meta: l, liveQ: make(chan *outMsg, 4), replayQ: make(chan *outMsg, 4)})
	}
	byName := map[string]*sessLane{}
	for _, sl := range s.lanes {
		byName[sl.meta.name] = sl
	}
	put := func(lane string, live bool, seq uint64) {
		q := byName[lane].replayQ
		if live {
			q = byName[lane].liveQ
		}
		q <- &outMsg{seq: seq}
	}
	put("score", true, 1)
	put("advice", true, 2)
	put("alert", true, 3)
	put("alert", false, 4)
	put("score", false, 5)
	put("alert", true, 6)
	var got []uint64
	for {
		m, _ := s.next(true)
		if m == nil {
			break
		}
		got = append(got, m.seq)
	}
	if !s.replayPending() {
		t.Fatal("replay pending not seen")
	}
	for {
		m, _ := s.next(false)
		if m == nil {
			break
		}
		got = append(got, m.seq)
	}
	if want := []uint64{3, 6, 2, 1, 4, 5}; !slices.Equal(got, want) {
		t.Fatalf("order %v; want %v", got, want)
	}
}
