package dify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/dify/difytest"
	"github.com/vigil-edge/vigil/agent/forward/forwardtest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

const (
	testKey = "app-SECRET-dify-key-0123456789"
	device  = "pump-01"
)

var t0 = forwardtest.T0

// alert returns alert i, each on its own stream unless the test changes it.
func alert(i int, severity string) record.Alert {
	return forwardtest.Alert(device, fmt.Sprintf("pump%d", i), i, severity)
}

func alerts(n int) []record.Alert {
	out := make([]record.Alert, n)
	for i := range out {
		out[i] = alert(i, record.SeverityCritical)
	}
	return out
}

func appendAlerts(t testing.TB, buf Buffer, as ...record.Alert) {
	t.Helper()
	forwardtest.Append(t, buf, record.LaneAlert, as...)
}

type harness struct {
	t    *testing.T
	buf  *buffer.Memory
	srv  *difytest.Server
	clk  *testkit.FakeClock
	fw   *Forwarder
	logs *testkit.Buffer
	opts Options
	stop func()
}

func newHarness(t *testing.T, sopts difytest.Options, mut func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, buf: forwardtest.NewMemory(t), clk: testkit.NewFakeClock(t0), logs: &testkit.Buffer{}}
	if sopts.APIKey == "" {
		sopts.APIKey = testKey
	}
	sopts.Now = h.clk.Now
	h.srv = difytest.NewServer(sopts)
	t.Cleanup(h.srv.Close)
	opts := DefaultOptions()
	opts.BaseURL = h.srv.BaseURL()
	opts.APIKey = testKey
	opts.Clock = h.clk
	opts.Logger = h.logs.Logger()
	opts.RateLimit = Rate{}
	opts.Cooldown = 0
	opts.Timeout = 2 * time.Second
	opts.ShutdownGrace = 0 // stops at once; TestAStopFinishesTheAlertInFlight tests the grace
	if mut != nil {
		mut(&opts)
	}
	h.opts = opts
	t.Cleanup(h.checkNoSecret)
	return h
}

// start runs a forwarder; it stops at the end of the test or at h.stop.
func (h *harness) start() *harness {
	h.t.Helper()
	fw, err := New(h.buf, h.opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.fw = fw
	h.stop = testkit.Run(h.t, "Run", fw.Run)
	return h
}

// faulted runs a forwarder in response mode (with mut's other changes, if
// any) against a double that answers its first requests with faults, and
// appends one major alert, which it returns.
func faulted(t *testing.T, mode string, mut func(*Options), faults ...difytest.Fault) (*harness, record.Alert) {
	t.Helper()
	h := newHarness(t, difytest.Options{}, func(o *Options) {
		o.ResponseMode = mode
		if mut != nil {
			mut(o)
		}
	}).start()
	h.srv.Script(faults...)
	a := alert(0, record.SeverityMajor)
	appendAlerts(t, h.buf, a)
	return h, a
}

func (h *harness) checkNoSecret() {
	h.t.Helper()
	if strings.Contains(h.logs.String(), testKey) {
		h.t.Errorf("the API key appears in the log")
	}
	if h.fw != nil {
		if s := fmt.Sprintf("%+v", h.fw.Stats()); strings.Contains(s, testKey) {
			h.t.Errorf("the API key appears in Stats: %s", s)
		}
	}
	for _, lane := range []string{record.LaneAdvice, forward.LaneDeadLetter, LaneJournal} {
		recs, _ := h.buf.ReadFrom(lane, 0, 10000)
		for _, r := range recs {
			if strings.Contains(string(r.Data), testKey) {
				h.t.Errorf("the API key appears in lane %s: %s", lane, r.Data)
			}
		}
	}
}

// until advances the fake clock, timer by timer, until cond holds.
func (h *harness) until(what string, cond func() bool) {
	h.t.Helper()
	h.clk.AdvanceUntil(h.t, 20*time.Second, what, cond, func() string {
		return fmt.Sprintf("stats %+v; runs %+v", h.fw.Stats(), h.srv.Runs())
	})
}

func (h *harness) acked(n int) func() bool {
	return func() bool {
		s := h.fw.Stats()
		return s.Acked+s.Skipped+s.CooldownSkipped+s.Duplicates >= uint64(n) && s.Pending == 0
	}
}

func (h *harness) advice() map[string]record.Advice {
	recs, err := h.buf.ReadFrom(record.LaneAdvice, 0, 10000)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]record.Advice{}
	for _, r := range recs {
		var a record.Advice
		if err := json.Unmarshal(r.Data, &a); err != nil {
			h.t.Fatal(err)
		}
		out[a.AlertID] = a
	}
	return out
}

func (h *harness) deadLetters() []forward.DeadLetter { return forwardtest.DeadLetters(h.t, h.buf) }

func (h *harness) unacked(lane string) int { return forwardtest.Unacked(h.t, h.buf, Consumer, lane) }

