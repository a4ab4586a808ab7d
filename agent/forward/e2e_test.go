package forward_test

// End-to-end tests of both forwarders together: alerts go to Amplitude and
// to Dify, Dify's advice goes to the advice lane and from there to
// Amplitude. TestStorm runs them in process over a memory buffer through a
// storm of injected failures; TestKillAndRestart runs them in a child
// process over a Badger buffer on disk, kills it with SIGKILL at chosen
// moments and restarts it, while the doubles run here.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/amplitude"
	"github.com/vigil-edge/vigil/agent/forward/amplitude/amplitudetest"
	"github.com/vigil-edge/vigil/agent/forward/dify"
	"github.com/vigil-edge/vigil/agent/forward/dify/difytest"
	"github.com/vigil-edge/vigil/agent/forward/forwardtest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/secret"
	"github.com/vigil-edge/vigil/buffer"
)

const (
	ampKey  = "amp-SECRET-e2e-0123456789"
	difyKey = "dify-SECRET-e2e-0123456789"
	device  = "pump-01"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// theAlerts are n alerts on distinct streams, a third of each severity.
func theAlerts(n int) []record.Alert {
	sev := []string{record.SeverityWarning, record.SeverityMajor, record.SeverityCritical}
	out := make([]record.Alert, n)
	for i := range out {
		end := t0.Add(time.Duration(i) * time.Second)
		a := record.Alert{
			TS: end, Device: device, Stream: fmt.Sprintf("s%d", i), Kind: "sensor", Score: 0.9, Threshold: 0.5,
			Severity: sev[i%3], Episode: fmt.Sprintf("ep-%d", i), State: "open",
			Window: record.Window{Start: end.Add(-6 * time.Second), End: end}, Model: "pump8@3",
			TopFeatures: []record.Feature{{Name: "a1", Share: 0.7}},
		}
		if i%4 == 0 {
			a.Kind, a.Key = "behaviour", fmt.Sprintf("user-%04d", i)
		}
		a.ID = record.ID("alert", device, a.Stream, a.Key, end, a.Model)
		out[i] = a
	}
	return out
}

// eligible are the alerts Dify runs for (major and up).
func eligible(as []record.Alert) []record.Alert {
	var out []record.Alert
	for _, a := range as {
		if record.SeverityRank(a.Severity) >= record.SeverityRank(record.SeverityMajor) {
			out = append(out, a)
		}
	}
	return out
}

// fastOptions are both forwarders' options with short delays, for tests
// on the real clock.
func fastOptions(ampURL, difyURL string, log *slog.Logger) (amplitude.Options, dify.Options) {
	ao := amplitude.DefaultOptions()
	ao.APIKey, ao.DeviceID, ao.Endpoint, ao.Logger = secret.Secret(ampKey), device, ampURL, log
	ao.FlushInterval = 20 * time.Millisecond
	ao.MaxBatch = 10
	ao.Timeout = 500 * time.Millisecond
	ao.Backoff = forward.Backoff{Initial: 5 * time.Millisecond, Max: 100 * time.Millisecond}
	ao.ThrottlePause = 50 * time.Millisecond
	do := dify.DefaultOptions()
	do.APIKey, do.BaseURL, do.Logger = secret.Secret(difyKey), difyURL, log
	do.ResponseMode = dify.ModeStreaming
	do.RateLimit = dify.Rate{}
	do.Cooldown = 0
	do.Timeout = 500 * time.Millisecond
	do.RequestTimeout = 500 * time.Millisecond
	do.Backoff = forward.Backoff{Initial: 5 * time.Millisecond, Max: 100 * time.Millisecond}
	do.LookupGrace = 50 * time.Millisecond
	do.PollInterval = 10 * time.Millisecond
	return ao, do
}

// runBoth runs both forwarders over buf until ctx ends.
func runBoth(ctx context.Context, buf interface {
	amplitude.Buffer
	RegisterConsumer(string, ...string) error
}, ao amplitude.Options, do dify.Options) error {
	af, err := amplitude.New(buf, ao)
	if err != nil {
		return err
	}
	df, err := dify.New(buf, do)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return af.Run(ctx) })
	g.Go(func() error { return df.Run(ctx) })
	return g.Wait()
}

