package source

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"
)

// SimulatorOptions configure a Simulator. Start from
// DefaultSimulatorOptions.
type SimulatorOptions struct {
	// Name is the source's name (default "simulator").
	Name string
	// Stream is the stream of every sample; empty lets the router route
	// by source.
	Stream string
	// Seed makes the run reproducible: the same options and seed give the
	// same samples.
	Seed uint64
	// Rate is how many samples per second of wall time Run emits; 0 means
	// as fast as the sink takes them.
	Rate float64
	// Step is the simulated time between two samples (default 1 s, SKAB's
	// rate). It drives the pump's physics, the fault schedule and the
	// samples' timestamps, which are Start + i×Step: with Rate = 1/Step
	// they follow the wall clock; with a higher Rate simulated time runs
	// ahead of it (the demo shows a minute of pump in a few seconds).
	Step time.Duration
	// Start is the time of the first sample; zero means the clock's time
	// when Run starts (WriteCSV uses a fixed date instead, to stay
	// deterministic).
	Start time.Time
	// Samples stops Run after that many samples; 0 runs until ctx ends.
	Samples int

	// Faults turns on the demo's fault schedule: the first fault at
	// FirstFault, then one every FaultEvery, each lasting FaultDuration,
	// the four kinds in rotation at intensities 0.25, 0.5, 0.75 and 1, so
	// that alerts of every severity appear early and then regularly.
	Faults bool
	// RandomFaults, with Faults, draws the schedule at random from Seed
	// instead: exponential gaps of mean FaultEvery, durations within
	// ±50 % of FaultDuration, any kind, channel and intensity in [0.2, 1].
	RandomFaults bool
	// FirstFault, FaultEvery and FaultDuration shape the generated
	// schedules (defaults 15 s, 45 s, 25 s, in simulated time).
	FirstFault    time.Duration
	FaultEvery    time.Duration
	FaultDuration time.Duration
	// Schedule is a scripted list of faults, for tests and experiments.
	// It cannot be combined with Faults.
	Schedule []Fault

	// Clock paces the samples (default SystemClock).
	Clock Clock
	// Logger receives the source's logs (default: discarded).
	Logger *slog.Logger
}

// DefaultSimulatorOptions returns the defaults: one sample per second of an
// unfaulted pump, seed 1.
func DefaultSimulatorOptions() SimulatorOptions {
	return SimulatorOptions{
		Name:          "simulator",
		Seed:          1,
		Rate:          1,
		Step:          time.Second,
		FirstFault:    15 * time.Second,
		FaultEvery:    45 * time.Second,
		FaultDuration: 25 * time.Second,
	}
}

func (o *SimulatorOptions) validate() error {
	var errs []error
	if o.Name == "" {
		o.Name = "simulator"
	}
	if o.Rate < 0 || o.Rate != o.Rate {
		errs = append(errs, optErr("Rate", "must be ≥ 0 (0 = as fast as possible), got %v", o.Rate))
	}
	if o.Step <= 0 {
		errs = append(errs, optErr("Step", "must be > 0, got %v", o.Step))
	}
	if o.Samples < 0 {
		errs = append(errs, optErr("Samples", "must be ≥ 0, got %d", o.Samples))
	}
	if o.Faults && len(o.Schedule) > 0 {
		errs = append(errs, optErr("Schedule", "cannot be combined with Faults (pick the demo/random schedule or a scripted one)"))
	}
	if o.RandomFaults && !o.Faults {
		errs = append(errs, optErr("RandomFaults", "needs Faults"))
	}
	if o.Faults {
		if o.FirstFault < 0 {
			errs = append(errs, optErr("FirstFault", "must be ≥ 0, got %v", o.FirstFault))
		}
		if o.FaultEvery <= 0 {
			errs = append(errs, optErr("FaultEvery", "must be > 0, got %v", o.FaultEvery))
		}
		if o.FaultDuration <= 0 {
			errs = append(errs, optErr("FaultDuration", "must be > 0, got %v", o.FaultDuration))
		}
		if !o.RandomFaults && o.FaultDuration > o.FaultEvery {
			errs = append(errs, optErr("FaultDuration", "%v is longer than FaultEvery %v", o.FaultDuration, o.FaultEvery))
		}
	}
	for i, f := range o.Schedule {
		if err := f.validate(fmt.Sprintf("Schedule[%d]", i)); err != nil {
			errs = append(errs, err)
		}
	}
	defaults(&o.Clock, nil, &o.Logger)
	return errors.Join(errs...)
}

// plan builds the fault schedule the options ask for (nil: no faults).
func (o *SimulatorOptions) plan() faultPlan {
	switch {
	case len(o.Schedule) > 0:
		return newScriptedPlan(o.Schedule)
	case o.Faults && o.RandomFaults:
		return &randomPlan{
			rng:   rand.New(rand.NewPCG(o.Seed, 0xfa017)),
			first: o.FirstFault, gap: o.FaultEvery, du: o.FaultDuration,
		}
	case o.Faults:
		return &demoPlan{first: o.FirstFault, every: o.FaultEvery, dur: o.FaultDuration}
	}
	return nil
}