// openJournal counts the journal's unacknowledged entries that are not
// done entries (those are kept on purpose: see remember).
func (h *harness) openJournal() int {
	recs, err := h.buf.Read(Consumer, LaneJournal, 10000)
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		var e journalEntry
		if json.Unmarshal(r.Data, &e) != nil || !e.Done {
			n++
		}
	}
	return n
}

func (h *harness) posts() []difytest.Request {
	var out []difytest.Request
	for _, r := range h.srv.Requests() {
		if r.Method == http.MethodPost && r.Path == "/workflows/run" {
			out = append(out, r)
		}
	}
	return out
}

func (h *harness) lookups() int {
	n := 0
	for _, r := range h.srv.Requests() {
		if r.Path == "/workflows/logs" {
			n++
		}
	}
	return n
}

// oneRunEach checks that each alert had exactly one successful run and
// that no other alert had any.
func oneRunEach(t *testing.T, srv *difytest.Server, ids ...string) {
	t.Helper()
	forwardtest.ExactlyOnce(t, srv.Succeeded(), ids, "alerts with a successful run")
}

func TestOptionsValidate(t *testing.T) {
	good := DefaultOptions()
	good.APIKey = testKey
	newFn := func(o Options) error { _, err := New(forwardtest.NewMemory(t), o); return err }
	forwardtest.CheckOptionErrors(t, good, testKey, newFn, []struct {
		Field string
		Mut   func(*Options)
	}{
		{"BaseURL", func(o *Options) { o.BaseURL = "dify.local" }},
		{"APIKey", func(o *Options) { o.APIKey = "" }},
		{"ResponseMode", func(o *Options) { o.ResponseMode = "async" }},
		{"User", func(o *Options) { o.User = "a\nb" }},
		{"Inputs", func(o *Options) { o.Inputs = map[string]string{"x": "{{.Nope"} }},
		{"MinSeverity", func(o *Options) { o.MinSeverity = "" }},
		{"MinConfidence", func(o *Options) { o.MinConfidence = -0.1 }},
		{"Timeout", func(o *Options) { o.Timeout = 0 }},
		{"RequestTimeout", func(o *Options) { o.RequestTimeout = 0 }},
		{"RateLimit", func(o *Options) { o.RateLimit = Rate{Count: 2} }},
		{"Cooldown", func(o *Options) { o.Cooldown = -time.Second }},
		{"MaxConcurrency", func(o *Options) { o.MaxConcurrency = 0 }},
		{"MaxPending", func(o *Options) { o.MaxPending = 1 }},
		{"Backoff.Max", func(o *Options) { o.Backoff.Max = time.Millisecond }},
		{"PollTimeout", func(o *Options) { o.PollTimeout = 0 }},
	})
	if LaneJournal != forwardtest.Lanes()[3].Name {
		t.Errorf("forwardtest's journal lane is not %s", LaneJournal)
	}
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode string
		srv  difytest.Options
	}{
		{"blocking", ModeBlocking, difytest.Options{}},
		{"streaming", ModeStreaming, difytest.Options{}},
		{"streaming CRLF", ModeStreaming, difytest.Options{CRLF: true}},
		{"streaming multi-line data", ModeStreaming, difytest.Options{SplitData: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.srv, func(o *Options) { o.ResponseMode = tc.mode }).start()
			user := alert(1, record.SeverityMajor)
			user.Kind, user.Key = "behaviour", "user-4711"
			as := []record.Alert{alert(0, record.SeverityCritical), user, alert(2, record.SeverityWarning)}
			appendAlerts(t, h.buf, as...)
			h.until("all handled", h.acked(3))
			oneRunEach(t, h.srv, as[0].ID, as[1].ID)
			adv := h.advice()
			for _, a := range as[:2] {
				got := adv[a.ID]
				if got.ID != AdviceID(a.ID) || got.Status != "succeeded" || got.WorkflowRunID == "" ||
					!strings.Contains(fmt.Sprint(got.Outputs["advice"]), a.ID) || got.Device != device || got.Severity != a.Severity {
					t.Errorf("advice for %s: %+v", a.ID, got)
				}
			}
			if adv[user.ID].Key != "user-4711" || adv[as[0].ID].Key != "" {
				t.Errorf("advice keys %q %q: want the behaviour stream's user only", adv[user.ID].Key, adv[as[0].ID].Key)
			}
			s := h.fw.Stats()
			if s.Succeeded != 2 || s.Skipped != 1 || s.Acked != 2 || s.Runs != 2 || s.State != forward.StateOK || s.Pending != 0 {
				t.Errorf("stats %+v", s)
			}
			if h.unacked(record.LaneAlert) != 0 || h.openJournal() != 0 {
				t.Errorf("left %d alerts, %d journal entries", h.unacked(record.LaneAlert), h.openJournal())
			}
			var req difytest.Request
			for _, r := range h.posts() {
				if strings.Contains(string(r.Body), as[0].ID) {
					req = r
				}
			}
			if got := req.Header.Get("Authorization"); got != "Bearer "+testKey {
				t.Errorf("Authorization %q", got)
			}
			var body map[string]any
			json.Unmarshal(req.Body, &body)
			inputs := body["inputs"].(map[string]any)
			if body["response_mode"] != tc.mode || body["user"] != "vigil-"+device || inputs["alert_id"] != as[0].ID ||
				!strings.Contains(fmt.Sprint(inputs["summary"]), "critical anomaly on pump-01/pump0") {
				t.Errorf("request body %s", req.Body)
			}
			if h.lookups() != 0 {
				t.Errorf("%d lookups without a failure", h.lookups())
			}
		})
	}
}

