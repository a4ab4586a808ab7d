package amplitude

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/amplitude/amplitudetest"
	"github.com/vigil-edge/vigil/agent/forward/forwardtest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

const (
	testKey = "amp-SECRET-key-0123456789abcdef"
	device  = "pump-01"
)

var t0 = forwardtest.T0

// alert returns alert number i of a sensor stream.
func alert(i int, severity string) record.Alert {
	return forwardtest.Alert(device, "pump1", i, severity)
}

// userAlert returns alert number i of a behaviour stream keyed by user.
func userAlert(i int, user string) record.Alert {
	a := alert(i, record.SeverityMajor)
	a.Stream, a.Kind, a.Key = "logins", "behaviour", user
	a.ID = record.ID("alert", device, a.Stream, user, a.TS, a.Model)
	return a
}

func appendRecords[T any](t testing.TB, buf Buffer, lane string, recs ...T) {
	t.Helper()
	forwardtest.Append(t, buf, lane, recs...)
}

func alerts(n int, severity string) []record.Alert {
	out := make([]record.Alert, n)
	for i := range out {
		out[i] = alert(i, severity)
	}
	return out
}

// harness runs a forwarder over a memory buffer against a double, on a
// fake clock.
type harness struct {
	t    *testing.T
	buf  *buffer.Memory
	srv  *amplitudetest.Server
	clk  *testkit.FakeClock
	fw   *Forwarder
	logs *testkit.Buffer
	opts Options
}

func start(t *testing.T, sopts amplitudetest.Options, mut func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, buf: forwardtest.NewMemory(t), clk: testkit.NewFakeClock(t0), logs: &testkit.Buffer{}}
	if sopts.APIKey == "" {
		sopts.APIKey = testKey
	}
	sopts.Now = h.clk.Now
	h.srv = amplitudetest.NewServer(sopts)
	t.Cleanup(h.srv.Close)
	opts := DefaultOptions()
	opts.APIKey = testKey
	opts.DeviceID = device
	opts.Endpoint = h.srv.HTTPURL()
	opts.Clock = h.clk
	opts.Logger = h.logs.Logger()
	opts.Timeout = 5 * time.Second
	if mut != nil {
		mut(&opts)
	}
	if opts.API == APIBatch && opts.Endpoint == h.srv.HTTPURL() {
		opts.Endpoint = h.srv.BatchURL()
	}
	h.opts = opts
	fw, err := New(h.buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.fw = fw
	t.Cleanup(h.checkNoSecret) // runs after Run stopped
	testkit.Run(t, "Run", fw.Run)
	return h
}

// checkNoSecret fails the test if the API key shows in the log, Stats or
// the dead letters.
func (h *harness) checkNoSecret() {
	h.t.Helper()
	if strings.Contains(h.logs.String(), testKey) {
		h.t.Errorf("the API key appears in the log:\n%s", h.logs.String())
	}
	if s := fmt.Sprintf("%+v", h.fw.Stats()); strings.Contains(s, testKey) {
		h.t.Errorf("the API key appears in Stats: %s", s)
	}
	for _, d := range h.deadLetters() {
		if b, _ := json.Marshal(d); strings.Contains(string(b), testKey) {
			h.t.Errorf("the API key appears in a dead letter: %s", b)
		}
	}
}

// until advances the fake clock, timer by timer, until cond holds.
func (h *harness) until(what string, cond func() bool) {
	h.t.Helper()
	h.clk.AdvanceUntil(h.t, 20*time.Second, what, cond, func() string {
		return fmt.Sprintf("%v; stats %+v", h.srv, h.fw.Stats())
	})
}

// idle waits until the forwarder waits on a timer, without moving time.
func (h *harness) idle() {
	h.t.Helper()
	testkit.WaitFor(h.t, 10*time.Second, "the forwarder to wait", func() bool { return h.clk.Timers() > 0 })
}

func (h *harness) acked(n int) func() bool {
	return func() bool {
		s := h.fw.Stats()
		return s.Acked+s.DeadLettered >= uint64(n) && s.Pending == 0
	}
}

func (h *harness) deadLetters() []forward.DeadLetter { return forwardtest.DeadLetters(h.t, h.buf) }

// unacked returns how many records of lane the forwarder has not
// acknowledged.
func (h *harness) unacked(lane string) int { return forwardtest.Unacked(h.t, h.buf, Consumer, lane) }

func ids(as []record.Alert) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.ID
	}
	return out
}

// exactlyOnce checks that the double ingested each id once and nothing else.
func exactlyOnce(t *testing.T, srv *amplitudetest.Server, want []string) {
	t.Helper()
	forwardtest.ExactlyOnce(t, srv.InsertIDs(), want, "ingested insert_ids")
}