// temporary faults for the storms: every one may be retried, none ends a
// run as failed, so every eligible alert must get one successful run.
var (
	ampFaults = []amplitudetest.Fault{
		{Status: 500}, {Status: 502}, {Status: 503}, {Status: 504}, {Status: 429},
		{Hang: true}, {Reset: true}, {Apply: true, Status: 500}, {Apply: true, Status: 504},
	}
	difyFaults = []difytest.Fault{
		{Status: 429}, {Status: 500}, {Status: 500, AfterRecord: true}, {Status: 502, AfterRecord: true},
		{Status: 503}, {Hang: true}, {Hang: true, Running: 2}, {ResetBefore: true}, {ResetAfter: true},
		{StreamError: &difytest.StreamError{Status: 429, Code: "too_many_requests", Message: "busy"}},
	}
	difyGetFaults = []difytest.Fault{{Status: 500}, {Status: 502}, {ResetBefore: true}}
)

// storm installs random temporary faults on both doubles: a share rate of
// the requests fail.
func storm(seed uint64, rate float64, amp *amplitudetest.Server, dfy *difytest.Server) {
	amp.SetFaultFunc(stormAmplitude(seed, rate))
	dfy.SetFaultFunc(stormDify(seed+100, rate))
}

func stormAmplitude(seed uint64, rate float64) func(amplitudetest.Request) *amplitudetest.Fault {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed+1))
	return func(amplitudetest.Request) *amplitudetest.Fault {
		mu.Lock()
		defer mu.Unlock()
		if rng.Float64() >= rate {
			return nil
		}
		f := ampFaults[rng.IntN(len(ampFaults))]
		return &f
	}
}

func stormDify(seed uint64, rate float64) func(difytest.Request) *difytest.Fault {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed+1))
	return func(r difytest.Request) *difytest.Fault {
		mu.Lock()
		defer mu.Unlock()
		if rng.Float64() >= rate {
			return nil
		}
		if r.Method == http.MethodGet {
			f := difyGetFaults[rng.IntN(len(difyGetFaults))]
			return &f
		}
		f := difyFaults[rng.IntN(len(difyFaults))]
		return &f
	}
}

// missing lists what has not arrived yet: an alert or an eligible alert's
// advice at Amplitude, a successful run of an eligible alert.
func missing(as []record.Alert, amp *amplitudetest.Server, dfy *difytest.Server) []string {
	got := amp.InsertIDs()
	ok := dfy.Succeeded()
	var out []string
	for _, a := range as {
		if got[a.ID] == 0 {
			out = append(out, "event "+a.ID)
		}
	}
	for _, a := range eligible(as) {
		if ok[a.ID] == 0 {
			out = append(out, "run "+a.ID)
		}
		if got[dify.AdviceID(a.ID)] == 0 {
			out = append(out, "advice event "+a.ID)
		}
	}
	return out
}

func done(as []record.Alert, amp *amplitudetest.Server, dfy *difytest.Server) bool {
	return len(missing(as, amp, dfy)) == 0
}

// check asserts exactly once: each alert and each eligible alert's advice
// ingested once by insert_id, nothing else; exactly one successful run per
// eligible alert, none for the others.
func check(t *testing.T, as []record.Alert, amp *amplitudetest.Server, dfy *difytest.Server) {
	t.Helper()
	want := map[string]string{}
	for _, a := range as {
		want[a.ID] = amplitude.EventAnomaly
	}
	for _, a := range eligible(as) {
		want[dify.AdviceID(a.ID)] = amplitude.EventAdvice
	}
	seen := map[string]int{}
	for _, e := range amp.Events() {
		seen[e.InsertID]++
		if want[e.InsertID] != e.EventType {
			t.Errorf("event %s of type %s, want %q", e.InsertID, e.EventType, want[e.InsertID])
		}
		if e.EventType == amplitude.EventAdvice && (e.EventProperties["status"] != "succeeded" || e.EventProperties["outputs"] == nil) {
			t.Errorf("advice event %s: %v", e.InsertID, e.EventProperties)
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("insert_id %s ingested %d times, want 1", id, seen[id])
		}
	}
	ok := dfy.Succeeded()
	for _, a := range as {
		n := 0
		if record.SeverityRank(a.Severity) >= record.SeverityRank(record.SeverityMajor) {
			n = 1
		}
		if ok[a.ID] != n {
			t.Errorf("alert %s (%s): %d successful runs, want %d", a.ID, a.Severity, ok[a.ID], n)
		}
	}
}

// register registers both forwarders as consumers of their lanes.
func register(t *testing.T, buf interface {
	RegisterConsumer(string, ...string) error
}) {
	t.Helper()
	for name, lanes := range map[string][]string{amplitude.Consumer: amplitude.Lanes(), dify.Consumer: dify.Lanes()} {
		if err := buf.RegisterConsumer(name, lanes...); err != nil {
			t.Fatal(err)
		}
	}
}

func checkNoSecret(t *testing.T, where, s string) {
	t.Helper()
	for _, k := range []string{ampKey, difyKey} {
		if strings.Contains(s, k) {
			t.Errorf("an API key appears in %s", where)
		}
	}
}