func TestCooldown(t *testing.T) {
	h := newHarness(t, difytest.Options{}, func(o *Options) { o.Cooldown = time.Minute }).start()
	a, b, c, d := alert(0, record.SeverityMajor), alert(30, record.SeverityMajor), alert(61, record.SeverityMajor), alert(5, record.SeverityMajor)
	b.Stream, c.Stream = a.Stream, a.Stream // b is 30 s after a, c 61 s; d is another stream
	appendAlerts(t, h.buf, a, b, c, d)
	h.until("all handled", h.acked(4))
	oneRunEach(t, h.srv, a.ID, c.ID, d.ID)
	if s := h.fw.Stats(); s.CooldownSkipped != 1 {
		t.Errorf("stats %+v, want one alert skipped in cooldown", s)
	}
}

func TestFailedRuns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  string
		fault difytest.Fault
		want  string
	}{
		{"failed", ModeBlocking, difytest.Fault{RunStatus: "failed", RunError: "LLM node: quota"}, "failed"},
		{"stopped", ModeBlocking, difytest.Fault{RunStatus: "stopped", RunError: "stopped by user"}, "stopped"},
		{"failed streaming", ModeStreaming, difytest.Fault{RunStatus: "failed", RunError: "LLM node: quota"}, "failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, a := faulted(t, tc.mode, nil, tc.fault)
			h.until("handled", h.acked(1))
			adv := h.advice()[a.ID]
			if adv.Status != tc.want || adv.Error != tc.fault.RunError || adv.Outputs != nil {
				t.Errorf("advice %+v", adv)
			}
			if s := h.fw.Stats(); s.Failed != 1 || s.Runs != 1 {
				t.Errorf("stats %+v: want one failed run, not retried", s)
			}
		})
	}
}

func TestPermanentErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  string
		fault difytest.Fault
		code  string
	}{
		{"400 app_unavailable", ModeBlocking, difytest.Fault{Status: 400, Code: "app_unavailable", Message: "App unavailable"}, "app_unavailable"},
		{"400 provider_quota_exceeded", ModeBlocking, difytest.Fault{Status: 400, Code: "provider_quota_exceeded", Message: "quota"}, "provider_quota_exceeded"},
		{"stream error 400", ModeStreaming, difytest.Fault{StreamError: &difytest.StreamError{Status: 400, Code: "invalid_param", Message: "bad input"}}, "invalid_param"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, a := faulted(t, tc.mode, nil, tc.fault)
			h.until("handled", func() bool { return h.fw.Stats().DeadLettered == 1 })
			testkit.WaitFor(t, 5*time.Second, "ack", func() bool { return h.unacked(record.LaneAlert) == 0 })
			dls := h.deadLetters()
			if len(dls) != 1 || dls[0].Code != tc.code || dls[0].RecordID != a.ID || dls[0].Reason == "" || len(dls[0].Event) == 0 {
				t.Errorf("dead letters %+v", dls)
			}
			if len(h.advice()) != 0 || len(h.posts()) != 1 {
				t.Errorf("advice %v, %d posts: want none, one", h.advice(), len(h.posts()))
			}
		})
	}
	t.Run("invalid inputs refused by the double", func(t *testing.T) {
		h := newHarness(t, difytest.Options{RequiredInputs: []string{"alert_id", "site"}}, nil).start()
		appendAlerts(t, h.buf, alert(0, record.SeverityMajor))
		h.until("handled", func() bool { return h.fw.Stats().DeadLettered == 1 })
		if dls := h.deadLetters(); dls[0].Code != "invalid_param" || dls[0].Status != 400 {
			t.Errorf("dead letter %+v", dls[0])
		}
	})
}