func TestOptionsValidate(t *testing.T) {
	good := DefaultOptions()
	good.APIKey, good.DeviceID = testKey, device
	newFn := func(o Options) error { _, err := New(forwardtest.NewMemory(t), o); return err }
	forwardtest.CheckOptionErrors(t, good, testKey, newFn, []struct {
		Field string
		Mut   func(*Options)
	}{
		{"APIKey", func(o *Options) { o.APIKey = "" }},
		{"Region", func(o *Options) { o.Region = "asia" }},
		{"API", func(o *Options) { o.API = "v3" }},
		{"Endpoint", func(o *Options) { o.Endpoint = "ftp://x" }},
		{"DeviceID", func(o *Options) { o.DeviceID = "" }},
		{"DeviceID", func(o *Options) { o.DeviceID = "abc" }},
		{"DeviceID", func(o *Options) { o.DeviceID = "undefined" }},
		{"DeviceID", func(o *Options) { o.DeviceID = "00000000-0000-0000-0000-000000000000" }},
		{"MinSeverity", func(o *Options) { o.MinSeverity = "high" }},
		{"MinConfidence", func(o *Options) { o.MinConfidence = 1.5 }},
		{"FlushInterval", func(o *Options) { o.FlushInterval = 0 }},
		{"MaxBatch", func(o *Options) { o.MaxBatch = 2000 }},
		{"MaxBatchBytes", func(o *Options) { o.MaxBatchBytes = 1 << 20 }},
		{"MaxPending", func(o *Options) { o.MaxPending = 10 }},
		{"Timeout", func(o *Options) { o.Timeout = -1 }},
		{"Backoff.Initial", func(o *Options) { o.Backoff.Initial = 0 }},
		{"ThrottlePause", func(o *Options) { o.ThrottlePause = 0 }},
		{"FailingRetry", func(o *Options) { o.FailingRetry = 0 }},
	})
	o := good
	o.API = APIBatch
	o.MaxBatchBytes = 5_000_000
	if _, err := New(forwardtest.NewMemory(t), o); err != nil {
		t.Errorf("batch API with 5 MB requests: %v", err)
	}
}

func TestURL(t *testing.T) {
	for _, tc := range []struct {
		region   string
		api      API
		endpoint string
		want     string
	}{
		{"us", APIHTTP, "", "https://api2.amplitude.com/2/httpapi"},
		{"eu", APIHTTP, "", "https://api.eu.amplitude.com/2/httpapi"},
		{"us", APIBatch, "", "https://api2.amplitude.com/batch"},
		{"eu", APIBatch, "", "https://api.eu.amplitude.com/batch"},
		{"eu", APIBatch, "http://127.0.0.1:9/x", "http://127.0.0.1:9/x"},
	} {
		o := Options{Region: tc.region, API: tc.api, Endpoint: tc.endpoint}
		if got := o.URL(); got != tc.want {
			t.Errorf("%s/%s/%q: %s, want %s", tc.region, tc.api, tc.endpoint, got, tc.want)
		}
	}
}

