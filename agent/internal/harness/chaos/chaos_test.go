package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/forward/amplitude/amplitudetest"
	"github.com/vigil-edge/vigil/agent/forward/dify/difytest"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/internal/testfs"
)

var (
	fullRun = flag.Bool("chaos.full", false, "run the full fault scenarios (longer faults, more kills); also VIGIL_CHAOS=full")
	maxRSS  = flag.Int("chaos.maxrss", 80, "bound on vigil's peak RSS (VmHWM), in MiB; times raceRSSFactor under -race")
	seed    = flag.Uint64("chaos.seed", 0, "seed of the random fault moments; 0 picks one (logged)")
	strict  = flag.Bool("chaos.strict", os.Getenv("VIGIL_CHAOS_STRICT") != "", "fail on known issues too (see knownIssues)")
	report  = flag.String("chaos.report", os.Getenv("VIGIL_CHAOS_REPORT"), "also write the table to this file")
)

// scale stretches the faults: 1 for the CI-sized run, 4 for the full one.
type scale float64

func (s scale) d(base time.Duration) time.Duration { return time.Duration(float64(base) * float64(s)) }
func (s scale) n(base int) int                     { return int(float64(base) * float64(s)) }

// scenario is one fault experiment.
type scenario struct {
	name string
	// span is how long the input lasts, so that the fault happens under
	// load (the replay runs at replaySpeed samples/s per stream).
	span func(s scale) time.Duration
	// set changes the environment.
	set func(st *settings)
	// fault injects the fault while vigil runs and returns when it is over
	// (the recovery clock starts then).
	fault func(ctx context.Context, e *env, s scale, rng *rand.Rand) error
	// check adds scenario-specific checks after vigil stopped.
	check func(e *env, r *result)
}

// result is one row of the table.
type result struct {
	name      string
	dur       time.Duration
	alerts    int // accepted alert records (sequence numbers 1..N)
	delivered int // of those, on the MQTT subscriber and (when forwardable) at Amplitude
	dups      int // copies beyond the first, all with the same id
	lost      int
	rssMiB    float64
	recovery  time.Duration
	problems  []string
	known     []string // problems that are known issues (not failing without -chaos.strict)
	logTail   string   // the end of vigil's log, shown when the scenario fails
}

// knownIssues are invariant violations the suite found in the agent and
// that are reported, not failed, until they are fixed (-chaos.strict fails
// on them). Each names the scenario and a substring of the problem.
var knownIssues = []struct{ scenario, problem, issue string }{
	// None at present. (The first run found that the Dify forwarder ran
	// the workflow again for an alert re-appended after a SIGKILL; its
	// journal now keeps done entries.)
}

func knownIssue(scenario, problem string) string {
	for _, k := range knownIssues {
		if k.scenario == scenario && strings.Contains(problem, k.problem) {
			return k.issue
		}
	}
	return ""
}