// TestUnauthorized: a wrong key makes the forwarder fail loudly, keep the
// alerts and try again only every FailingRetry; a fixed key recovers.
func TestUnauthorized(t *testing.T) {
	h, a := faulted(t, ModeBlocking, nil, difytest.Fault{Status: 401}, difytest.Fault{Status: 401})
	testkit.WaitFor(t, 5*time.Second, "failing", func() bool { return h.fw.Stats().State == forward.StateFailing })
	if h.unacked(record.LaneAlert) != 1 || len(h.deadLetters()) != 0 {
		t.Error("the alert must stay in the buffer, without a dead letter")
	}
	if !strings.Contains(h.logs.String(), "level=ERROR") {
		t.Error("failing is not loud")
	}
	start := h.clk.Now()
	h.until("handled", h.acked(1))
	if d := h.clk.Now().Sub(start); d < 2*h.opts.FailingRetry {
		t.Errorf("recovered after %v, want two FailingRetry periods", d)
	}
	if s := h.fw.Stats(); s.State != forward.StateOK {
		t.Errorf("state %s after recovery", s.State)
	}
	oneRunEach(t, h.srv, a.ID)
	if h.lookups() != 0 {
		t.Error("a 401 means no run: no lookup needed")
	}
}

func TestWrongKeyIsNeverShown(t *testing.T) {
	h := newHarness(t, difytest.Options{APIKey: "the-right-key"}, nil).start()
	appendAlerts(t, h.buf, alert(0, record.SeverityMajor))
	testkit.WaitFor(t, 5*time.Second, "failing", func() bool { return h.fw.Stats().State == forward.StateFailing })
	if resp := h.srv.Requests()[0]; resp.Status != 401 {
		t.Fatalf("status %d", resp.Status)
	}
	if s := h.fw.Stats(); !strings.Contains(s.LastError, "unauthorized") {
		t.Errorf("LastError %q", s.LastError)
	}
}

func TestThrottled(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  string
		fault difytest.Fault
		wait  time.Duration
	}{
		{"429 retry-after", ModeBlocking, difytest.Fault{Status: 429, RetryAfter: "20"}, 20 * time.Second},
		{"429 rate_limit_error", ModeBlocking, difytest.Fault{Status: 429, Code: "rate_limit_error", Message: "quota"}, time.Second / 2},
		{"429 inside the stream", ModeStreaming, difytest.Fault{StreamError: &difytest.StreamError{Status: 429, Code: "too_many_requests", Message: "busy"}}, time.Second / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, a := faulted(t, tc.mode, nil, tc.fault)
			testkit.WaitFor(t, 5*time.Second, "throttled", func() bool { return h.fw.Stats().State == forward.StateThrottled })
			h.until("handled", h.acked(1))
			oneRunEach(t, h.srv, a.ID)
			reqs := h.srv.Requests()
			if len(reqs) != 2 || h.lookups() != 0 {
				t.Fatalf("%d requests (%d lookups): a 429 is retried directly", len(reqs), h.lookups())
			}
			if s := h.fw.Stats(); s.Throttled != 1 || s.Retries != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// TestRetryAfterHonoured checks the fake-clock gap between a 429 and the
// retry.
func TestRetryAfterHonoured(t *testing.T) {
	h, _ := faulted(t, ModeBlocking, nil, difytest.Fault{Status: 429, RetryAfter: "20"})
	h.until("handled", h.acked(1))
	reqs := h.srv.Requests()
	// Not later either: the worker that took the probe through the gate
	// once waited out the gate it had pushed back itself (+Timeout+2×
	// RequestTimeout, 84 s in all), and a storm of 429s outlasted CI's
	// chaos recovery bound.
	if len(reqs) != 2 || reqs[1].At.Sub(reqs[0].At) < 20*time.Second || reqs[1].At.Sub(reqs[0].At) > 21*time.Second {
		t.Errorf("requests at %v and %v: want the retry 20 s after the 429", reqs[0].At, reqs[len(reqs)-1].At)
	}
}

// failingDialer refuses the first n connections, as an unreachable host
// does: those requests provably never reached Dify.
type failingDialer struct {
	n     atomic.Int32
	inner net.Dialer
}

func (d *failingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
	}
	return d.inner.DialContext(ctx, network, addr)
}

func TestNotSentIsRetriedWithoutLookup(t *testing.T) {
	d := &failingDialer{}
	d.n.Store(3)
	h := newHarness(t, difytest.Options{}, func(o *Options) {
		o.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}).start()
	a := alert(0, record.SeverityMajor)
	appendAlerts(t, h.buf, a)
	h.until("handled", h.acked(1))
	oneRunEach(t, h.srv, a.ID)
	if n := len(h.srv.Requests()); n != 1 {
		t.Errorf("%d requests reached the double, want 1 (no lookups)", n)
	}
	if s := h.fw.Stats(); s.Runs != 4 || s.Retries != 3 || s.Lookups != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestAmbiguousFailures: after a failure that may have run the workflow,
// the forwarder looks the alert up and never runs it twice.
func TestAmbiguousFailures(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      string
		fault     difytest.Fault
		status    string // the advice's
		posts     int    // POSTs that reached the double
		recovered uint64
	}{
		{"500 after the run", ModeBlocking, difytest.Fault{Status: 500, AfterRecord: true}, "succeeded", 1, 1},
		{"502 after a failed run", ModeBlocking, difytest.Fault{Status: 502, AfterRecord: true, RunStatus: "failed"}, "failed", 1, 1},
		{"500 before the run", ModeBlocking, difytest.Fault{Status: 500}, "succeeded", 2, 0},
		{"timeout after the run", ModeBlocking, difytest.Fault{Hang: true}, "succeeded", 1, 1},
		{"timeout, run still running", ModeBlocking, difytest.Fault{Hang: true, Running: 3}, "succeeded", 1, 1},
		{"stream cut after workflow_started", ModeStreaming, difytest.Fault{Hang: true}, "succeeded", 1, 1},
		{"stream error after start", ModeStreaming, difytest.Fault{StreamError: &difytest.StreamError{Status: 500, Code: "unknown", Message: "node crashed", AfterStart: true}}, "failed", 1, 1},
		{"reset after the run", ModeBlocking, difytest.Fault{ResetAfter: true}, "succeeded", 1, 1},
		{"reset before the run", ModeBlocking, difytest.Fault{ResetBefore: true}, "succeeded", 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, a := faulted(t, tc.mode, func(o *Options) { o.Timeout = 300 * time.Millisecond }, tc.fault)
			h.until("handled", h.acked(1))
			adv := h.advice()[a.ID]
			if adv.Status != tc.status {
				t.Errorf("advice %+v, want status %s", adv, tc.status)
			}
			if tc.status == "succeeded" {
				oneRunEach(t, h.srv, a.ID)
				if adv.Outputs["advice"] == nil {
					t.Errorf("advice without outputs: %+v", adv)
				}
			} else if n := len(h.srv.RunsFor(a.ID)); n != 1 {
				t.Errorf("%d runs, want the one failed run", n)
			}
			if n := len(h.posts()); n != tc.posts {
				t.Errorf("%d POSTs reached Dify, want %d", n, tc.posts)
			}
			if s := h.fw.Stats(); s.Recovered != tc.recovered {
				t.Errorf("stats %+v, want %d recovered", s, tc.recovered)
			}
			if h.openJournal() != 0 {
				t.Error("journal entry left behind")
			}
		})
	}
}