func TestEvents(t *testing.T) {
	h := start(t, amplitudetest.Options{}, func(o *Options) { o.MinSeverity = record.SeverityMajor; o.AppVersion = "1.2.3" })
	major := alert(1, record.SeverityMajor)
	major.TopFeatures = append(major.TopFeatures, record.Feature{Name: strings.Repeat("é", 700), Share: 0.1})
	warning := alert(2, record.SeverityWarning)
	user := userAlert(3, "user-4711")
	badUser := userAlert(4, "null")
	appendRecords(t, h.buf, record.LaneAlert, major, warning, user, badUser)
	advice := record.Advice{
		ID: "adv-" + major.ID, TS: t0.Add(time.Minute), AlertID: major.ID, Device: device, Stream: "pump1",
		Severity: record.SeverityMajor, WorkflowRunID: "run-1", Status: "succeeded",
		Outputs: map[string]any{"advice": strings.Repeat("x", 5000), "n": 3.0},
	}
	appendRecords(t, h.buf, record.LaneAdvice, advice)
	h.until("4 events acked", h.acked(4))

	if s := h.fw.Stats(); s.Skipped != 1 || s.State != forward.StateOK || s.Pending != 0 {
		t.Errorf("stats %+v, want 1 skipped, ok, nothing pending", s)
	}
	exactlyOnce(t, h.srv, []string{major.ID, user.ID, badUser.ID, advice.ID})
	byID := map[string]amplitudetest.Event{}
	for _, e := range h.srv.Events() {
		byID[e.InsertID] = e
	}
	e := byID[major.ID]
	if e.EventType != EventAnomaly || e.DeviceID != device || e.UserID != "" || e.Time != major.TS.UnixMilli() {
		t.Errorf("alert event %+v", e)
	}
	p := e.EventProperties
	for k, want := range map[string]any{
		"stream": "pump1", "severity": "major", "episode": major.Episode, "state": "open", "model": "pump8",
		"model_version": "3", "replayed": false, "window_end": major.Window.End.Format(time.RFC3339Nano),
	} {
		if p[k] != want {
			t.Errorf("event_properties[%s] = %v, want %v", k, p[k], want)
		}
	}
	for _, k := range []string{"score", "threshold", "update", "top_features", "window_start"} {
		if _, ok := p[k]; !ok {
			t.Errorf("event_properties lacks %s", k)
		}
	}
	if feats := p["top_features"].([]any); len(feats) != 3 || len(feats[2].(string)) > MaxPropertyLen {
		t.Errorf("top_features %v: want 3, each at most %d bytes", feats, MaxPropertyLen)
	}
	if got := byID[user.ID]; got.UserID != "user-4711" {
		t.Errorf("behaviour alert user_id %q, want user-4711", got.UserID)
	}
	if got := byID[badUser.ID]; got.UserID != "" || got.EventProperties["key"] != "null" {
		t.Errorf("a placeholder key must not be a user_id: %+v", got)
	}
	a := byID[advice.ID]
	out := a.EventProperties["outputs"].(map[string]any)
	if a.EventType != EventAdvice || a.EventProperties["alert_id"] != major.ID || a.EventProperties["workflow_run_id"] != "run-1" ||
		a.EventProperties["status"] != "succeeded" || len(out["advice"].(string)) != MaxPropertyLen {
		t.Errorf("advice event %+v", a)
	}
	req := h.srv.Requests()[0]
	if ct := req.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var body struct {
		Options map[string]int `json:"options"`
	}
	json.Unmarshal(req.Body, &body)
	if body.Options["min_id_length"] != 5 {
		t.Errorf("options %v, want min_id_length 5", body.Options)
	}
	if h.unacked(record.LaneAlert) != 0 || h.unacked(record.LaneAdvice) != 0 {
		t.Error("records left unacknowledged")
	}
}

func TestBatchAPI(t *testing.T) {
	h := start(t, amplitudetest.Options{}, func(o *Options) { o.API = APIBatch })
	as := alerts(5, record.SeverityCritical)
	appendRecords(t, h.buf, record.LaneAlert, as...)
	h.until("acked", h.acked(5))
	exactlyOnce(t, h.srv, ids(as))
	if p := h.srv.Requests()[0].Path; p != amplitudetest.PathBatch {
		t.Errorf("posted to %s", p)
	}
}

// TestFlushBySizeAndInterval: a full batch goes at once, a partial one
// after FlushInterval.
func TestFlushBySizeAndInterval(t *testing.T) {
	h := start(t, amplitudetest.Options{}, func(o *Options) { o.MaxBatch = 10; o.FlushInterval = 800 * time.Millisecond })
	appendRecords(t, h.buf, record.LaneAlert, alerts(25, record.SeverityMajor)...)
	testkit.WaitFor(t, 10*time.Second, "two full batches", func() bool { return len(h.srv.Requests()) == 2 })
	h.idle()
	if n := len(h.srv.Requests()); n != 2 || h.clk.Now() != t0 {
		t.Fatalf("%d requests at %v: the partial batch went early", n, h.clk.Now())
	}
	d, _ := h.clk.AdvanceToNext()
	if d != 800*time.Millisecond {
		t.Errorf("partial batch waited %v, want the flush interval", d)
	}
	h.until("all acked", h.acked(25))
	reqs := h.srv.Requests()
	if len(reqs) != 3 || len(reqs[0].InsertIDs) != 10 || len(reqs[2].InsertIDs) != 5 {
		t.Errorf("requests of %v events", func() (n []int) {
			for _, r := range reqs {
				n = append(n, len(r.InsertIDs))
			}
			return
		}())
	}
}

// TestFullBatchGoesAtOnce: exactly MaxBatch events make a full batch.
func TestFullBatchGoesAtOnce(t *testing.T) {
	h := start(t, amplitudetest.Options{}, func(o *Options) { o.MaxBatch = 10 })
	appendRecords(t, h.buf, record.LaneAlert, alerts(10, record.SeverityMajor)...)
	testkit.WaitFor(t, 10*time.Second, "acked without moving the clock", h.acked(10))
	if h.clk.Now() != t0 {
		t.Errorf("the clock moved to %v", h.clk.Now())
	}
}