func (r *result) failf(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

func scenarios() []scenario {
	return []scenario{
		{
			name: "broker-outage",
			span: func(s scale) time.Duration { return 2*time.Second + s.d(6*time.Second) },
			fault: func(ctx context.Context, e *env, s scale, _ *rand.Rand) error {
				hold(ctx, 2*time.Second)
				e.broker.Stop() // clean stop: the broker keeps the subscriber's session
				hold(ctx, s.d(5*time.Second))
				e.broker.Start()
				return nil
			},
		},
		{
			name: "partition",
			span: func(s scale) time.Duration { return 2*time.Second + s.d(10*time.Second) },
			fault: func(ctx context.Context, e *env, s scale, _ *rand.Rand) error {
				hold(ctx, 2*time.Second)
				e.proxy.Cut() // both ends see a reset
				hold(ctx, s.d(4*time.Second))
				e.proxy.Restore()
				hold(ctx, 2*time.Second)
				e.proxy.Blackhole() // half-open: only the keep-alive can tell
				hold(ctx, s.d(5*time.Second))
				e.proxy.Restore()
				return nil
			},
		},
		{
			name: "flapping-link",
			span: func(s scale) time.Duration { return 2*time.Second + s.d(8*time.Second) },
			fault: func(ctx context.Context, e *env, s scale, rng *rand.Rand) error {
				hold(ctx, 2*time.Second)
				for range s.n(8) {
					e.proxy.Cut()
					hold(ctx, time.Duration(200+rng.IntN(400))*time.Millisecond)
					e.proxy.Restore()
					hold(ctx, time.Duration(300+rng.IntN(900))*time.Millisecond)
				}
				return nil
			},
		},
		{
			name: "slow-link",
			span: func(s scale) time.Duration { return 2*time.Second + s.d(7*time.Second) },
			fault: func(ctx context.Context, e *env, s scale, _ *rand.Rand) error {
				hold(ctx, 2*time.Second)
				// 300 ms round trips and 6 KiB/s: less than the scores'
				// rate, so a backlog builds while alerts must still pass.
				e.proxy.SetLatency(150 * time.Millisecond)
				e.proxy.SetBandwidth(6 << 10)
				hold(ctx, s.d(7*time.Second))
				e.proxy.SetLatency(0)
				e.proxy.SetBandwidth(0)
				return nil
			},
		},
		{
			name: "sigkill",
			span: func(s scale) time.Duration { return 2*time.Second + s.d(6*time.Second) },
			fault: func(ctx context.Context, e *env, s scale, rng *rand.Rand) error {
				for range s.n(3) {
					hold(ctx, time.Duration(300+rng.IntN(2500))*time.Millisecond)
					e.kill()
					e.faultEnd = time.Now() // recovery counts the restart
					e.startVigil()
				}
				return nil
			},
		},
		{
			// A clustered broker: vigil has the three nodes as mqtt.brokers.
			// Kill the node it is on, then the next one (the cluster loses its
			// JetStream quorum: no node takes a session), bring both back,
			// then partition the node it is on by a blackhole.
			name: "cluster-failover",
			span: func(s scale) time.Duration { return 6*time.Second + s.d(12*time.Second) },
			set:  func(st *settings) { st.cluster = true },
			fault: func(ctx context.Context, e *env, s scale, _ *rand.Rand) error {
				hold(ctx, 2*time.Second)
				node, err := e.clusterNode(ctx, -1)
				if err != nil {
					return err
				}
				killed := node
				t0 := time.Now()
				e.cluster.Node(node).Kill()
				if node, err = e.clusterNode(ctx, node); err != nil {
					return fmt.Errorf("after killing %s: %w", e.cluster.Node(killed).Name(), err)
				}
				e.notes = append(e.notes, fmt.Sprintf("killed %s: on %s after %v", e.cluster.Node(killed).Name(), e.cluster.Node(node).Name(), time.Since(t0).Round(time.Millisecond)))
				hold(ctx, s.d(2*time.Second))
				e.cluster.Node(node).Kill() // no quorum left
				hold(ctx, s.d(3*time.Second))
				t0 = time.Now()
				e.cluster.Node(killed).Start()
				e.cluster.Node(node).Start()
				e.cluster.WaitReady(90 * time.Second)
				election := time.Since(t0)
				if node, err = e.clusterNode(ctx, -1); err != nil {
					return fmt.Errorf("after the nodes came back: %w", err)
				}
				back := time.Since(t0)
				e.notes = append(e.notes, fmt.Sprintf("two nodes down, then back: the cluster ready after %v, vigil on %s after %v",
					election.Round(time.Millisecond), e.cluster.Node(node).Name(), back.Round(time.Millisecond)))
				// Reconnected within mqtt.reconnect_max (10 s, the default) plus
				// the cluster's own election time, with a connect timeout of slack.
				if bound := 10*time.Second + election + 2*time.Second; back > bound {
					return fmt.Errorf("vigil reconnected %v after the nodes came back, above reconnect_max + election = %v", back, bound)
				}
				hold(ctx, s.d(2*time.Second))
				part := node
				t0 = time.Now()
				e.cluster.Node(part).Proxy().Blackhole()
				if node, err = e.clusterNode(ctx, part); err != nil {
					return fmt.Errorf("after partitioning %s: %w", e.cluster.Node(part).Name(), err)
				}
				e.notes = append(e.notes, fmt.Sprintf("partitioned %s: on %s after %v", e.cluster.Node(part).Name(), e.cluster.Node(node).Name(), time.Since(t0).Round(time.Millisecond)))
				hold(ctx, s.d(2*time.Second))
				e.cluster.Node(part).Proxy().Restore()
				return nil
			},
			check: func(e *env, r *result) {
				if f, _ := e.lastMet.sum("vigil_mqtt_failovers_total"); f < 2 {
					r.failf("vigil_mqtt_failovers_total = %v; want at least 2", f)
				}
			},
		},
		{
			name: "disk-cap",
			span: func(s scale) time.Duration { return 2*time.Second + s.d(8*time.Second) },
			set: func(st *settings) {
				// 96 KiB for everything: scores pile up while the broker is
				// unreachable and must be evicted before any alert.
				st.bufferYAML = "{kind: badger, memory_budget: 16MiB, max_bytes: 96KiB, max_record_bytes: 16KiB}"
			},
			fault: func(ctx context.Context, e *env, s scale, _ *rand.Rand) error {
				hold(ctx, 2*time.Second)
				e.proxy.Cut()
				hold(ctx, s.d(8*time.Second))
				e.proxy.Restore()
				return nil
			},
			check: func(e *env, r *result) {
				ev, _ := e.lastMet.sum("vigil_buffer_evicted_total", `lane="score"`)
				if ev == 0 {
					r.failf("the cap was never reached: no score evicted")
				}
				if ev, _ := e.lastMet.sum("vigil_buffer_evicted_total", `lane="alert"`); ev > 0 {
					r.failf("%v alerts evicted", ev)
				}
				if rej, _ := e.lastMet.sum("vigil_buffer_rejected_total"); rej > 0 {
					r.failf("%v appends rejected", rej)
				}
				e.notes = append(e.notes, fmt.Sprintf("scores evicted at the cap: %v", ev))
			},
		},
		{
			// The disk fills up: data_dir is on a 48 MiB filesystem of its
			// own, smaller than the buffer's cap; the broker is unreachable
			// so records pile up, and another writer fills the rest of the
			// disk, as dd would. Vigil must keep running, refuse and count
			// appends while the disk is full (nothing it accepted is lost),
			// and deliver again by itself once the space is back.
			name: "disk-fills-up",
			span: func(s scale) time.Duration { return 2*time.Second + s.d(8*time.Second) },
			set: func(st *settings) {
				st.smallFS = 48 << 20
				st.bufferYAML = "{kind: badger, memory_budget: 16MiB, max_record_bytes: 64KiB}"
			},
			fault: func(ctx context.Context, e *env, s scale, _ *rand.Rand) error {
				hold(ctx, 2*time.Second)
				e.proxy.Cut()
				hold(ctx, s.d(2*time.Second))
				filler := filepath.Join(e.fsDir, "filler")
				n, err := testfs.FillFile(filler)
				if err != nil {
					return fmt.Errorf("fill the disk: %w", err)
				}
				full := func() bool {
					m, err := e.metrics()
					v, _ := m.sum("vigil_buffer_disk_full")
					return err == nil && v == 1
				}
				if err := waitFor(10*time.Second, full); err != nil {
					return fmt.Errorf("the buffer never reported the disk full after %d bytes of filler: %w", n, err)
				}
				hold(ctx, s.d(3*time.Second)) // full while events keep coming
				m, err := e.metrics()
				if err != nil {
					return err
				}
				ns, _ := m.sum("vigil_buffer_no_space_total")
				e.notes = append(e.notes, fmt.Sprintf("filler took %d MiB; appends refused while full: %v", n>>20, ns))
				if err := os.Remove(filler); err != nil {
					return err
				}
				if err := waitFor(10*time.Second, func() bool { return !full() }); err != nil {
					return fmt.Errorf("the buffer still reports the disk full after the space returned: %w", err)
				}
				e.proxy.Restore()
				return nil
			},
			check: func(e *env, r *result) {
				if ns, _ := e.lastMet.sum("vigil_buffer_no_space_total"); ns == 0 {
					r.failf("no append was refused for lack of space: the disk never filled")
				}
			},
		},
		{
			name: "amplitude-storm",
			span: func(s scale) time.Duration { return 2*time.Second + s.d(8*time.Second) },
			fault: func(ctx context.Context, e *env, s scale, rng *rand.Rand) error {
				storm(ctx, s, rng, e.amp.SetFaultFunc, func(amplitudetest.Request) bool { return true },
					&amplitudetest.Fault{Status: 500},
					&amplitudetest.Fault{Status: 503},
					&amplitudetest.Fault{Status: 429, RetryAfter: "1"},
					&amplitudetest.Fault{Reset: true},
					&amplitudetest.Fault{Hang: true},               // until amplitude.timeout
					&amplitudetest.Fault{Apply: true, Status: 502}, // ingested, yet failed
					nil, nil)
				return nil
			},
		},
		{
			name: "dify-storm",
			span: func(s scale) time.Duration { return 2*time.Second + s.d(8*time.Second) },
			fault: func(ctx context.Context, e *env, s scale, rng *rand.Rand) error {
				// Lookups answer, so ambiguity can be resolved.
				run := func(r difytest.Request) bool {
					return r.Method == "POST" && strings.HasSuffix(r.Path, "/workflows/run")
				}
				storm(ctx, s, rng, e.dify.SetFaultFunc, run,
					&difytest.Fault{Status: 500},
					&difytest.Fault{Status: 502, AfterRecord: true}, // it ran, the client sees an error
					&difytest.Fault{Status: 429, RetryAfter: "1"},
					&difytest.Fault{ResetBefore: true},
					&difytest.Fault{ResetAfter: true},
					&difytest.Fault{Hang: true}, // until dify.timeout
					nil, nil)
				return nil
			},
		},
		{
			name: "clock-jump",
			span: func(s scale) time.Duration { return 0 }, // MQTT input, published by the fault
			set:  func(st *settings) { st.mqttSource = true },
			fault: func(ctx context.Context, e *env, s scale, _ *rand.Rand) error {
				return clockJump(ctx, e, s)
			},
		},
	}
}

// storm lets a second pass, then, for 8 s at scale, answers each request
// to a service double that hit takes with one of faults drawn at random (a
// nil one: answered normally), and then stops: set is the double's
// SetFaultFunc.
func storm[R, F any](ctx context.Context, s scale, rng *rand.Rand, set func(func(R) *F), hit func(R) bool, faults ...*F) {
	hold(ctx, time.Second)
	var mu sync.Mutex
	set(func(r R) *F {
		if !hit(r) {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		f := faults[rng.IntN(len(faults))]
		if f == nil {
			return nil
		}
		c := *f
		return &c
	})
	hold(ctx, s.d(8*time.Second))
	set(nil)
}

// clockJump publishes pump samples on the local bus whose timestamps jump
// forwards by J, run on, then jump back by J (to where they were before the
// forward jump), as a device clock stepped by NTP or by hand would make
// them. Vigil cannot have its own wall clock changed in a test (Go reads
// CLOCK_REALTIME through the vDSO, so neither libfaketime nor a namespace
// helps without root on the host); what the agent does with time it reads
// from the samples is what this covers.
func clockJump(ctx context.Context, e *env, s scale) error {
	jump := s.d(10 * time.Minute)
	phase := replaySpeed * 3 // samples per phase: 3 s each
	// Normal, jumped forward, jumped back (the pipeline drops a window's
	// worth as late, then follows the new timeline: reason clock_step),
	// caught up.
	catchUp := int(jump / time.Second)
	total := 3*phase + catchUp
	var csv bytes.Buffer
	if err := source.WriteCSV(&csv, total, faultPlan(11)); err != nil {
		return fmt.Errorf("clock-jump samples: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(csv.String()), "\r\n")[1:]
	c := paho.NewClient(e.broker.ClientOptions("chaos-pub"))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("clock-jump publisher: %v", tok.Error())
	}
	defer c.Disconnect(100)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var last paho.Token
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var windowsAtBack float64
	backAt := time.Time{}
	for i, line := range lines {
		ts := base.Add(time.Duration(i) * time.Second)
		switch {
		case i >= phase && i < 2*phase:
			ts = ts.Add(jump)
		case i == 2*phase:
			if m, err := e.metrics(); err == nil {
				windowsAtBack, _ = m.sum("vigil_stream_windows_total", `stream="pump1"`)
			}
			backAt = time.Now()
		}
		f := strings.Split(line, ";")
		msg := map[string]any{"ts": ts.UnixMilli()}
		for j, name := range pumpColumns {
			v, _ := strconv.ParseFloat(f[j+1], 64)
			msg[name] = v
		}
		b, _ := json.Marshal(msg)
		last = c.Publish("chaos/pump1", 1, false, b)
		if i%(replaySpeed/20) == replaySpeed/20-1 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
		}
	}
	if last != nil && (!last.WaitTimeout(30*time.Second) || last.Error() != nil) {
		return fmt.Errorf("clock-jump publish: %v", last.Error())
	}
	// Scoring must resume after the backward step (within a window's worth
	// of samples, not once the samples' clock passes the newest one).
	var resumed time.Duration
	err := waitFor(30*time.Second, func() bool {
		m, err := e.metrics()
		if err != nil {
			return false
		}
		w, _ := m.sum("vigil_stream_windows_total", `stream="pump1"`)
		if w > windowsAtBack+float64(phase/10)/2 {
			resumed = time.Since(backAt)
			return true
		}
		return false
	})
	m, _ := e.metrics()
	late, _ := m.sum("vigil_drops_total", `reason="late"`)
	ooo, _ := m.sum("vigil_drops_total", `reason="out_of_order"`)
	steps, _ := m.sum("vigil_drops_total", `reason="clock_step"`)
	e.notes = append(e.notes, fmt.Sprintf("jump ±%v: %v samples dropped as late, %v out of order, %v clock steps followed; scoring resumed %.1fs after the backward jump",
		jump, late, ooo, steps, resumed.Seconds()))
	if err == nil && steps < 1 {
		err = errors.New("the backward step was not followed (no clock_step counted)")
	}
	if err != nil {
		return fmt.Errorf("scoring did not resume after the backward clock jump: %w", err)
	}
	return nil
}

// TestChaos runs every scenario and prints the table. Select scenarios with
// -run 'TestChaos/sigkill'.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("fault-injection suite (real vigil, mosquitto, minutes): not in -short")
	}
	sc := scale(1)
	if *fullRun || os.Getenv("VIGIL_CHAOS") == "full" {
		sc = 4
	}
	s := *seed
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("chaos: scale %v, seed %d (-chaos.seed=%d repeats the fault moments)", sc, s, s)
	var rows []*result
	start := time.Now()
	for i, scn := range scenarios() {
		t.Run(scn.name, func(t *testing.T) {
			r := &result{name: scn.name}
			rows = append(rows, r)
			defer func() {
				if t.Failed() && len(r.problems) == 0 {
					r.failf("aborted (see the test log)")
				}
			}()
			runScenario(t, r, scn, sc, rand.New(rand.NewPCG(s, uint64(i))))
			for _, p := range r.problems {
				if k := knownIssue(scn.name, p); k != "" && !*strict {
					r.known = append(r.known, k)
					t.Logf("%s: known issue (%s): %s", scn.name, k, p)
					continue
				}
				t.Errorf("%s: %s", scn.name, p)
			}
			if t.Failed() {
				t.Logf("vigil log (tail):\n%s", r.logTail)
			}
		})
	}
	table := formatTable(rows)
	t.Logf("chaos: %d scenarios in %v", len(rows), time.Since(start).Round(time.Second))
	fmt.Fprint(os.Stdout, table) // the suite's report: one row per scenario
	if *report != "" {
		if err := os.WriteFile(*report, []byte(table), 0o644); err != nil {
			t.Errorf("write report: %v", err)
		}
	}
}