// TestLookupChecksTheAlertID: a run whose outputs mention the alert id is
// not the alert's run.
func TestLookupChecksTheAlertID(t *testing.T) {
	x, y := alert(0, record.SeverityMajor), alert(1, record.SeverityMajor)
	h := newHarness(t, difytest.Options{Outputs: func(map[string]any) map[string]any {
		return map[string]any{"advice": "compare with " + y.ID}
	}}, func(o *Options) { o.MaxConcurrency = 1 }).start()
	h.srv.Script(difytest.Fault{}, difytest.Fault{Status: 503})
	appendAlerts(t, h.buf, x, y)
	h.until("handled", h.acked(2))
	oneRunEach(t, h.srv, x.ID, y.ID)
	if h.lookups() != 2 {
		t.Errorf("%d lookups, want 2 (after the failure and after the grace period)", h.lookups())
	}
}

// TestResumeAfterRestart: a forwarder stopped while its request hangs
// leaves a journal entry; the next one finds the run instead of running
// the workflow again.
func TestResumeAfterRestart(t *testing.T) {
	h, a := faulted(t, ModeBlocking, func(o *Options) { o.Timeout = time.Minute }, difytest.Fault{Hang: true})
	testkit.WaitFor(t, 5*time.Second, "the run", func() bool { return len(h.srv.Runs()) == 1 })
	h.stop()
	if h.unacked(record.LaneAlert) != 1 || h.openJournal() != 1 {
		t.Fatalf("after the stop: %d alerts, %d journal entries unacked, want 1 and 1", h.unacked(record.LaneAlert), h.openJournal())
	}
	h.start()
	h.until("handled", h.acked(1))
	oneRunEach(t, h.srv, a.ID)
	if s := h.fw.Stats(); s.Recovered != 1 || s.Runs != 0 {
		t.Errorf("stats %+v: want the outcome recovered without a run", s)
	}
	if h.openJournal() != 0 || h.advice()[a.ID].Status != "succeeded" {
		t.Error("journal entry left or advice missing")
	}
}

// TestNoSecondRunAfterRestart: after a restart, the same alert appended
// again (a source re-scoring its input after a crash yields the same id)
// is not run again: the journal's done entry remembers it.
func TestNoSecondRunAfterRestart(t *testing.T) {
	h := newHarness(t, difytest.Options{}, nil).start()
	a := alert(0, record.SeverityMajor)
	appendAlerts(t, h.buf, a)
	h.until("handled", h.acked(1))
	h.stop()
	h.start()
	appendAlerts(t, h.buf, a)
	h.until("the copy skipped", func() bool { return h.fw.Stats().Duplicates == 1 && h.fw.Stats().Pending == 0 })
	oneRunEach(t, h.srv, a.ID)
	if h.unacked(record.LaneAlert) != 0 || h.openJournal() != 0 {
		t.Errorf("left %d alerts, %d open journal entries", h.unacked(record.LaneAlert), h.openJournal())
	}
	if n := h.unacked(LaneJournal); n != 1 {
		t.Errorf("%d done entries kept, want 1", n)
	}
}