func TestBadRequestDeadLettersListedEvents(t *testing.T) {
	for name, fault := range map[string]amplitudetest.Fault{
		"invalid and missing": {Status: 400, InvalidFields: map[string][]int{"time": {1}}, MissingFields: map[string][]int{"event_type": {3}}},
		"silenced":            {Status: 400, Error: "Events from silenced devices", SilencedDevices: []string{device}, SilencedEvents: []int{1, 3}},
	} {
		t.Run(name, func(t *testing.T) {
			h := start(t, amplitudetest.Options{}, nil)
			h.srv.Script(fault)
			as := alerts(5, record.SeverityMajor)
			appendRecords(t, h.buf, record.LaneAlert, as...)
			h.until("all handled", h.acked(5))
			exactlyOnce(t, h.srv, []string{as[0].ID, as[2].ID, as[4].ID})
			dls := h.deadLetters()
			if len(dls) != 2 || dls[0].RecordID != as[1].ID || dls[1].RecordID != as[3].ID {
				t.Fatalf("dead letters %+v, want alerts 1 and 3", dls)
			}
			for _, d := range dls {
				if d.Status != 400 || d.Reason == "" || len(d.Event) == 0 || d.Consumer != Consumer {
					t.Errorf("dead letter %+v lacks status, reason or event", d)
				}
			}
			if s := h.fw.Stats(); s.DeadLettered != 2 || s.Acked != 3 || s.State != forward.StateOK {
				t.Errorf("stats %+v", s)
			}
			if h.unacked(record.LaneAlert) != 0 {
				t.Error("records left unacknowledged")
			}
		})
	}
}

// TestRefusedWholeBatch: an invalid API key or a missing top-level field
// makes the forwarder fail loudly and keep the events, trying again only
// every FailingRetry.
func TestRefusedWholeBatch(t *testing.T) {
	for name, fault := range map[string]amplitudetest.Fault{
		"invalid key":            {Status: 400, Error: "Invalid API key: " + testKey},
		"missing field":          {Status: 400, Error: "Request missing required field", MissingField: "api_key"},
		"indexes out of range":   {Status: 400, InvalidFields: map[string][]int{"time": {7, -1}}},
		"unauthorized (unknown)": {Status: 401},
		"not found":              {Status: 404},
	} {
		t.Run(name, func(t *testing.T) {
			h := start(t, amplitudetest.Options{}, nil)
			h.srv.Script(fault, fault, fault)
			as := alerts(3, record.SeverityMajor)
			appendRecords(t, h.buf, record.LaneAlert, as...)
			h.until("failing", func() bool { return h.fw.Stats().State == forward.StateFailing })
			h.idle()
			if n := h.unacked(record.LaneAlert); n != 3 {
				t.Errorf("%d records unacknowledged, want all 3 kept", n)
			}
			if s := h.fw.Stats(); s.DeadLettered != 0 || s.LastError == "" {
				t.Errorf("stats %+v: want no dead letter and the error", s)
			}
			if !strings.Contains(h.logs.String(), "level=ERROR") {
				t.Errorf("failing is not loud:\n%s", h.logs)
			}
			// Three refusals, each followed by the failing retry period.
			start := h.clk.Now()
			h.until("delivered after the key is fixed", h.acked(3))
			if waited := h.clk.Now().Sub(start); waited < 3*h.opts.FailingRetry {
				t.Errorf("retried after %v, want 3 × FailingRetry", waited)
			}
			if got := len(h.srv.Requests()); got != 4 {
				t.Errorf("%d requests, want 4", got)
			}
			testkit.WaitFor(t, 5*time.Second, "ok", func() bool { return h.fw.Stats().State == forward.StateOK })
			if s := h.fw.Stats(); s.LastError != "" {
				t.Errorf("stats after recovery %+v", s)
			}
			exactlyOnce(t, h.srv, ids(as))
		})
	}
}

// TestWrongKeyIsNeverShown: the double echoes the refused key, as
// Amplitude does; neither logs, Stats nor errors may show it.
func TestWrongKeyIsNeverShown(t *testing.T) {
	h := start(t, amplitudetest.Options{APIKey: "the-right-key"}, nil)
	appendRecords(t, h.buf, record.LaneAlert, alerts(2, record.SeverityMajor)...)
	h.until("failing", func() bool { return h.fw.Stats().State == forward.StateFailing })
	if s := h.fw.Stats(); !strings.Contains(s.LastError, "Invalid API key") {
		t.Errorf("LastError %q does not say why", s.LastError)
	}
	// checkNoSecret runs at cleanup.
}

