package source

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"
)

// The simulated pump's channels, named and ordered as SKAB's (and the
// default pump model's manifest).
var pumpChannels = []string{
	"Accelerometer1RMS",
	"Accelerometer2RMS",
	"Current",
	"Pressure",
	"Temperature",
	"Thermocouple",
	"Voltage",
	"Volume Flow RateRMS",
}

// Short ids of the pump's channels, in the same order: the field names a
// device on the bus would publish ({"ts":..,"a1":..,...,"flow":..}).
var pumpChannelIDs = []string{"a1", "a2", "cur", "pres", "temp", "thermo", "volt", "flow"}

// Channel indexes.
const (
	chA1 = iota
	chA2
	chCurrent
	chPressure
	chTemperature
	chThermocouple
	chVoltage
	chFlow
	numPumpChannels
)

// PumpChannels returns the names of the simulated pump's 8 channels in
// order: Accelerometer1RMS, Accelerometer2RMS, Current, Pressure,
// Temperature, Thermocouple, Voltage, Volume Flow RateRMS.
func PumpChannels() []string { return slices.Clone(pumpChannels) }

// PumpChannelIDs returns the short ids of the pump's channels, in the order
// of PumpChannels: a1, a2, cur, pres, temp, thermo, volt, flow.
func PumpChannelIDs() []string { return slices.Clone(pumpChannelIDs) }

// pumpChannelIndex resolves a channel name or short id (case-insensitive).
func pumpChannelIndex(name string) (int, bool) {
	for i := range pumpChannels {
		if strings.EqualFold(name, pumpChannels[i]) || strings.EqualFold(name, pumpChannelIDs[i]) {
			return i, true
		}
	}
	return 0, false
}

// FaultKind names a fault the simulator can inject.
type FaultKind string

// The simulator's faults and their signatures.
const (
	// FaultValveClosing closes the outlet valve: flow drops (by up to
	// half), pressure rises, the motor's current and, slowly, its
	// temperature fall.
	FaultValveClosing FaultKind = "valve_closing"
	// FaultCavitation: bursts on both accelerometers, an oscillating and
	// noisier pressure, a slightly lower and noisier flow and current.
	FaultCavitation FaultKind = "cavitation"
	// FaultSensorDrift: one channel ramps away from the truth, reaching
	// about 8 of its standard deviations (×intensity) at the fault's end.
	FaultSensorDrift FaultKind = "sensor_drift"
	// FaultStuckSensor: one channel freezes at its value when the fault
	// starts.
	FaultStuckSensor FaultKind = "stuck_sensor"
)

// FaultKinds lists the simulator's fault kinds.
func FaultKinds() []FaultKind {
	return []FaultKind{FaultValveClosing, FaultCavitation, FaultSensorDrift, FaultStuckSensor}
}

// Fault is one scheduled fault of the simulated pump.
type Fault struct {
	Kind FaultKind
	// At is when the fault starts, in simulated time since the first
	// sample (sample i is at i×Step).
	At time.Duration
	// Duration is how long it lasts; the samples in [At, At+Duration) are
	// labelled anomalous.
	Duration time.Duration
	// Intensity scales the fault's effect, in (0, 1].
	Intensity float64
	// Channel is the channel (name or short id) of a drift or stuck
	// sensor; empty picks Thermocouple for drift and Volume Flow RateRMS
	// for stuck. Ignored by the other kinds.
	Channel string
}

func (f Fault) end() time.Duration { return f.At + f.Duration }

func (f Fault) validate(field string) error {
	if !slices.Contains(FaultKinds(), f.Kind) {
		return optErr(field+".Kind", "unknown fault %q (want one of %v)", f.Kind, FaultKinds())
	}
	if f.At < 0 {
		return optErr(field+".At", "must be ≥ 0, got %v", f.At)
	}
	if f.Duration <= 0 {
		return optErr(field+".Duration", "must be > 0, got %v", f.Duration)
	}
	if !(f.Intensity > 0 && f.Intensity <= 1) {
		return optErr(field+".Intensity", "must be in (0, 1], got %v", f.Intensity)
	}
	if f.Channel != "" {
		if _, ok := pumpChannelIndex(f.Channel); !ok {
			return optErr(field+".Channel", "unknown channel %q (want one of %q or %q)", f.Channel, pumpChannels, pumpChannelIDs)
		}
	}
	return nil
}