// TestStaleJournal: journal entries of alerts already acknowledged are
// dropped at start.
func TestStaleJournal(t *testing.T) {
	h := newHarness(t, difytest.Options{}, nil)
	a, b := alert(0, record.SeverityMajor), alert(1, record.SeverityMajor)
	appendAlerts(t, h.buf, a, b)
	h.buf.RegisterConsumer(Consumer, record.LaneAlert, LaneJournal)
	for i, x := range []record.Alert{a, b} {
		e, _ := json.Marshal(journalEntry{AlertID: x.ID, AlertSeq: uint64(i + 1), TS: t0})
		h.buf.Append(context.Background(), LaneJournal, e)
	}
	h.buf.Ack(Consumer, record.LaneAlert, 1) // a was done, its entry not acknowledged
	h.start()
	h.until("handled", h.acked(1))
	if h.openJournal() != 0 {
		t.Errorf("%d journal entries left", h.openJournal())
	}
	if len(h.srv.RunsFor(a.ID)) != 0 {
		t.Error("an acknowledged alert was run")
	}
	oneRunEach(t, h.srv, b.ID) // b had an entry: looked up (nothing), then run
}

// TestRateLimit: four alerts at 2 runs a minute with a burst of 1 take at
// least 90 s of (simulated) time; the bucket itself is TestBucket's.
func TestRateLimit(t *testing.T) {
	h := newHarness(t, difytest.Options{}, func(o *Options) {
		o.RateLimit = Rate{Count: 2, Per: time.Minute}
		o.Burst = 1
		o.MaxConcurrency = 4
	}).start()
	as := alerts(4)
	appendAlerts(t, h.buf, as...)
	h.until("handled", h.acked(4))
	if d := h.clk.Now().Sub(t0); d < 90*time.Second {
		t.Errorf("4 runs done after %v, want at least 90 s at 2/min", d)
	}
	oneRunEach(t, h.srv, as[0].ID, as[1].ID, as[2].ID, as[3].ID)
}

func TestMaxConcurrency(t *testing.T) {
	var cur, peak atomic.Int32
	release := make(chan struct{})
	h := newHarness(t, difytest.Options{AfterRecord: func(difytest.Run) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		cur.Add(-1)
	}}, func(o *Options) { o.MaxConcurrency = 2 }).start()
	as := alerts(6)
	appendAlerts(t, h.buf, as...)
	testkit.WaitFor(t, 5*time.Second, "two runs in flight", func() bool { return cur.Load() == 2 })
	close(release)
	h.until("handled", h.acked(6))
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrency %d, want 2", p)
	}
}

// TestRequestsBounded: against an endpoint that always fails, an hour of
// simulated time costs a bounded number of requests.
func TestRequestsBounded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault difytest.Fault
		max   int
	}{
		// Each round of a 500: a POST and two lookups (after the failure
		// and after the grace period); backoff 1 s doubling to 5 min,
		// jittered, so the number of rounds varies (99–109 requests seen
		// over 20 runs): the bound leaves room for the jitter.
		{"500", difytest.Fault{Status: 500}, 3 * 40},
		{"401", difytest.Fault{Status: 401}, 15},
		{"429", difytest.Fault{Status: 429}, 35},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, difytest.Options{}, nil)
			h.srv.SetFaultFunc(func(r difytest.Request) *difytest.Fault {
				if r.Method == http.MethodPost {
					f := tc.fault
					return &f
				}
				return nil
			})
			h.start()
			appendAlerts(t, h.buf, alerts(10)...)
			end := t0.Add(time.Hour)
			// The clock moves only when both workers wait on it: a request in
			// flight would otherwise see its probe window end before Dify's
			// answer, and a second worker probe beside it.
			err := testkit.Poll(20*time.Second, func() bool {
				if !h.clk.Now().Before(end) {
					return true
				}
				if h.clk.Timers() >= h.opts.MaxConcurrency {
					h.clk.AdvanceToNext()
				}
				return false
			})
			if err != nil {
				t.Fatalf("the simulated hour did not pass: %v; stats %+v", err, h.fw.Stats())
			}
			n := len(h.srv.Requests())
			if n > tc.max || n < 2 {
				t.Errorf("%d requests in a simulated hour, want 2..%d", n, tc.max)
			}
			t.Logf("%s: %d requests", tc.name, n)
			if len(h.srv.Runs()) != 0 || h.unacked(record.LaneAlert) != 10 {
				t.Error("alerts must stay, unrun")
			}
		})
	}
}