func TestTooLarge(t *testing.T) {
	t.Run("halves", func(t *testing.T) {
		h := start(t, amplitudetest.Options{}, func(o *Options) { o.MaxBatch = 8 })
		h.srv.Script(amplitudetest.Fault{Status: 413}, amplitudetest.Fault{Status: 413})
		as := alerts(8, record.SeverityMajor)
		appendRecords(t, h.buf, record.LaneAlert, as...)
		h.until("acked", h.acked(8))
		var sizes []int
		for _, r := range h.srv.Requests() {
			sizes = append(sizes, len(r.InsertIDs))
		}
		if want := []int{8, 4, 2, 2, 2, 2}; !slices.Equal(sizes, want) {
			t.Errorf("request sizes %v, want %v", sizes, want)
		}
		exactlyOnce(t, h.srv, ids(as))
	})
	t.Run("single event is a dead letter", func(t *testing.T) {
		h := start(t, amplitudetest.Options{}, nil)
		h.srv.Script(amplitudetest.Fault{Status: 413})
		appendRecords(t, h.buf, record.LaneAlert, alert(1, record.SeverityMajor))
		h.until("handled", h.acked(1))
		if dls := h.deadLetters(); len(dls) != 1 || dls[0].Status != 413 {
			t.Errorf("dead letters %+v", dls)
		}
	})
	t.Run("client side", func(t *testing.T) {
		h := start(t, amplitudetest.Options{}, func(o *Options) { o.MaxBatchBytes = 2048 })
		big := alert(1, record.SeverityMajor)
		for i := range 20 {
			big.TopFeatures = append(big.TopFeatures, record.Feature{Name: fmt.Sprintf("feature-%d-%s", i, strings.Repeat("z", 200))})
		}
		small := alert(2, record.SeverityMajor)
		appendRecords(t, h.buf, record.LaneAlert, big, small)
		h.until("handled", h.acked(2))
		if dls := h.deadLetters(); len(dls) != 1 || dls[0].RecordID != big.ID || dls[0].Status != 0 {
			t.Errorf("dead letters %+v, want the big alert, unsent", dls)
		}
		exactlyOnce(t, h.srv, []string{small.ID})
	})
}

func TestThrottled(t *testing.T) {
	t.Run("retry-after holds the device", func(t *testing.T) {
		h := start(t, amplitudetest.Options{}, nil)
		h.srv.Script(amplitudetest.Fault{Status: 429, RetryAfter: "7"})
		as := alerts(3, record.SeverityMajor)
		appendRecords(t, h.buf, record.LaneAlert, as...)
		h.until("throttled", func() bool { return h.fw.Stats().State == forward.StateThrottled })
		if s := h.fw.Stats(); s.Held != 3 || s.Throttled != 1 {
			t.Errorf("stats %+v, want 3 held", s)
		}
		h.until("acked", h.acked(3))
		reqs := h.srv.Requests()
		if gap := reqs[1].At.Sub(reqs[0].At); gap < 7*time.Second {
			t.Errorf("resent after %v, before Retry-After", gap)
		}
		exactlyOnce(t, h.srv, ids(as))
	})
	t.Run("others go on", func(t *testing.T) {
		h := start(t, amplitudetest.Options{}, nil)
		h.srv.Script(amplitudetest.Fault{Status: 429, ThrottledUsers: map[string]float64{"user-aaaa": 45}})
		as := []record.Alert{userAlert(1, "user-aaaa"), userAlert(2, "user-bbbb"), userAlert(3, "user-aaaa")}
		appendRecords(t, h.buf, record.LaneAlert, as...)
		h.until("acked", h.acked(3))
		reqs := h.srv.Requests()
		if len(reqs) != 3 || !slices.Equal(reqs[1].InsertIDs, []string{as[1].ID}) || reqs[1].At != reqs[0].At {
			t.Fatalf("requests %+v: want user-bbbb's event at once, alone", reqs)
		}
		if gap := reqs[2].At.Sub(reqs[0].At); gap < h.opts.ThrottlePause {
			t.Errorf("throttled user resent after %v, want %v", gap, h.opts.ThrottlePause)
		}
		exactlyOnce(t, h.srv, ids(as))
	})
	t.Run("daily quota holds until midnight", func(t *testing.T) {
		h := start(t, amplitudetest.Options{}, nil)
		h.srv.Script(amplitudetest.Fault{Status: 429, QuotaDevices: map[string]float64{device: 500000}})
		appendRecords(t, h.buf, record.LaneAlert, alert(1, record.SeverityMajor))
		h.until("acked", h.acked(1))
		reqs := h.srv.Requests()
		if midnight := time.Date(2025, 3, 2, 0, 0, 0, 0, time.UTC); reqs[1].At.Before(midnight) {
			t.Errorf("resent at %v, before the quota reset", reqs[1].At)
		}
	})
	t.Run("naming nobody pauses everything", func(t *testing.T) {
		h := start(t, amplitudetest.Options{}, nil)
		h.srv.Script(amplitudetest.Fault{Status: 429, ThrottledDevices: map[string]float64{"another-device": 50}})
		appendRecords(t, h.buf, record.LaneAlert, alert(1, record.SeverityMajor))
		h.until("acked", h.acked(1))
		if reqs := h.srv.Requests(); reqs[1].At.Sub(reqs[0].At) < h.opts.ThrottlePause {
			t.Errorf("resent after %v", reqs[1].At.Sub(reqs[0].At))
		}
	})
	t.Run("double's rate limit", func(t *testing.T) {
		h := start(t, amplitudetest.Options{Throttle: true}, func(o *Options) { o.ThrottlePause = time.Second })
		as := alerts(100, record.SeverityMajor)
		appendRecords(t, h.buf, record.LaneAlert, as...)
		h.until("acked", h.acked(100))
		exactlyOnce(t, h.srv, ids(as))
		if n := len(h.srv.Requests()); n > 20 {
			t.Errorf("%d requests for 100 events at 30/s", n)
		}
	})
}

