package source

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// generate runs the pump for n samples.
func generate(seed uint64, n int, faults ...Fault) []pumpSample {
	var plan faultPlan
	if len(faults) > 0 {
		plan = newScriptedPlan(faults)
	}
	p := newPump(seed, time.Second, plan)
	out := make([]pumpSample, n)
	for i := range out {
		out[i] = p.next()
	}
	return out
}

func mean(s []pumpSample, ch, from, to int) float64 {
	var sum float64
	for _, x := range s[from:to] {
		sum += x.values[ch]
	}
	return sum / float64(to-from)
}

func stddev(s []pumpSample, ch, from, to int) float64 {
	m := mean(s, ch, from, to)
	var ss float64
	for _, x := range s[from:to] {
		ss += (x.values[ch] - m) * (x.values[ch] - m)
	}
	return math.Sqrt(ss / float64(to-from))
}

func TestPumpNormalLevels(t *testing.T) {
	s := generate(7, 3000)
	// SKAB valve1's normal operation, with some slack.
	want := []struct {
		ch         int
		mean, tol  float64
		sdLo, sdHi float64
	}{
		{chA1, 0.0265, 0.001, 0.0001, 0.001},
		{chA2, 0.0403, 0.002, 0.0003, 0.002},
		{chCurrent, 1.0, 0.1, 0.15, 0.4},
		{chPressure, 0.08, 0.1, 0.15, 0.4},
		{chTemperature, 78, 3, 0.05, 2},
		{chThermocouple, 26.2, 0.5, 0.005, 0.3},
		{chVoltage, 230, 2, 8, 13},
		{chFlow, 32.1, 0.5, 0.2, 0.8},
	}
	for _, w := range want {
		m, sd := mean(s, w.ch, 0, len(s)), stddev(s, w.ch, 0, len(s))
		if math.Abs(m-w.mean) > w.tol || sd < w.sdLo || sd > w.sdHi {
			t.Errorf("%s: mean %.4g sd %.4g, want %.4g±%.2g, sd in [%g, %g]", pumpChannels[w.ch], m, sd, w.mean, w.tol, w.sdLo, w.sdHi)
		}
		for i, x := range s {
			if math.IsNaN(x.values[w.ch]) || math.IsInf(x.values[w.ch], 0) {
				t.Fatalf("%s: sample %d is %v", pumpChannels[w.ch], i, x.values[w.ch])
			}
		}
	}
	for _, x := range s {
		if x.anomaly || x.changepoint {
			t.Fatal("labelled anomaly without faults")
		}
	}
}

// TestFaultSignatures checks that each fault shows as its physics says,
// comparing with the same seed's unfaulted run (the noise is the same).
func TestFaultSignatures(t *testing.T) {
	const at, dur = 200, 120
	from, to := at+15, at+dur // after the onset ramp
	tests := []struct {
		fault Fault
		check func(t *testing.T, base, got []pumpSample)
	}{
		{Fault{Kind: FaultValveClosing, Intensity: 1}, func(t *testing.T, base, got []pumpSample) {
			if b, g := mean(base, chFlow, from, to), mean(got, chFlow, from, to); g > 0.65*b {
				t.Errorf("flow %.2f → %.2f, want a drop of more than 35%%", b, g)
			}
			if b, g := mean(base, chPressure, from, to), mean(got, chPressure, from, to); g-b < 1 {
				t.Errorf("pressure %.2f → %.2f, want a rise of more than 1", b, g)
			}
			if b, g := mean(base, chCurrent, from, to), mean(got, chCurrent, from, to); g > 0.9*b {
				t.Errorf("current %.3f → %.3f, want a drop of more than 10%%", b, g)
			}
		}},
		{Fault{Kind: FaultValveClosing, Intensity: 0.25}, func(t *testing.T, base, got []pumpSample) {
			if b, g := mean(base, chFlow, from, to), mean(got, chFlow, from, to); g > 0.95*b {
				t.Errorf("flow %.2f → %.2f, want a drop of more than 5%%", b, g)
			}
		}},
		{Fault{Kind: FaultCavitation, Intensity: 1}, func(t *testing.T, base, got []pumpSample) {
			if b, g := mean(base, chA1, from, to), mean(got, chA1, from, to); g < 1.3*b {
				t.Errorf("accelerometer 1 %.4f → %.4f, want a rise of more than 30%%", b, g)
			}
			if b, g := stddev(base, chA2, from, to), stddev(got, chA2, from, to); g < 5*b {
				t.Errorf("accelerometer 2 sd %.5f → %.5f, want bursts", b, g)
			}
			if b, g := stddev(base, chPressure, from, to), stddev(got, chPressure, from, to); g < 1.5*b {
				t.Errorf("pressure sd %.3f → %.3f, want oscillation", b, g)
			}
		}},
		{Fault{Kind: FaultSensorDrift, Intensity: 1, Channel: "temp"}, func(t *testing.T, base, got []pumpSample) {
			end := at + dur - 1
			if d := got[end].values[chTemperature] - base[end].values[chTemperature]; d < 7 || d > 8 {
				t.Errorf("temperature drifted by %.2f at the end, want ~8σ = 8", d)
			}
			if got[at+dur+1].values[chTemperature] != base[at+dur+1].values[chTemperature] {
				t.Error("drift did not end with the fault")
			}
			if mean(got, chFlow, from, to) != mean(base, chFlow, from, to) {
				t.Error("drift changed another channel")
			}
		}},
		{Fault{Kind: FaultStuckSensor, Intensity: 1, Channel: "Volume Flow RateRMS"}, func(t *testing.T, base, got []pumpSample) {
			if sd := stddev(got, chFlow, at, at+dur); sd != 0 {
				t.Errorf("stuck flow has sd %v", sd)
			}
			if sd := stddev(base, chFlow, at, at+dur); sd == 0 {
				t.Error("baseline flow is flat")
			}
		}},
	}
	base := generate(3, at+dur+50)
	for _, tt := range tests {
		t.Run(string(tt.fault.Kind), func(t *testing.T) {
			f := tt.fault
			f.At, f.Duration = at*time.Second, dur*time.Second
			got := generate(3, at+dur+50, f)
			tt.check(t, base, got)
			for i, s := range got {
				inFault := i >= at && i < at+dur
				if s.anomaly != inFault {
					t.Fatalf("sample %d: anomaly = %v", i, s.anomaly)
				}
				if s.changepoint != (i == at || i == at+dur) {
					t.Fatalf("sample %d: changepoint = %v", i, s.changepoint)
				}
			}
		})
	}
}

