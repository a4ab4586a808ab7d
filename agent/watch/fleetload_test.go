package watch

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
)

// loadEnv switches the fleet load run on: it is a measurement, not a test,
// and takes VIGIL_WATCH_LOAD seconds (make bench-watch).
const loadEnv = "VIGIL_WATCH_LOAD"

// TestFleetLoad runs `vigil watch`'s live view (this test binary in child
// mode, on a 200×60 screen written to a pipe) against a real mosquitto fed
// by a generator of 1,000 devices, each publishing health every 10 s, with
// alerts at 100/s over the fleet. A probe device opens a new critical
// episode twice a second; the lag is the time from its publication to the
// first frame that shows it. It reports the view's CPU (share of one core),
// peak memory and the lag's percentiles.
func TestFleetLoad(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv(loadEnv))
	if secs <= 0 {
		t.Skipf("a measurement: set %s=SECONDS (make bench-watch)", loadEnv)
	}
	const devices = 1000
	b := mqtttest.Start(t, mqtttest.Options{ExtraConfig: "max_queued_messages 100000\n"})
	c := mqtttest.Connect(t, b)
	for i := range devices {
		mqtttest.Publish(t, c, fmt.Sprintf("vigil/dev-%04d/status", i), 1, true,
			[]byte(`{"state":"online","since":"2025-06-01T07:00:00Z","version":"1.2.0","birth_seq":1,"models":["pump@3"]}`))
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+b.URL(), childSizeEnv+"=200x60")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	// Frames: the first time each probe episode is on the screen.
	var (
		mu     sync.Mutex
		seen   = map[int]time.Time{}
		frames int
	)
	go func() {
		// A row is on the screen once its line is written whole.
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			now := time.Now()
			line := sc.Bytes()
			if bytes.Contains(line, []byte("\x1b[2J")) {
				mu.Lock()
				frames++
				mu.Unlock()
			}
			for _, m := range probeRe(line) {
				mu.Lock()
				if _, ok := seen[m]; !ok {
					seen[m] = now
				}
				mu.Unlock()
			}
		}
	}()

	// The generator: every 10 ms one device's health and one alert; the
	// probe every 500 ms.
	rng := rand.New(rand.NewPCG(1, 2))
	published := map[int]time.Time{}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var cpu0 procTimes
	start := time.Now()
	warm := start.Add(5 * time.Second) // the retained statuses arrive first
	end := warm.Add(time.Duration(secs) * time.Second)
	probe, n := 0, 0
	for now := range tick.C {
		if now.After(end) {
			break
		}
		if cpu0.wall.IsZero() && now.After(warm) {
			cpu0 = readProc(t, cmd.Process.Pid)
		}
		d := n % devices
		c.Publish(fmt.Sprintf("vigil/dev-%04d/health", d), 0, false, fmt.Appendf(nil,
			`{"uptime_s":%d,"models":{"pump":"pump@3"},"backlog":{"score":{"records":%d}},"rates":{"alerts_per_s":0.1}}`, n, rng.IntN(500)))
		c.Publish(fmt.Sprintf("vigil/dev-%04d/alerts/pump", rng.IntN(devices)), 1, false, fmt.Appendf(nil,
			`{"seq":%d,"stream":"pump","severity":"warning","state":"%s","score":2,"threshold":1}`, n, []string{"open", "closed"}[n%2]))
		if n%50 == 0 && now.After(warm) {
			if probe > 0 {
				c.Publish("vigil/aaa-probe/alerts/probe", 1, false, fmt.Appendf(nil, `{"stream":"probe","key":"%d","severity":"critical","state":"closed"}`, probe))
			}
			probe++
			published[probe] = time.Now()
			c.Publish("vigil/aaa-probe/alerts/probe", 1, false, fmt.Appendf(nil, `{"stream":"probe","key":"%d","severity":"critical","state":"open"}`, probe))
		}
		n++
	}
	cpu1 := readProc(t, cmd.Process.Pid)
	mqtttest.WaitFor(t, 10*time.Second, "the last probe on the screen", func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := seen[probe]
		return ok
	})

	mu.Lock()
	var lags []time.Duration
	for p, at := range published {
		if s, ok := seen[p]; ok {
			lags = append(lags, s.Sub(at))
		}
	}
	nFrames := frames
	mu.Unlock()
	slices.Sort(lags)
	if len(lags) < len(published)*9/10 {
		t.Fatalf("only %d of %d probe episodes reached the screen", len(lags), len(published))
	}
	pct := func(p float64) time.Duration { return lags[min(len(lags)-1, int(p*float64(len(lags))))] }
	busy := float64(cpu1.cpu-cpu0.cpu) / float64(cpu1.wall.Sub(cpu0.wall))
	report := fmt.Sprintf("vigil watch, %d devices, %d messages/s (health every 10 s each + 100 alerts/s), %d s, 200x60:\n"+
		"  CPU %.1f %% of one core   peak RSS %.1f MB   frames %d\n"+
		"  lag publish→screen over %d probes: p50 %v  p90 %v  p99 %v  max %v\n",
		devices, 200, secs, 100*busy, float64(cpu1.hwmKB)/1024, nFrames,
		len(lags), pct(0.5).Round(time.Millisecond), pct(0.9).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond))
	t.Log("\n" + report)
	if p := os.Getenv("VIGIL_WATCH_LOAD_REPORT"); p != "" {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			_ = os.WriteFile(p, []byte(report), 0o644)
		}
	}
}

// probeRe returns the probe episodes a frame shows ("critical probe/N").
func probeRe(frame []byte) []int {
	var out []int
	for {
		i := bytes.Index(frame, []byte("critical probe/"))
		if i < 0 {
			return out
		}
		frame = frame[i+len("critical probe/"):]
		j := 0
		for j < len(frame) && frame[j] >= '0' && frame[j] <= '9' {
			j++
		}
		if k, err := strconv.Atoi(string(frame[:j])); err == nil {
			out = append(out, k)
		}
	}
}

type procTimes struct {
	wall  time.Time
	cpu   time.Duration // user + system
	hwmKB int64         // peak resident set
}

// readProc reads a process's CPU time and peak RSS from /proc.
func readProc(t *testing.T, pid int) procTimes {
	t.Helper()
	p := procTimes{wall: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command's closing parenthesis: utime is the 14th
	// field of the line, stime the 15th, in clock ticks (100 a second).
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	p.cpu = time.Duration(ut+st) * 10 * time.Millisecond
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			p.hwmKB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return p
}