func TestTemporaryFailures(t *testing.T) {
	for name, faults := range map[string][]amplitudetest.Fault{
		"500 502 504":        {{Status: 500}, {Status: 502}, {Status: 504}},
		"503 retry-after":    {{Status: 503, RetryAfter: "120"}},
		"timeout":            {{Hang: true}},
		"reset":              {{Reset: true}, {Reset: true}},
		"applied but failed": {{Apply: true, Status: 500}, {Apply: true, Status: 504}},
	} {
		t.Run(name, func(t *testing.T) {
			h := start(t, amplitudetest.Options{}, func(o *Options) { o.Timeout = 200 * time.Millisecond })
			h.srv.Script(faults...)
			as := alerts(4, record.SeverityMajor)
			appendRecords(t, h.buf, record.LaneAlert, as...)
			h.until("retrying", func() bool { return h.fw.Stats().State == forward.StateRetrying })
			if n := h.unacked(record.LaneAlert); n != 4 {
				t.Errorf("%d unacknowledged while retrying, want 4", n)
			}
			h.until("acked", h.acked(4))
			exactlyOnce(t, h.srv, ids(as))
			reqs := h.srv.Requests()
			if len(reqs) != len(faults)+1 {
				t.Errorf("%d requests, want %d", len(reqs), len(faults)+1)
			}
			for i := 1; i < len(reqs); i++ {
				gap := reqs[i].At.Sub(reqs[i-1].At)
				min := h.opts.Backoff.Initial / 2
				if faults[i-1].RetryAfter == "120" {
					min = 120 * time.Second
				}
				if gap < min {
					t.Errorf("retry %d after %v, want at least %v", i, gap, min)
				}
			}
			if s := h.fw.Stats(); s.Retries != uint64(len(faults)) || s.State != forward.StateOK {
				t.Errorf("stats %+v", s)
			}
			if name == "applied but failed" && h.srv.Duplicates() != 8 {
				t.Errorf("%d duplicates dropped by insert_id, want 8", h.srv.Duplicates())
			}
		})
	}
}

// TestRequestsBounded: against an endpoint that always fails, an hour of
// simulated time costs a bounded number of requests.
func TestRequestsBounded(t *testing.T) {
	for name, tc := range map[string]struct {
		fault amplitudetest.Fault
		max   int
	}{
		// backoff 1s doubling to 5 min, jittered to [d/2, d]: ~9 requests to
		// reach the cap, then at most 3600/150 more.
		"500":         {amplitudetest.Fault{Status: 500}, 35},
		"invalid key": {amplitudetest.Fault{Status: 400, Error: "Invalid API key"}, 13},
		"429":         {amplitudetest.Fault{Status: 429}, 121},
	} {
		t.Run(name, func(t *testing.T) {
			h := start(t, amplitudetest.Options{}, nil)
			h.srv.SetFaultFunc(func(amplitudetest.Request) *amplitudetest.Fault { f := tc.fault; return &f })
			appendRecords(t, h.buf, record.LaneAlert, alerts(300, record.SeverityMajor)...)
			end := t0.Add(time.Hour)
			h.until("an hour", func() bool { return !h.clk.Now().Before(end) })
			if n := len(h.srv.Requests()); n > tc.max || n < 2 {
				t.Errorf("%d requests in a simulated hour, want 2..%d", n, tc.max)
			}
			if n := h.unacked(record.LaneAlert); n != 300 {
				t.Errorf("%d records kept, want 300", n)
			}
		})
	}
}