// TestStorm: both forwarders over a memory buffer, through a storm of
// temporary failures on both services.
func TestStorm(t *testing.T) {
	amp := amplitudetest.NewServer(amplitudetest.Options{APIKey: ampKey})
	defer amp.Close()
	dfy := difytest.NewServer(difytest.Options{APIKey: difyKey})
	defer dfy.Close()
	storm(11, 0.3, amp, dfy)
	buf := forwardtest.NewMemory(t)
	// Consumers register before anything is appended, as the daemon's
	// wiring must do: a record every registered consumer acknowledged is
	// gone, and a consumer registered later never sees it. "mqtt" stands
	// for the MQTT publisher on the advice lane.
	register(t, buf)
	if err := buf.RegisterConsumer("mqtt", record.LaneAdvice); err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	ao, do := fastOptions(amp.HTTPURL(), dfy.BaseURL(), logs.Logger())
	as := theAlerts(60)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- runBoth(ctx, buf, ao, do) }()
	for i := 0; i < len(as); i += 10 {
		var data [][]byte
		for _, a := range as[i : i+10] {
			b, _ := json.Marshal(a)
			data = append(data, b)
		}
		if _, err := buf.Append(ctx, record.LaneAlert, data...); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(40 * time.Second)
	for !done(as, amp, dfy) {
		if time.Now().After(deadline) {
			t.Fatalf("not delivered after 40s: %v\nlog:\n%s", missing(as, amp, dfy), tail(logs.String(), 60))
		}
		time.Sleep(5 * time.Millisecond) // polling, not a timed assertion
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	check(t, as, amp, dfy)
	checkNoSecret(t, "the log", logs.String())
	recs, err := buf.Read("mqtt", record.LaneAdvice, 1000)
	if err != nil {
		t.Fatal(err)
	}
	advised := map[string]bool{}
	for _, r := range recs {
		var a record.Advice
		json.Unmarshal(r.Data, &a)
		if a.ID != dify.AdviceID(a.AlertID) || a.Status != "succeeded" || a.Outputs["advice"] == nil {
			t.Errorf("advice record %s", r.Data)
		}
		advised[a.AlertID] = true
	}
	for _, a := range eligible(as) {
		if !advised[a.ID] {
			t.Errorf("no advice record for alert %s in the advice lane", a.ID)
		}
	}
	t.Logf("%v; dify: %d requests, %d runs", amp, len(dfy.Requests()), len(dfy.Runs()))
}

// Environment of the child process of TestKillAndRestart.
const (
	envChild   = "VIGIL_FORWARD_E2E_CHILD"
	envDir     = "VIGIL_FORWARD_E2E_DIR"
	envAmpURL  = "VIGIL_FORWARD_E2E_AMPLITUDE"
	envDifyURL = "VIGIL_FORWARD_E2E_DIFY"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

func badgerOptions(dir string) buffer.BadgerOptions {
	o := buffer.DefaultBadgerOptions(dir)
	o.Lanes = forwardtest.Lanes()
	return o
}

// child runs both forwarders over the Badger buffer until SIGTERM (or
// SIGKILL), logging to stderr.
func child() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	buf, err := buffer.OpenBadger(badgerOptions(os.Getenv(envDir)))
	if err != nil {
		log.Error("open buffer", "err", err)
		return 1
	}
	defer buf.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ao, do := fastOptions(os.Getenv(envAmpURL), os.Getenv(envDifyURL), log)
	if err := runBoth(ctx, buf, ao, do); err != nil {
		log.Error("run", "err", err)
		return 1
	}
	return 0
}

// TestKillAndRestart runs the forwarders in a child process over Badger,
// kills it with SIGKILL at chosen moments (right after Dify recorded a run,
// before the child could store the advice; right after Amplitude ingested a
// batch, before the child could acknowledge it; at a random request; a
// random time after a start) and restarts it, through a storm of failures, until everything arrived. Each
// alert then reached Amplitude once by insert_id and had one successful run.
func TestKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test: not in -short")
	}
	dir := t.TempDir()
	as := theAlerts(30)
	func() {
		buf, err := buffer.OpenBadger(badgerOptions(dir))
		if err != nil {
			t.Fatal(err)
		}
		defer buf.Close()
		register(t, buf)
		for _, a := range as {
			b, _ := json.Marshal(a)
			if _, err := buf.Append(context.Background(), record.LaneAlert, b); err != nil {
				t.Fatal(err)
			}
		}
	}()

	rng := rand.New(rand.NewPCG(2025, 7))
	var (
		mu       sync.Mutex
		proc     *os.Process
		kills    []string
		runs     int
		ingests  int
		requests int
	)
	// Kill points, counted over the whole test.
	killRun := map[int]bool{2 + rng.IntN(3): true, 8 + rng.IntN(4): true}
	killIngest := map[int]bool{2 + rng.IntN(3): true}
	killRequest := 20 + rng.IntN(20)
	kill := func(why string) {
		if proc != nil {
			proc.Signal(syscall.SIGKILL)
			kills = append(kills, why)
			proc = nil
		}
	}
	// killAt counts one more event in *n and kills the agent when that
	// count is one of the kill points at; why names the event with %d.
	killAt := func(n *int, at map[int]bool, why string) {
		mu.Lock()
		defer mu.Unlock()
		if *n++; at[*n] {
			kill(fmt.Sprintf(why, *n))
		}
	}
	amp := amplitudetest.NewServer(amplitudetest.Options{APIKey: ampKey, AfterIngest: func(amplitudetest.Request) {
		killAt(&ingests, killIngest, "after Amplitude ingested batch %d")
	}})
	defer amp.Close()
	dfy := difytest.NewServer(difytest.Options{APIKey: difyKey, AfterRecord: func(difytest.Run) {
		killAt(&runs, killRun, "after Dify recorded run %d")
	}})
	defer dfy.Close()
	amp.SetFaultFunc(stormAmplitude(5, 0.15))
	difyStorm := stormDify(6, 0.15)
	dfy.SetFaultFunc(func(r difytest.Request) *difytest.Fault {
		// Besides the storm, a kill at some request.
		mu.Lock()
		if requests++; requests == killRequest {
			kill(fmt.Sprintf("at Dify request %d (%s %s)", requests, r.Method, r.Path))
		}
		mu.Unlock()
		return difyStorm(r)
	})

	logs := &testkit.Buffer{}
	deadline := time.Now().Add(45 * time.Second)
	for gen := 1; ; gen++ {
		if gen > 10 || time.Now().After(deadline) {
			t.Fatalf("not done after %d starts; kills %v; %v; dify runs %d", gen-1, kills, amp, len(dfy.Runs()))
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envChild+"=1", envDir+"="+dir, envAmpURL+"="+amp.HTTPURL(), envDifyURL+"="+dfy.BaseURL())
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		proc = cmd.Process
		mu.Unlock()
		if gen == 2 {
			// And once at a moment that no protocol step chooses.
			this, after := cmd.Process, time.Duration(10+rng.IntN(50))*time.Millisecond
			time.AfterFunc(after, func() {
				mu.Lock()
				defer mu.Unlock()
				if proc == this {
					kill(fmt.Sprintf("%v after the second start", after))
				}
			})
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		finished := false
		for !finished {
			select {
			case err := <-exited:
				mu.Lock()
				killed := proc == nil
				mu.Unlock()
				if !killed {
					t.Fatalf("child exited by itself: %v\n%s", err, logs)
				}
				finished = true
			case <-time.After(5 * time.Millisecond): // polling, not a timed assertion
				if done(as, amp, dfy) {
					mu.Lock()
					p := proc
					proc = nil
					mu.Unlock()
					if p != nil {
						p.Signal(syscall.SIGTERM)
					}
					if err := <-exited; err != nil && p != nil {
						t.Errorf("child did not stop cleanly on SIGTERM: %v", err)
					}
					t.Logf("done after %d starts; kills: %s", gen, strings.Join(kills, "; "))
					goto verify
				}
			}
		}
	}
verify:
	check(t, as, amp, dfy)
	checkNoSecret(t, "the child's log", logs.String())
	if len(kills) < 3 {
		t.Errorf("only %d kills happened (%v): the test did not test restarts", len(kills), kills)
	}
	// The buffer on disk: Dify has nothing left to do, no open journal
	// entry (done entries are kept to remember handled alerts).
	buf, err := buffer.OpenBadger(badgerOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	if recs, err := buf.Read(dify.Consumer, record.LaneAlert, 1000); err != nil || len(recs) != 0 {
		t.Errorf("dify: %d alerts unacknowledged (%v)", len(recs), err)
	}
	recs, err := buf.Read(dify.Consumer, dify.LaneJournal, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		var e struct {
			Done bool `json:"done"`
		}
		if json.Unmarshal(r.Data, &e) != nil || !e.Done {
			t.Errorf("dify: open journal entry left: %s", r.Data)
		}
	}
	dls, _ := buf.ReadFrom(forward.LaneDeadLetter, 0, 100)
	if len(dls) != 0 {
		t.Errorf("%d dead letters in a storm of temporary failures", len(dls))
	}
	t.Logf("%v; dify: %d requests, %d runs", amp, len(dfy.Requests()), len(dfy.Runs()))
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