func TestDemoSchedule(t *testing.T) {
	o := DefaultSimulatorOptions()
	o.Faults = true
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	plan := o.plan()
	var faults []Fault
	for range 16 {
		f, ok := plan.next()
		if !ok {
			t.Fatal("demo schedule ended")
		}
		faults = append(faults, f)
	}
	if faults[0].At > 20*time.Second {
		t.Errorf("first fault at %v, want within 20 s", faults[0].At)
	}
	kinds := map[FaultKind]map[float64]bool{}
	for i, f := range faults {
		if err := f.validate("fault"); err != nil {
			t.Fatalf("fault %d: %v", i, err)
		}
		if i > 0 && f.At-faults[i-1].At != o.FaultEvery {
			t.Errorf("fault %d at %v, want every %v", i, f.At, o.FaultEvery)
		}
		if i < 4 && f.Intensity != demoLevels[i] {
			t.Errorf("fault %d intensity %v, want increasing %v", i, f.Intensity, demoLevels)
		}
		if kinds[f.Kind] == nil {
			kinds[f.Kind] = map[float64]bool{}
		}
		kinds[f.Kind][f.Intensity] = true
	}
	for _, k := range FaultKinds() {
		if len(kinds[k]) != 4 {
			t.Errorf("%s came at intensities %v in 16 faults, want all four", k, kinds[k])
		}
	}
}

func TestRandomScheduleDeterministic(t *testing.T) {
	o := DefaultSimulatorOptions()
	o.Faults, o.RandomFaults, o.Seed = true, true, 42
	draw := func() []Fault {
		p := o.plan()
		var fs []Fault
		for range 50 {
			f, _ := p.next()
			fs = append(fs, f)
		}
		return fs
	}
	a, b := draw(), draw()
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different schedules")
	}
	for i, f := range a {
		if err := f.validate("fault"); err != nil {
			t.Fatalf("fault %d: %v", i, err)
		}
		if i > 0 && f.At < a[i-1].end() {
			t.Fatalf("fault %d at %v overlaps the previous one ending %v", i, f.At, a[i-1].end())
		}
	}
	o.Seed = 43
	if slices.Equal(draw(), a) {
		t.Fatal("different seeds, same schedule")
	}
}

func TestWriteCSVDeterministic(t *testing.T) {
	o := DefaultSimulatorOptions()
	o.Faults = true
	o2 := o
	o2.Seed = 2
	a := checkDeterministic(t, o, o2, func(w io.Writer, o SimulatorOptions) error { return WriteCSV(w, 500, o) })
	lines := strings.Split(string(a), "\r\n")
	if lines[0] != "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint" {
		t.Fatalf("header = %q", lines[0])
	}
	if len(lines) != 502 || lines[501] != "" {
		t.Fatalf("%d lines, want 500 rows, a header and a final CRLF", len(lines))
	}
	if !strings.HasPrefix(lines[1], "2024-01-01 00:00:00;") || !strings.HasPrefix(lines[500], "2024-01-01 00:08:19;") {
		t.Fatalf("rows start %q … %q", lines[1][:20], lines[500][:20])
	}

	// It reads back as SKAB does.
	tab, err := ReadCSV(bytes.NewReader(a), CSVOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tab.Channels, PumpChannels()) || len(tab.Values) != 500 || len(tab.Bad) != 0 {
		t.Fatalf("read back %v, %d rows, bad %v", tab.Channels, len(tab.Values), tab.Bad)
	}
	anomalies := 0
	for _, v := range tab.Labels["anomaly"] {
		anomalies += int(v)
	}
	if anomalies == 0 || anomalies == 500 {
		t.Fatalf("%d anomalous rows of 500", anomalies)
	}
	if d := tab.Times[1].Sub(tab.Times[0]); d != time.Second {
		t.Fatalf("rows %v apart", d)
	}
}