// TestStorm: through a random mix of every temporary failure, every alert
// reaches Amplitude exactly once.
func TestStorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	faults := []amplitudetest.Fault{
		{Status: 500}, {Status: 502}, {Status: 503}, {Status: 504}, {Status: 503, RetryAfter: "3"},
		{Status: 413}, {Status: 429}, {Status: 429, RetryAfter: "2"}, {Hang: true}, {Reset: true},
		{Apply: true, Status: 500}, {Apply: true, Status: 502},
	}
	h := start(t, amplitudetest.Options{}, func(o *Options) { o.Timeout = 100 * time.Millisecond; o.MaxBatch = 20 })
	h.srv.SetFaultFunc(func(req amplitudetest.Request) *amplitudetest.Fault {
		if rng.IntN(2) == 0 {
			return nil
		}
		f := faults[rng.IntN(len(faults))]
		if f.Status == 413 && len(req.InsertIDs) == 1 {
			return nil // a 413 for one event is a permanent failure
		}
		return &f
	})
	var as []record.Alert
	for i := range 200 {
		as = append(as, alert(i, record.SeverityCritical))
	}
	for i := 0; i < len(as); i += 40 {
		appendRecords(t, h.buf, record.LaneAlert, as[i:i+40]...)
	}
	h.until("all acked", h.acked(len(as)))
	exactlyOnce(t, h.srv, ids(as))
	if h.fw.Stats().DeadLettered != 0 {
		t.Errorf("dead letters in a storm of temporary failures: %+v", h.deadLetters())
	}
	t.Logf("%v; stats %+v", h.srv, h.fw.Stats())
}

// TestRestartResends: events a forwarder took but did not deliver are
// sent by the next one, and Amplitude keeps one copy.
func TestRestartResends(t *testing.T) {
	buf := forwardtest.NewMemory(t)
	srv := amplitudetest.NewServer(amplitudetest.Options{APIKey: testKey})
	defer srv.Close()
	as := alerts(10, record.SeverityMajor)
	appendRecords(t, buf, record.LaneAlert, as...)
	opts := DefaultOptions()
	opts.APIKey, opts.DeviceID, opts.Endpoint, opts.FlushInterval = testKey, device, srv.HTTPURL(), time.Millisecond
	run := func(stop func(*Forwarder) bool) {
		fw, err := New(buf, opts)
		if err != nil {
			t.Fatal(err)
		}
		halt := testkit.Go(fw.Run)
		testkit.WaitFor(t, 10*time.Second, "progress", func() bool { return stop(fw) })
		_ = halt()
	}
	srv.Script(amplitudetest.Fault{Apply: true, Status: 500})
	run(func(*Forwarder) bool { return len(srv.Requests()) >= 1 })
	run(func(fw *Forwarder) bool { return fw.Stats().Acked == 10 })
	exactlyOnce(t, srv, ids(as))
}

func TestDecodeResponse(t *testing.T) {
	r := decodeResponse([]byte(`{"code":400,"error":"bad","events_with_invalid_fields":{"time":[0,2]},"events_with_missing_fields":{"event_type":[2]},"silenced_events":[5],"throttled_devices":"oops"}`))
	got := r.rejected(4)
	if want := map[int]string{0: "invalid field time", 2: "invalid field time, missing field event_type"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rejected %v, want %v", got, want)
	}
	if r.ThrottledDevices != nil || r.Error != "bad" {
		t.Errorf("decoded %+v", r)
	}
	r = decodeResponse([]byte(`{"code":429,"eps_threshold":30,"throttled_users":{"u-1":31.5},"throttled_events":[1],"exceeded_daily_quota_devices":{"d-1":500000}}`))
	if r.ThrottledUsers["u-1"] != 31.5 || r.EPSThreshold != 30 || len(r.ThrottledEvents) != 1 || r.QuotaDevices["d-1"] != 500000 {
		t.Errorf("decoded %+v", r)
	}
}

func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{
		`{"code":200,"events_ingested":3,"payload_size_bytes":10,"server_upload_time":1}`,
		`{"code":400,"error":"x","missing_field":"api_key"}`,
		`{"code":400,"events_with_invalid_fields":{"time":[0,9,-3]},"events_with_missing_fields":{"event_type":[1]},"silenced_devices":["d"],"silenced_events":[2]}`,
		`{"code":429,"eps_threshold":30,"throttled_devices":{"d":40},"throttled_users":{"u":31},"throttled_events":[0],"exceeded_daily_quota_users":{"u":1}}`,
		`not json`, `[]`, `{"events_with_invalid_fields":[1]}`,
	} {
		f.Add([]byte(s), 3)
	}
	f.Fuzz(func(t *testing.T, body []byte, n int) {
		n = n % 4000
		r := decodeResponse(body)
		for i, why := range r.rejected(n) {
			if i < 0 || i >= n || why == "" {
				t.Fatalf("rejected index %d (%q) outside a request of %d", i, why, n)
			}
		}
	})
}