// TestStorm: through a random mix of injected failures, each alert gets
// exactly one successful run and its advice.
func TestStorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var mu sync.Mutex
	faults := []difytest.Fault{
		{Status: 429, RetryAfter: "2"}, {Status: 429}, {Status: 500}, {Status: 500, AfterRecord: true},
		{Status: 502, AfterRecord: true}, {Status: 503}, {Hang: true}, {Hang: true, Running: 2},
		{ResetBefore: true}, {ResetAfter: true},
		{StreamError: &difytest.StreamError{Status: 429, Code: "too_many_requests"}},
		{StreamError: &difytest.StreamError{Status: 503, Code: "unknown", AfterStart: true}},
	}
	h := newHarness(t, difytest.Options{}, func(o *Options) {
		o.ResponseMode = ModeStreaming
		o.Timeout = 200 * time.Millisecond
		o.MaxConcurrency = 3
	})
	h.srv.SetFaultFunc(func(r difytest.Request) *difytest.Fault {
		mu.Lock()
		defer mu.Unlock()
		if rng.IntN(3) > 0 {
			return nil
		}
		if r.Method == http.MethodGet {
			return &[]difytest.Fault{{Status: 500}, {Status: 502}, {ResetBefore: true}}[rng.IntN(3)]
		}
		f := faults[rng.IntN(len(faults))]
		return &f
	})
	h.start()
	as := alerts(30)
	appendAlerts(t, h.buf, as...)
	h.until("handled", h.acked(len(as)))
	adv := h.advice()
	var ok []string
	for _, a := range as {
		runs := h.srv.RunsFor(a.ID)
		succeeded := 0
		for _, r := range runs {
			if r.Status == "succeeded" {
				succeeded++
			}
		}
		if succeeded > 1 {
			t.Errorf("alert %s: %d successful runs", a.ID, succeeded)
		}
		if adv[a.ID].Status == "" {
			t.Errorf("alert %s: no advice", a.ID)
		}
		if adv[a.ID].Status == "succeeded" {
			ok = append(ok, a.ID)
		}
	}
	if len(ok) < len(as)-5 {
		t.Errorf("only %d of %d alerts got a succeeded advice", len(ok), len(as))
	}
	t.Logf("%d requests, %d runs; stats %+v", len(h.srv.Requests()), len(h.srv.Runs()), h.fw.Stats())
}

func TestSSE(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"LF", "data: {\"a\":1}\n\ndata: 2\n\n", []string{`{"a":1}`, "2"}},
		{"CRLF", "data: 1\r\n\r\ndata: 2\r\n\r\n", []string{"1", "2"}},
		{"CR", "data: 1\r\rdata: 2\r\r", []string{"1", "2"}},
		{"multi-line", "data: {\"a\":\ndata: 1}\n\n", []string{"{\"a\":\n1}"}},
		{"no space", "data:x\n\n", []string{"x"}},
		{"two spaces", "data:  x\n\n", []string{" x"}},
		{"comments and fields", ": hi\nevent: ping\nid: 3\nretry: 10\n\nevent: message\ndata: y\n\n", []string{"y"}},
		{"empty data", "data\n\n", []string{""}},
		{"cut at the end", "data: 1\n\ndata: 2", []string{"1", "2"}},
		{"blank lines", "\n\n\ndata: 1\n\n\n", []string{"1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(tc.in)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	r := newSSEReader(strings.NewReader("data: " + strings.Repeat("x", 100) + "\n\n"))
	r.max = 50
	if _, err := r.Next(); !errors.Is(err, errEventTooLarge) {
		t.Errorf("oversized event: %v", err)
	}
}

func readAll(in string) ([]string, error) {
	r := newSSEReader(strings.NewReader(in))
	var out []string
	for {
		d, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(d))
	}
}

func FuzzSSE(f *testing.F) {
	for _, s := range []string{
		"data: {\"event\":\"ping\"}\n\n", "data: a\r\ndata: b\r\n\r\n", ": c\revent: x\rdata\r\r", "data: 1", "\n\n\r\r",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		lf, err := readAll(in)
		if err != nil {
			t.Fatalf("reading %q: %v", in, err)
		}
		// The same stream with CRLF line ends gives the same events.
		if !strings.Contains(in, "\r") {
			crlf, err := readAll(strings.ReplaceAll(in, "\n", "\r\n"))
			if err != nil || !slices.Equal(lf, crlf) {
				t.Fatalf("LF %q vs CRLF %q (%v)", lf, crlf, err)
			}
		}
	})
}

