package perf

import (
	"bytes"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
)

var (
	soakDuration = flag.Duration("perf.soak", 0, "run the soak (TestSoak) for this long (make soak DURATION=30m)")
	soakEvery    = flag.Duration("perf.soak.faults", 0, "time between injected faults; 0 means a tenth of the duration, within [20s, 3m]")
)

// soakConfig is the demo (agent/vigil.example.yaml's sources and streams:
// the simulated pump at 100 samples/s with its faults, 20 kiosk users, the
// HTTP events endpoint) publishing to a mosquitto the soak can stop, in
// place of the embedded broker.
const soakConfig = `device_id: soak-01
data_dir: %s
models_dir: %s
http: {listen: "127.0.0.1:0"}
mqtt:
  broker: %s
  embedded_broker: {listen: ""}
sources:
  - name: pump
    type: simulator
    simulator: {rate: 100, faults: true, fault_interval: 20s, seed: 1, users: 20}
  - name: events
    type: http
streams:
  - name: pump1
    source: pump
    model: pump8
  - name: kiosk
    source: pump
    kind: behaviour
    model: kiosk
    key: user_id
    cooldown: 1m
  - name: web
    source: events
    kind: behaviour
    model: kiosk
    key: user_id
`

// TestSoak runs the demo for -perf.soak with periodic faults, in rotation:
// the broker down for 15 s, a SIGHUP reload, a burst of HTTP events (some
// invalid). It samples RSS, goroutines (go_goroutines), open files
// (/proc/PID/fd), the buffer's disk use and CPU, and writes
// tmp/perf/soak.{png,csv,md}. After the warm-up (the first fifth) it fits
// a line to each series and reports the slope; it fails if a series grows.
func TestSoak(t *testing.T) {
	if *soakDuration <= 0 {
		t.Skip("the soak runs with -perf.soak=DURATION (make soak DURATION=30m)")
	}
	dur := *soakDuration
	every := *soakEvery
	if every <= 0 {
		every = min(max(dur/10, 20*time.Second), 3*time.Minute)
	}
	interval := max(2*time.Second, dur/360)
	warmup := (dur / 5).Seconds()

	broker := mqtttest.Start(t, mqtttest.Options{})
	models, err := filepath.Abs(modelsDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(*outDir, "soak")
	mkdir(t, dir)
	data := t.TempDir()
	v := startVigil(t, dir, fmt.Sprintf(soakConfig, data, models, broker.URL()), "connected to the broker")
	sub := mqtttest.Subscribe(t, broker, "vigil/soak-01/alerts/#", 1)

	var ss []SoakSample
	var (
		faults    []string
		faultMu   sync.Mutex
		faultDone sync.WaitGroup
	)
	start := time.Now()
	prev, _ := ReadProc(v.Pid())
	nextFault, fault := start.Add(every), 0
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for now := range tk.C {
		el := now.Sub(start)
		if el > dur {
			break
		}
		p, err := ReadProc(v.Pid())
		if err != nil {
			t.Fatalf("vigil is gone: %v\n%s", err, tail(v.log(), 30))
		}
		m, err := ScrapeMetrics(v.addr)
		if err != nil {
			t.Logf("scrape: %v", err)
			continue
		}
		ss = append(ss, SoakSample{T: el.Seconds(), RSSMB: float64(p.RSS) / (1 << 20), Goroutines: m.Sum("go_goroutines"),
			FDs: float64(p.FDs), DiskMB: float64(DirSize(data)) / (1 << 20),
			CPUPercent: 100 * (p.CPU - prev.CPU).Seconds() / p.At.Sub(prev.At).Seconds()})
		prev = p
		if now.After(nextFault) && el < dur-every/2 {
			// Faults run beside the sampling (an outage takes 15 s).
			faultDone.Wait()
			faultDone.Add(1)
			go func(n int, at time.Duration) {
				defer faultDone.Done()
				what := injectFault(n, v, broker)
				faultMu.Lock()
				faults = append(faults, fmt.Sprintf("%s %s", secs(at), what))
				faultMu.Unlock()
			}(fault, el)
			fault++
			nextFault = now.Add(every)
		}
	}
	faultDone.Wait()
	vs := AnalyzeSoak(ss, warmup)
	var png, csv bytes.Buffer
	if err := WritePNG(&png, SoakPlot(ss, warmup)); err != nil {
		t.Fatal(err)
	}
	if err := WriteSoakCSV(&csv, ss); err != nil {
		t.Fatal(err)
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Soak: %v, the demo with periodic faults (every %v), sampled every %v; warm-up %.0f s\n\n", dur, every, interval, warmup)
	fmt.Fprintf(&md, "load average at the end: %s; %d alerts received by a subscriber\n\n", loadAvg(), sub.Len())
	SoakTable(vs).WriteTo(&md)
	fmt.Fprintf(&md, "\nFaults injected:\n\n")
	for _, f := range faults {
		fmt.Fprintf(&md, "- %s\n", f)
	}
	for name, b := range map[string][]byte{"soak.png": png.Bytes(), "soak.csv": csv.Bytes(), "soak.md": []byte(md.String())} {
		if err := os.WriteFile(filepath.Join(*outDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("\n%s\nplot: %s\n", md.String(), filepath.Join(*outDir, "soak.png"))
	for _, x := range vs {
		if x.Grows {
			t.Errorf("%s grows after the warm-up: %+.2f per hour (fitted %+.2f over the run)", x.Name, x.SlopePerHour, x.Growth)
		}
	}
}

// injectFault injects the n-th fault of the rotation and says what it did.
func injectFault(n int, v *vigilProc, broker *mqtttest.Broker) string {
	switch n % 3 {
	case 0:
		broker.Stop()
		time.Sleep(15 * time.Second)
		broker.Start()
		return "broker down for 15 s"
	case 1:
		v.Signal(syscall.SIGHUP)
		return "SIGHUP (reload config and models)"
	default:
		var b strings.Builder
		b.WriteString("[")
		for i := range 200 {
			if i > 0 {
				b.WriteString(",")
			}
			if i%10 == 9 {
				b.WriteString(`{"event_name":""}`) // invalid: no id, name or user
				continue
			}
			fmt.Fprintf(&b, `{"event_id":"soak-%d-%d","event_name":"form_error","timestamp":%d,"user_id":"web-%d"}`,
				n, i, time.Now().UnixMilli(), i%7)
		}
		b.WriteString("]")
		resp, err := http.Post("http://"+v.addr+"/v1/events", "application/json", strings.NewReader(b.String()))
		if err != nil {
			return "HTTP burst failed: " + err.Error()
		}
		resp.Body.Close()
		return fmt.Sprintf("HTTP burst of 200 events, 20 invalid: %s", resp.Status)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
