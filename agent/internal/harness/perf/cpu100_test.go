package perf

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// cpu100Config is the demo's pump (the simulator at 100 samples/s with its
// faults) scored with the default model models/pump8 into the Badger
// buffer, and nothing else: no kiosk users, no HTTP events, no MQTT.
const cpu100Config = `device_id: perf-01
data_dir: %s
models_dir: %s
http: {listen: "127.0.0.1:0"}
sources:
  - name: pump
    type: simulator
    simulator: {rate: 100, faults: true, users: 0}
streams:
  - name: pump1
    source: pump
    model: pump8
`

// runCPU100 runs vigil on the simulator at 100 samples/s and reads its
// CPU time from /proc over d, after 5 s of warm-up.
func runCPU100(t *testing.T, d time.Duration) *CPU100Result {
	res := &CPU100Result{Seconds: d.Seconds()}
	t.Run("cpu100", func(t *testing.T) {
		models, err := filepath.Abs(modelsDir)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(*outDir, "cpu100")
		mkdir(t, dir)
		v := startVigil(t, dir, fmt.Sprintf(cpu100Config, t.TempDir(), models))
		time.Sleep(5 * time.Second) // warm-up: first windows, Badger's first flushes
		m0, err := ScrapeMetrics(v.addr)
		if err != nil {
			t.Fatal(err)
		}
		p0, err := ReadProc(v.Pid())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
		p1, err := ReadProc(v.Pid())
		if err != nil {
			t.Fatal(err)
		}
		m1, err := ScrapeMetrics(v.addr)
		if err != nil {
			t.Fatal(err)
		}
		busy := p1.CPU - p0.CPU
		wall := p1.At.Sub(p0.At)
		samples := m1.Sum("vigil_inputs_total") - m0.Sum("vigil_inputs_total")
		res.CPUPercent = 100 * busy.Seconds() / wall.Seconds()
		if samples > 0 {
			res.CPUPer1k = busy.Seconds() / samples * 1000
		}
		res.RSSMB = float64(p1.RSS) / (1 << 20)
		res.Load = loadAvg()
		t.Logf("%.0f samples in %v, %v CPU", samples, wall.Round(time.Millisecond), busy)
	})
	return res
}