// faultPlan yields faults in order of start time.
type faultPlan interface {
	next() (Fault, bool)
}

// scriptedPlan plays a fixed list.
type scriptedPlan struct {
	faults []Fault
}

func newScriptedPlan(faults []Fault) *scriptedPlan {
	s := slices.Clone(faults)
	sort.SliceStable(s, func(i, j int) bool { return s[i].At < s[j].At })
	return &scriptedPlan{faults: s}
}

func (p *scriptedPlan) next() (Fault, bool) {
	if len(p.faults) == 0 {
		return Fault{}, false
	}
	f := p.faults[0]
	p.faults = p.faults[1:]
	return f, true
}

// demoPlan is the demo's schedule: a fault every period from first on, the
// four kinds in rotation at intensities 0.25, 0.5, 0.75, 1 (so every
// severity of alert shows up), the combinations shifting every round.
type demoPlan struct {
	first, every, dur time.Duration
	k                 int
}

var demoLevels = [...]float64{0.25, 0.5, 0.75, 1}

var demoDriftChannels = [...]int{chThermocouple, chPressure, chTemperature, chCurrent}
var demoStuckChannels = [...]int{chFlow, chTemperature, chA1, chPressure}

func (p *demoPlan) next() (Fault, bool) {
	k := p.k
	p.k++
	kinds := FaultKinds()
	f := Fault{
		Kind:      kinds[(k+k/4)%len(kinds)],
		At:        p.first + time.Duration(k)*p.every,
		Duration:  p.dur,
		Intensity: demoLevels[k%len(demoLevels)],
	}
	switch f.Kind {
	case FaultSensorDrift:
		f.Channel = pumpChannels[demoDriftChannels[(k/4)%len(demoDriftChannels)]]
	case FaultStuckSensor:
		f.Channel = pumpChannels[demoStuckChannels[(k/4)%len(demoStuckChannels)]]
	}
	return f, true
}

// randomPlan draws faults from its own generator: exponential gaps with the
// mean gap given, durations within ±50 % of dur, any kind, intensity in
// [0.2, 1], any channel. Faults never overlap.
type randomPlan struct {
	rng            *rand.Rand
	first, gap, du time.Duration
	at             time.Duration
}

func (p *randomPlan) next() (Fault, bool) {
	kinds := FaultKinds()
	at := p.at
	if at == 0 {
		at = p.first
	}
	d := time.Duration(float64(p.du) * (0.5 + p.rng.Float64()))
	f := Fault{
		Kind:      kinds[p.rng.IntN(len(kinds))],
		At:        at,
		Duration:  max(d, time.Second),
		Intensity: 0.2 + 0.8*p.rng.Float64(),
		Channel:   pumpChannels[p.rng.IntN(numPumpChannels)],
	}
	gap := time.Duration(p.rng.ExpFloat64() * float64(p.gap))
	p.at = f.end() + max(gap, time.Second)
	return f, true
}

// Nominal operating point and noise, from SKAB's valve1 experiments.
var (
	pumpNominal = [numPumpChannels]float64{0.0265, 0.0403, 1.0, 0.08, 78, 26.2, 230, 32.1}
	// Typical standard deviation of each channel in normal operation, the
	// unit of sensor drift.
	pumpSigma = [numPumpChannels]float64{0.0003, 0.0008, 0.27, 0.25, 1.0, 0.08, 10.7, 0.42}
)