func FuzzReadStream(f *testing.F) {
	f.Add("data: {\"event\":\"workflow_started\",\"workflow_run_id\":\"r\"}\n\ndata: {\"event\":\"workflow_finished\",\"data\":{\"id\":\"r\",\"status\":\"succeeded\",\"outputs\":{\"a\":\"b\"}}}\n\n")
	f.Add("data: {\"event\":\"error\",\"status\":429,\"code\":\"too_many_requests\",\"message\":\"m\"}\n\n")
	f.Add("data: {\"event\":\"workflow_finished\",\"data\":{\"status\":\"failed\",\"outputs\":\"{\\\"x\\\":1}\",\"error\":null}}\n\n")
	fw, err := New(forwardtest.NewMemory(f), func() Options { o := DefaultOptions(); o.APIKey = testKey; return o }())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, cerr := fw.readStream(strings.NewReader(in))
		if cerr == nil && !terminal(r.Status) {
			t.Fatalf("an outcome without a terminal status: %+v", r)
		}
		if cerr != nil && cerr.kind == 0 {
			t.Fatalf("unclassified error %v", cerr)
		}
	})
}

func TestDecodeRun(t *testing.T) {
	r, err := decodeRun([]byte(`{"id":"r1","status":"succeeded","inputs":"{\"alert_id\":\"a-1\"}","outputs":"{\"advice\":\"x\"}","error":null,"elapsed_time":"1.5","created_at":"Thu, 18 Jul 2024 03:17:40 -0000"}`))
	if err != nil || r.Inputs["alert_id"] != "a-1" || r.Outputs["advice"] != "x" || r.Error != "" || r.Elapsed != 1.5 {
		t.Errorf("old-style run: %+v, %v", r, err)
	}
	r, err = decodeRun([]byte(`{"id":"r2","status":"failed","inputs":{"alert_id":"a-2"},"outputs":null,"error":"boom","elapsed_time":2,"created_at":1705407629}`))
	if err != nil || r.Inputs["alert_id"] != "a-2" || r.Outputs != nil || r.Error != "boom" || r.Elapsed != 2 {
		t.Errorf("new-style run: %+v, %v", r, err)
	}
}

func TestBucket(t *testing.T) {
	clk := testkit.NewFakeClock(t0)
	b := newBucket(Rate{Count: 6, Per: time.Minute}, 2)
	if first, second := b.Take(clk.Now()), b.Take(clk.Now()); first != 0 || second != 0 {
		t.Fatal("burst of 2 not available")
	}
	if d := b.Take(clk.Now()); d != 10*time.Second {
		t.Errorf("third token in %v, want 10s", d)
	}
	clk.Advance(10 * time.Second)
	if b.Take(clk.Now()) != 0 {
		t.Error("token not refilled after 10s")
	}
	if newBucket(Rate{}, 0) != nil {
		t.Error("unlimited rate has a bucket")
	}
}

// TestMinConfidence: with MinConfidence 0.99 only the alert whose
// confidence reaches it runs; one below it and one without a confidence
// are skipped (acknowledged, counted as Skipped).
func TestMinConfidence(t *testing.T) {
	h := newHarness(t, difytest.Options{}, func(o *Options) { o.MinConfidence = 0.99 }).start()
	conf := func(a record.Alert, c float64) record.Alert { a.Confidence = &c; return a }
	as := []record.Alert{conf(alert(0, record.SeverityCritical), 0.999), conf(alert(1, record.SeverityCritical), 0.9), alert(2, record.SeverityCritical)}
	appendAlerts(t, h.buf, as...)
	h.until("all handled", h.acked(3))
	oneRunEach(t, h.srv, as[0].ID)
	if s := h.fw.Stats(); s.Skipped != 2 || s.Runs != 1 {
		t.Errorf("stats %+v, want 2 skipped and 1 run", s)
	}
}

// TestAStopFinishesTheAlertInFlight: a stop (Run's context ending) while a
// workflow run is in flight lets it finish within ShutdownGrace: the answer
// is taken, the advice stored, the journal entry closed and the alert
// acknowledged, so the next start has nothing to look up. (With no grace,
// TestResumeAfterRestart: the entry stays open and the next start recovers
// the run.)
func TestAStopFinishesTheAlertInFlight(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The stop comes once Dify has recorded the run, before it answers.
	h := newHarness(t, difytest.Options{AfterRecord: func(difytest.Run) { cancel() }},
		func(o *Options) { o.ShutdownGrace = time.Minute })
	fw, err := New(h.buf, h.opts)
	if err != nil {
		t.Fatal(err)
	}
	h.fw = fw
	a := alert(0, record.SeverityMajor)
	appendAlerts(t, h.buf, a)
	if err := fw.Run(ctx); err != nil {
		t.Fatal(err)
	}
	oneRunEach(t, h.srv, a.ID)
	if h.unacked(record.LaneAlert) != 0 || h.openJournal() != 0 || h.advice()[a.ID].Status != "succeeded" {
		t.Fatalf("after the stop: %d alerts unacked, %d open journal entries, advice %+v; want the alert finished",
			h.unacked(record.LaneAlert), h.openJournal(), h.advice()[a.ID])
	}
}