func TestSimulatorRun(t *testing.T) {
	clock := newFakeClock()
	sink := &fakeSink{}
	o := DefaultSimulatorOptions()
	o.Rate, o.Samples, o.Clock, o.Stream = 10, 50, clock, "pump1"
	start := clock.Now()
	sim, err := NewSimulator(o, sink)
	if err != nil {
		t.Fatal(err)
	}
	if sim.Name() != "simulator" {
		t.Errorf("Name = %q", sim.Name())
	}
	if err := sim.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	ins := sink.Inputs()
	if len(ins) != 50 {
		t.Fatalf("%d inputs, want 50", len(ins))
	}
	// Paced at 10/s: the 50th sample is due 4.9 s after the first.
	if got := clock.Now().Sub(start); got != 4900*time.Millisecond {
		t.Errorf("took %v of clock time, want 4.9s", got)
	}
	for i, in := range ins {
		if in.Source != "simulator" || in.Stream != "pump1" || len(in.Values) != 8 || !slices.Equal(in.Channels, pumpChannels) {
			t.Fatalf("input %d = %+v", i, in)
		}
		// Simulated time: one Step per sample, whatever the rate.
		if want := start.Add(time.Duration(i) * time.Second); !in.Time.Equal(want) {
			t.Fatalf("input %d at %v, want %v", i, in.Time, want)
		}
	}
	// Same as WriteCSV's samples.
	p := newPump(o.Seed, o.Step, nil)
	for i := range 3 {
		s := p.next()
		if !slices.Equal(ins[i].Values, s.values[:]) {
			t.Fatalf("input %d = %v, want %v", i, ins[i].Values, s.values)
		}
	}
}

func TestSimulatorStopsOnCancel(t *testing.T) {
	for _, rate := range []float64{0, 100} {
		ctx, cancel := context.WithCancel(context.Background())
		sink := &fakeSink{putHook: func(n int) {
			if n == 20 {
				cancel()
			}
		}}
		o := DefaultSimulatorOptions()
		o.Rate, o.Clock = rate, newFakeClock()
		sim, err := NewSimulator(o, sink)
		if err != nil {
			t.Fatal(err)
		}
		if err := sim.Run(ctx); err != nil {
			t.Fatalf("rate %v: Run = %v, want nil on cancel", rate, err)
		}
		if n := sink.Len(); n != 20 {
			t.Fatalf("rate %v: %d inputs after cancel at 20", rate, n)
		}
	}
}

func TestSimulatorOptionsErrors(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*SimulatorOptions)
		field string
	}{
		{"negative rate", func(o *SimulatorOptions) { o.Rate = -1 }, "Rate"},
		{"zero step", func(o *SimulatorOptions) { o.Step = 0 }, "Step"},
		{"random without faults", func(o *SimulatorOptions) { o.RandomFaults = true }, "RandomFaults"},
		{"both schedules", func(o *SimulatorOptions) {
			o.Faults = true
			o.Schedule = []Fault{{Kind: FaultCavitation, Duration: time.Second, Intensity: 1}}
		}, "Schedule"},
		{"bad intensity", func(o *SimulatorOptions) {
			o.Schedule = []Fault{{Kind: FaultCavitation, Duration: time.Second, Intensity: 1}, {Kind: FaultCavitation, Duration: time.Second, Intensity: 2}}
		}, "Schedule[1].Intensity"},
		{"bad kind", func(o *SimulatorOptions) { o.Schedule = []Fault{{Kind: "boom", Duration: time.Second, Intensity: 1}} }, "Schedule[0].Kind"},
		{"bad channel", func(o *SimulatorOptions) {
			o.Schedule = []Fault{{Kind: FaultStuckSensor, Duration: time.Second, Intensity: 1, Channel: "nope"}}
		}, "Schedule[0].Channel"},
		{"demo duration", func(o *SimulatorOptions) { o.Faults, o.FaultDuration = true, time.Hour }, "FaultDuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultSimulatorOptions()
			tt.edit(&o)
			_, err := NewSimulator(o, &fakeSink{})
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Field != tt.field {
				t.Fatalf("error %v, want an OptionError for %s", err, tt.field)
			}
		})
	}
}