// SKAB's pressure sensor reads in steps of about 0.328 bar (…, -0.273216,
// 0.054711, 0.382638, …) and its flow meter in thirds of a l/min.
const (
	pressureStep   = 0.327927
	pressureOffset = 0.054711
	flowStep       = 1.0 / 3
)

// activeFault is a fault in progress.
type activeFault struct {
	Fault
	ch     int     // drift / stuck channel
	frozen float64 // stuck value
	held   bool
}

// pumpSample is one generated sample.
type pumpSample struct {
	offset      time.Duration // simulated time since the first sample
	values      [numPumpChannels]float64
	anomaly     bool // a fault is active
	changepoint bool // a fault started or ended at this sample
}

// pump is the physical model behind the simulator. It draws the same
// random numbers at every step whatever the faults, so a seed gives the same
// noise with and without faults (tests compare the two).
type pump struct {
	rng  *rand.Rand
	plan faultPlan
	step float64 // seconds per sample
	i    int64

	upcoming    Fault
	hasUpcoming bool
	active      []activeFault
	wasAnomaly  bool

	// State.
	speed    float64 // relative pump speed, 1 = nominal
	temp     float64 // motor temperature, °C
	thermo   float64 // fluid temperature, °C
	accNoise [2]float64
	ambient  float64 // phase of the slow ambient cycle
}

func newPump(seed uint64, step time.Duration, plan faultPlan) *pump {
	p := &pump{
		rng:    rand.New(rand.NewPCG(seed, 0x5ca1ab1e)),
		plan:   plan,
		step:   step.Seconds(),
		speed:  1,
		temp:   pumpNominal[chTemperature],
		thermo: 20 + 0.08*pumpNominal[chTemperature],
	}
	p.ambient = p.rng.Float64() * 2 * math.Pi
	if plan != nil {
		p.upcoming, p.hasUpcoming = plan.next()
	}
	return p
}

func smoothstep(x float64) float64 {
	x = min(max(x, 0), 1)
	return x * x * (3 - 2*x)
}