func formatTable(rows []*result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-16s %8s %7s %9s %5s %5s %8s %9s  %s\n", "scenario", "duration", "alerts", "delivered", "dups", "lost", "maxRSS", "recovery", "result")
	for _, r := range rows {
		res := "pass"
		if len(r.problems) > len(r.known) {
			res = "FAIL: " + strings.Join(r.problems, "; ")
		} else if len(r.known) > 0 {
			res = "pass, known issue: " + strings.Join(slices.Compact(r.known), "; ")
		}
		fmt.Fprintf(&b, "%-16s %7.1fs %7d %9d %5d %5d %6.1fMB %8.1fs  %s\n", r.name, r.dur.Seconds(), r.alerts, r.delivered,
			r.dups, r.lost, r.rssMiB, r.recovery.Seconds(), res)
	}
	return b.String()
}

func runScenario(t *testing.T, r *result, scn scenario, sc scale, rng *rand.Rand) {
	begin := time.Now()
	st := settings{rows: int(scn.span(sc).Seconds()+4) * replaySpeed}
	if scn.set != nil {
		scn.set(&st)
	}
	e := newEnv(t, st)
	defer func() {
		r.dur = time.Since(begin)
		r.rssMiB = float64(e.maxRSS.Load()) / (1 << 20)
		bound := float64(*maxRSS)
		if raceEnabled {
			bound *= raceRSSFactor
		}
		if r.rssMiB > bound {
			r.failf("peak RSS %.1f MiB above the bound of %.0f MiB", r.rssMiB, bound)
		}
		for _, n := range e.notes {
			t.Logf("%s: %s", scn.name, n)
		}
		r.logTail = e.logTail()
	}()
	e.startVigil()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := scn.fault(ctx, e, sc, rng); err != nil {
		r.failf("fault: %v", err)
	}
	end := time.Now()
	if !e.faultEnd.IsZero() {
		end = e.faultEnd
	}
	var err error
	if r.recovery, err = e.waitCaughtUp(end, 90*time.Second); err != nil {
		r.failf("recovery: %v", err)
		r.recovery = time.Since(end)
	}
	if !st.mqttSource {
		if err := e.waitInputDone(time.Duration(st.rows/replaySpeed)*time.Second + 60*time.Second); err != nil {
			r.failf("the replay did not finish: %v", err)
		}
	}
	if _, err := e.waitCaughtUp(time.Now(), 90*time.Second); err != nil {
		r.failf("final delivery: %v", err)
	}
	if err := e.stopVigil(30 * time.Second); err != nil {
		r.failf("%v", err)
	}
	last, err := e.accepted()
	if err != nil {
		r.failf("%v", err)
		return
	}
	e.verify(r, last)
	if scn.check != nil {
		scn.check(e, r)
	}
}