// BenchmarkThroughput measures events per second to the local double, in
// chunks of 1000 alerts, per batch size.
func BenchmarkThroughput(b *testing.B) {
	for _, batch := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			buf := forwardtest.NewMemory(b)
			srv := amplitudetest.NewServer(amplitudetest.Options{APIKey: testKey})
			defer srv.Close()
			opts := DefaultOptions()
			opts.APIKey, opts.DeviceID, opts.Endpoint, opts.MaxBatch = testKey, device, srv.HTTPURL(), batch
			fw, err := New(buf, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer testkit.Go(fw.Run)()
			ctx := context.Background()
			const chunk = 1000
			data := make([][]byte, chunk)
			i, n := 0, 0
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				for j := range data {
					data[j], _ = json.Marshal(alert(i, record.SeverityMajor))
					i++
				}
				if _, err := buf.Append(ctx, record.LaneAlert, data...); err != nil {
					b.Fatal(err)
				}
				n += chunk
				testkit.WaitFor(b, time.Minute, "acked", func() bool { return fw.Stats().Acked >= uint64(n) })
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
			b.ReportMetric(float64(len(srv.Requests()))/float64(b.N), "requests/op")
		})
	}
}

// ackTimes wraps a buffer and notes when each alert was acknowledged.
type ackTimes struct {
	Buffer
	mu sync.Mutex
	at map[uint64]time.Time
}

func (a *ackTimes) Ack(consumer, lane string, seqs ...uint64) error {
	now := time.Now()
	a.mu.Lock()
	for _, s := range seqs {
		if lane == record.LaneAlert {
			a.at[s] = now
		}
	}
	a.mu.Unlock()
	return a.Buffer.Ack(consumer, lane, seqs...)
}

// BenchmarkLatency measures the time from appending an alert to its
// acknowledgement after Amplitude accepted it, online, at the default
// flush interval (1 s) and batch size. Alerts arrive as a Poisson process
// (20 a second on average), so some wait a whole interval and some join a
// batch about to leave. Run it with -benchtime=500x or more for a p99.
func BenchmarkLatency(b *testing.B) {
	mem := forwardtest.NewMemory(b)
	if err := mem.RegisterConsumer(Consumer, Lanes()...); err != nil {
		b.Fatal(err)
	}
	buf := &ackTimes{Buffer: mem, at: map[uint64]time.Time{}}
	srv := amplitudetest.NewServer(amplitudetest.Options{APIKey: testKey})
	defer srv.Close()
	opts := DefaultOptions()
	opts.APIKey, opts.DeviceID, opts.Endpoint = testKey, device, srv.HTTPURL()
	fw, err := New(buf, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer testkit.Go(fw.Run)()
	ctx := context.Background()
	appended := map[uint64]time.Time{}
	i := 0
	for b.Loop() {
		data, _ := json.Marshal(alert(i, record.SeverityMajor))
		i++
		t := time.Now()
		seqs, err := mem.Append(ctx, record.LaneAlert, data)
		if err != nil {
			b.Fatal(err)
		}
		appended[seqs[0]] = t
		// Pace the arrivals (the load of the benchmark, not an assertion).
		time.Sleep(time.Duration(rand.ExpFloat64() * float64(50*time.Millisecond)))
	}
	testkit.WaitFor(b, time.Minute, "all acked", func() bool { return fw.Stats().Acked >= uint64(i) })
	var lat []time.Duration
	buf.mu.Lock()
	for seq, t := range appended {
		lat = append(lat, buf.at[seq].Sub(t))
	}
	buf.mu.Unlock()
	slices.Sort(lat)
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(p(0.5), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
	b.ReportMetric(p(1), "max-ms")
	b.ReportMetric(float64(len(srv.Requests())), "requests")
}

// TestMinConfidence: with MinConfidence 0.99 only the alert whose
// confidence reaches it is sent; one below it and one without a
// confidence are acknowledged unsent and counted as Skipped.
func TestMinConfidence(t *testing.T) {
	h := start(t, amplitudetest.Options{}, func(o *Options) { o.MinConfidence = 0.99 })
	conf := func(a record.Alert, c float64) record.Alert { a.Confidence = &c; return a }
	sure, unsure, unknown := conf(alert(1, record.SeverityMajor), 0.995), conf(alert(2, record.SeverityMajor), 0.5), alert(3, record.SeverityMajor)
	appendRecords(t, h.buf, record.LaneAlert, sure, unsure, unknown)
	h.until("3 alerts handled", func() bool { s := h.fw.Stats(); return s.Acked+s.Skipped >= 3 && s.Pending == 0 })
	if s := h.fw.Stats(); s.Skipped != 2 || s.Acked != 1 {
		t.Errorf("stats %+v, want 2 skipped", s)
	}
	exactlyOnce(t, h.srv, []string{sure.ID})
	if evs := h.srv.Events(); len(evs) != 1 || fmt.Sprint(evs[0].EventProperties["confidence"]) != "0.995" {
		t.Errorf("events %+v, want one with confidence 0.995", evs)
	}
}