// next generates the next sample.
func (p *pump) next() pumpSample {
	dt := p.step
	offset := time.Duration(float64(p.i) * dt * float64(time.Second))
	tsec := float64(p.i) * dt
	p.i++

	// Faults: retire the finished ones, start the due ones.
	changepoint := false
	kept := p.active[:0]
	for _, a := range p.active {
		if offset < a.end() {
			kept = append(kept, a)
		}
	}
	p.active = kept
	for p.hasUpcoming && p.upcoming.At <= offset {
		f := p.upcoming
		p.upcoming, p.hasUpcoming = p.plan.next()
		if f.end() <= offset {
			continue // entirely in the past (a step longer than the fault)
		}
		a := activeFault{Fault: f}
		switch f.Kind {
		case FaultSensorDrift:
			a.ch = chThermocouple
		case FaultStuckSensor:
			a.ch = chFlow
		}
		if f.Channel != "" {
			a.ch, _ = pumpChannelIndex(f.Channel)
		}
		p.active = append(p.active, a)
		changepoint = true
	}
	anomaly := len(p.active) > 0
	if anomaly != p.wasAnomaly {
		changepoint = true
	}
	p.wasAnomaly = anomaly

	// Effective strength of each physical fault: a smooth onset over the
	// first 10 s (or third of the fault).
	var closing, cav float64
	for _, a := range p.active {
		ramp := min(10*time.Second, a.Duration/3)
		e := a.Intensity * smoothstep(float64(offset-a.At+time.Duration(dt*float64(time.Second)))/float64(ramp))
		switch a.Kind {
		case FaultValveClosing:
			closing = max(closing, 0.75*e)
		case FaultCavitation:
			cav = max(cav, e)
		}
	}

	// Random draws: always the same number, in the same order.
	var n [14]float64
	for k := range n {
		n[k] = p.rng.NormFloat64()
	}
	u := p.rng.Float64()
	burst := 1.5 + 2.5*p.rng.Float64()

	// Pump speed: a slow mean-reverting wander around nominal.
	tau := 120.0
	p.speed += (1-p.speed)*min(dt/tau, 1) + 0.00065*math.Sqrt(dt)*n[0]
	s := p.speed

	// Hydraulics: the valve's opening sets the flow; closing it raises the
	// pressure upstream of it.
	open := 1 - closing
	flowTrue := pumpNominal[chFlow] * s * math.Sqrt(open) * (1 - 0.05*cav)
	pressTrue := pumpNominal[chPressure] + 4*(s-1) + 2.4*closing*s*s +
		0.9*cav*math.Sin(2*math.Pi*tsec/7)
	flowRatio := flowTrue / pumpNominal[chFlow]

	// Electrics: mains voltage varies; the motor's current follows the
	// hydraulic load (less flow, less current) and the voltage.
	volt := pumpNominal[chVoltage] + pumpSigma[chVoltage]*n[1]
	curTrue := pumpNominal[chCurrent] * s * s * (0.55 + 0.45*flowRatio)
	cur := curTrue + 0.0045*(volt-pumpNominal[chVoltage]) + 0.24*n[2] + 0.12*cav*n[3]

	// Thermal: the motor heats towards a load-dependent equilibrium over
	// ~15 min, the fluid follows the motor over ~5 min, both ride a slow
	// ambient cycle (3 h).
	ambient := 1.5 * math.Sin(p.ambient+2*math.Pi*tsec/(3*3600))
	teq := 62 + 16*curTrue/pumpNominal[chCurrent] + ambient
	p.temp += (teq-p.temp)*min(dt/900, 1) + 0.03*math.Sqrt(dt)*n[4]
	p.thermo += (20+0.08*p.temp-p.thermo)*min(dt/300, 1) + 0.004*math.Sqrt(dt)*n[5]

	// Vibration: RMS scales with speed squared, AR(1) noise shared in part
	// between the two accelerometers; cavitation adds bursts.
	p.accNoise[0] = 0.5*p.accNoise[0] + 0.87*(0.7*n[6]+0.71*n[7])
	p.accNoise[1] = 0.6*p.accNoise[1] + 0.8*(0.5*n[6]+0.87*n[8])
	vib := 1 + 0.3*cav
	if u < 0.35*cav {
		vib *= 1 + cav*burst
	}
	a1 := pumpNominal[chA1] * s * s * vib * (1 + 0.011*p.accNoise[0])
	a2 := pumpNominal[chA2] * s * s * vib * (1 + 0.02*p.accNoise[1])

	var v [numPumpChannels]float64
	v[chA1] = a1
	v[chA2] = a2
	v[chCurrent] = cur
	v[chPressure] = pressTrue + 0.24*n[9] + 0.25*cav*n[10]
	v[chTemperature] = p.temp + 0.05*n[11]
	v[chThermocouple] = p.thermo
	v[chVoltage] = volt
	v[chFlow] = flowTrue + 0.33*n[12] + 0.4*cav*n[13]

	// Sensor faults act on the readings, before quantization.
	for i := range p.active {
		a := &p.active[i]
		switch a.Kind {
		case FaultSensorDrift:
			frac := float64(offset-a.At) / float64(a.Duration)
			v[a.ch] += 8 * pumpSigma[a.ch] * a.Intensity * frac
		case FaultStuckSensor:
			if !a.held {
				a.frozen, a.held = quantize(a.ch, v[a.ch]), true
			}
			v[a.ch] = a.frozen
		}
	}
	for c := range v {
		v[c] = quantize(c, v[c])
	}
	return pumpSample{offset: offset, values: v, anomaly: anomaly, changepoint: changepoint}
}

// quantize applies the resolution of SKAB's pressure sensor and flow meter.
func quantize(ch int, x float64) float64 {
	switch ch {
	case chPressure:
		return pressureOffset + math.Round((x-pressureOffset)/pressureStep)*pressureStep
	case chFlow:
		return math.Round(x/flowStep) * flowStep
	}
	return x
}