// verify checks the invariants over what the subscriber and the doubles
// received against what vigil accepted.
func (e *env) verify(r *result, last map[string]uint64) {
	n := last[record.LaneAlert]
	r.alerts = int(n)
	if n == 0 {
		r.failf("no alert at all: the scenario proves nothing")
		return
	}
	// The broker acknowledged every alert before vigil stopped (the lag was
	// 0); the subscriber gets them from its session shortly after.
	_ = waitFor(20*time.Second, func() bool {
		got := map[uint64]bool{}
		for _, m := range e.sub.messages() {
			var a record.Alert
			if strings.Contains(m.Topic, "/alerts/") && json.Unmarshal(m.Payload, &a) == nil {
				got[a.Seq] = true
			}
		}
		return len(got) >= int(n)
	})
	first := map[uint64]record.Alert{}
	idSeq := map[string]uint64{}
	byWindow := map[string]string{}
	advice := map[string]bool{}
	var liveLast, replayedLast uint64
	var orderErrs, replayed int
	for _, m := range e.sub.messages() {
		if strings.Contains(m.Topic, "/advice/") {
			var a record.Advice
			if err := json.Unmarshal(m.Payload, &a); err != nil {
				r.failf("advice on %s is not JSON: %v", m.Topic, err)
				continue
			}
			advice[a.AlertID] = true
			continue
		}
		var a record.Alert
		if err := json.Unmarshal(m.Payload, &a); err != nil {
			r.failf("alert on %s is not JSON: %v", m.Topic, err)
			continue
		}
		if a.Seq == 0 || a.Seq > n {
			r.failf("alert %s with seq %d outside 1..%d", a.ID, a.Seq, n)
			continue
		}
		if prev, ok := first[a.Seq]; ok {
			r.dups++
			if prev.ID != a.ID {
				r.failf("seq %d published with two ids %s and %s", a.Seq, prev.ID, a.ID)
			}
			continue
		}
		first[a.Seq] = a
		if a.Replayed {
			replayed++
		}
		// Order within the lane: live records in sequence order, and the
		// backlog behind them in sequence order too.
		lastOf := &liveLast
		if a.Replayed {
			lastOf = &replayedLast
		}
		if a.Seq < *lastOf {
			orderErrs++
			if orderErrs <= 3 {
				r.failf("order: seq %d (replayed %v) after %d", a.Seq, a.Replayed, *lastOf)
			}
		}
		*lastOf = max(*lastOf, a.Seq)
		// The same alert (the same window of the same stream and key,
		// scored by the same model) must always carry the same id.
		w := a.Stream + "|" + a.Key + "|" + a.Window.End.UTC().Format(time.RFC3339Nano) + "|" + a.Model
		if id, ok := byWindow[w]; ok && id != a.ID {
			r.failf("duplicate without the same id: %s and %s for %s", id, a.ID, w)
		}
		byWindow[w] = a.ID
		if _, ok := idSeq[a.ID]; ok {
			r.dups++ // appended again (after a restart) with the same id
		} else {
			idSeq[a.ID] = a.Seq
		}
	}
	if orderErrs > 3 {
		r.failf("order: %d records out of order in all", orderErrs)
	}
	amp := e.amp.InsertIDs()
	r.dups += e.amp.Duplicates()
	var lostMQTT, lostAmp []uint64
	for seq := uint64(1); seq <= n; seq++ {
		a, ok := first[seq]
		switch {
		case !ok:
			lostMQTT = append(lostMQTT, seq)
		case record.SeverityRank(a.Severity) >= record.SeverityRank(record.SeverityWarning) && amp[a.ID] == 0:
			lostAmp = append(lostAmp, seq)
		default:
			r.delivered++
		}
	}
	r.lost = len(lostMQTT) + len(lostAmp)
	if len(lostMQTT) > 0 {
		r.failf("%d accepted alerts never reached the MQTT subscriber (seqs %v)", len(lostMQTT), head(lostMQTT))
	}
	if len(lostAmp) > 0 {
		r.failf("%d accepted alerts never reached Amplitude (seqs %v)", len(lostAmp), head(lostAmp))
	}
	// Dify: every major alert got advice, and no alert ran twice
	// successfully.
	var noAdvice []string
	for id, seq := range idSeq {
		if record.SeverityRank(first[seq].Severity) >= record.SeverityRank(record.SeverityMajor) && !advice[id] {
			noAdvice = append(noAdvice, id)
		}
	}
	if len(noAdvice) > 0 {
		r.failf("%d major alerts without advice (e.g. %s)", len(noAdvice), noAdvice[0])
	}
	for id, runs := range e.dify.Succeeded() {
		if runs > 1 {
			r.failf("Dify ran %d times successfully for alert %s", runs, id)
		}
	}
	if dl := last["deadletter"]; dl > 0 {
		r.failf("%d dead letters", dl)
	}
	e.notes = append(e.notes, fmt.Sprintf("%d alerts first delivered as replayed backlog, %d distinct alert ids, %d advice, %d Amplitude requests, %d Dify requests, %d vigil starts, scores accepted %d",
		replayed, len(idSeq), len(advice), len(e.amp.Requests()), len(e.dify.Requests()), e.starts, last[record.LaneScore]))
}

func head(s []uint64) []uint64 {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}