// Simulator is the demo's sensor source: an 8-channel centrifugal pump with
// SKAB's channels and levels, correlated signals (flow, pressure and current
// move together with the pump's speed and the valve; the motor temperature
// follows the load), sensor resolution, and injectable faults.
type Simulator struct {
	core[SimulatorOptions]
}

// NewSimulator returns a simulator that puts its samples into sink.
func NewSimulator(opts SimulatorOptions, sink Sink) (*Simulator, error) {
	if err := checkSource("simulator", opts.validate, sink); err != nil {
		return nil, err
	}
	return &Simulator{core: newCore(opts, sink, opts.Logger, opts.Name)}, nil
}

// Name returns the source's name.
func (s *Simulator) Name() string { return s.opts.Name }

// Channels returns the names of the samples' channels.
func (s *Simulator) Channels() []string { return PumpChannels() }

// Run emits samples until ctx ends (a nil return) or Samples have been
// emitted. It waits for the sink (Put): a full pipeline slows the simulator
// down, and a simulator paced by Rate that fell behind by more than a second
// skips ahead rather than bursting.
func (s *Simulator) Run(ctx context.Context) error {
	o := s.opts
	p := newPump(o.Seed, o.Step, o.plan())
	start := o.Start
	now := o.Clock.Now()
	if start.IsZero() {
		start = now
	}
	pace := pacer{clock: o.Clock, anchor: now, maxLag: time.Second}
	var interval float64
	if o.Rate > 0 {
		interval = float64(time.Second) / o.Rate
	}
	s.log.Info("simulator started", "rate", o.Rate, "step", o.Step, "seed", o.Seed, "faults", o.Faults || len(o.Schedule) > 0)
	for i := 0; o.Samples == 0 || i < o.Samples; i++ {
		if interval > 0 {
			re, err := pace.wait(ctx, time.Duration(float64(i)*interval))
			if err != nil {
				return nil
			}
			if re {
				s.log.Warn("simulator fell behind its rate; skipping ahead", "sample", i)
			}
		} else if ctx.Err() != nil {
			return nil
		}
		smp := p.next()
		vals := make([]float64, numPumpChannels)
		copy(vals, smp.values[:])
		in := Input{
			Source:   o.Name,
			Stream:   o.Stream,
			Time:     start.Add(smp.offset),
			Channels: pumpChannels,
			Values:   vals,
		}
		if err := s.sink.Put(ctx, in); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("simulator %s: put sample %d: %w", o.Name, i, err)
		}
	}
	return nil
}

// defaultSimStart is where WriteCSV's timestamps start when opts.Start is
// zero, so that its output depends on the options alone.
var defaultSimStart = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// WriteCSV writes n samples of the simulated pump to w in SKAB's format:
// ';'-separated, CRLF line ends, a header
// "datetime;Accelerometer1RMS;…;Volume Flow RateRMS;anomaly;changepoint",
// datetime as "2006-01-02 15:04:05" (UTC) and the anomaly (1.0 while a fault
// is active) and changepoint (1.0 where one starts or ends) labels. The
// output depends only on n and opts (Rate, Clock and Logger are ignored;
// a zero Start means 2024-01-01 00:00:00 UTC): the same seed gives the
// same bytes on a given architecture. It is what `vigil simulate --out`
// writes to train the default models.
func WriteCSV(w io.Writer, n int, opts SimulatorOptions) error {
	if err := opts.validate(); err != nil {
		return fmt.Errorf("simulator options: %w", err)
	}
	if n < 0 {
		return fmt.Errorf("write csv: negative sample count %d", n)
	}
	start := opts.Start
	if start.IsZero() {
		start = defaultSimStart
	}
	start = start.UTC()
	p := newPump(opts.Seed, opts.Step, opts.plan())
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString("datetime")
	for _, c := range pumpChannels {
		bw.WriteByte(';')
		bw.WriteString(c)
	}
	bw.WriteString(";anomaly;changepoint\r\n")
	var buf []byte
	for range n {
		smp := p.next()
		buf = start.Add(smp.offset).AppendFormat(buf[:0], SKABTimeLayout)
		for _, v := range smp.values {
			buf = append(buf, ';')
			buf = strconv.AppendFloat(buf, v, 'g', 6, 64)
		}
		buf = append(buf, labelField(smp.anomaly)...)
		buf = append(buf, labelField(smp.changepoint)...)
		buf = append(buf, '\r', '\n')
		if _, err := bw.Write(buf); err != nil {
			return fmt.Errorf("write csv: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	return nil
}

func labelField(b bool) string {
	if b {
		return ";1.0"
	}
	return ";0.0"
}
