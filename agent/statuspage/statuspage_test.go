package statuspage

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

func newBuffer(t *testing.T) *buffer.Memory {
	t.Helper()
	o := buffer.DefaultOptions()
	o.Lanes = []buffer.LaneOptions{{Name: record.LaneScore}, {Name: record.LaneAlert, Priority: 2}}
	b, err := buffer.NewMemory(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func appendJSON(t *testing.T, b Appender, lane string, v any) {
	t.Helper()
	data, _ := json.Marshal(v)
	if _, err := b.Append(context.Background(), lane, data); err != nil {
		t.Fatal(err)
	}
}

func TestStatusTailsScoresAndAlerts(t *testing.T) {
	rec := NewRecent(100, 100)
	p := New(Options{Recent: rec, Points: 5, Alerts: 3,
		Health: func() health.Snapshot { return health.Snapshot{Device: "dev-01"} },
		Ready:  func() []health.Check { return []health.Check{{Name: "broker", OK: false, Reason: "not connected"}} },
	})
	b := rec.Tap(newBuffer(t))
	for i := range 8 {
		appendJSON(t, b, record.LaneScore, record.Score{TS: t0.Add(time.Duration(i) * time.Second), Stream: "pump1", Score: float64(i), Threshold: 4})
	}
	alert := func(i int, ep, state string) record.Alert {
		return record.Alert{ID: fmt.Sprintf("a%d", i), TS: t0.Add(time.Duration(i) * time.Second), Stream: "pump1", Episode: ep, State: state,
			Severity: "major", Score: 6, Threshold: 4, TopFeatures: []record.Feature{{Name: "Pressure", Share: 0.7}}}
	}
	appendJSON(t, b, record.LaneAlert, alert(1, "e1", "open"))
	stuck := alert(2, "e2", "open")
	stuck.Reason = "sensor stuck: Pressure has read 0.38 for 600 samples in a row"
	appendJSON(t, b, record.LaneAlert, stuck)
	s := p.Status()
	if got := s.Points["pump1"]; len(got) != 5 || got[0][1] != 3 || got[4][1] != 7 || got[4][2] != 4 {
		t.Fatalf("points %v: want the last 5 scores", got)
	}
	if len(s.Open) != 2 || len(s.Alerts) != 2 || s.Alerts[0].ID != "a2" || s.Alerts[0].TopFeatures[0].Name != "Pressure" ||
		s.Alerts[0].Reason != stuck.Reason || s.Alerts[1].Reason != "" {
		t.Fatalf("open %+v alerts %+v", s.Open, s.Alerts)
	}
	// Later requests read only what came since; a closed episode leaves the
	// open list; the alert list keeps the latest Alerts.
	appendJSON(t, b, record.LaneAlert, alert(3, "e1", "escalated"))
	appendJSON(t, b, record.LaneAlert, alert(4, "e1", "closed"))
	s = p.Status()
	if len(s.Open) != 1 || s.Open[0].Episode != "e2" {
		t.Fatalf("open %+v, want e2 only", s.Open)
	}
	if len(s.Alerts) != 3 || s.Alerts[0].ID != "a4" || s.Alerts[2].ID != "a2" {
		t.Fatalf("alerts %+v", s.Alerts)
	}
	if s.Health.Device != "dev-01" || len(s.Ready) != 1 {
		t.Fatalf("health %+v ready %+v", s.Health, s.Ready)
	}
}

// TestStatusSkipsALongGap: after a long time unwatched, a request reads
// only the latest records Recent holds, not everything since; the tap
// appends everything to the buffer and keeps copies, not the callers' slices.
func TestStatusSkipsALongGap(t *testing.T) {
	mem := newBuffer(t)
	rec := NewRecent(10, 10)
	b := rec.Tap(mem)
	p := New(Options{Recent: rec, Points: 3})
	p.Status()
	for i := range 100 {
		data, _ := json.Marshal(record.Score{TS: t0.Add(time.Duration(i) * time.Millisecond), Stream: "s", Score: float64(i)})
		if _, err := b.Append(context.Background(), record.LaneScore, data); err != nil {
			t.Fatal(err)
		}
		clear(data) // the caller reuses its slice
	}
	s := p.Status()
	if got := s.Points["s"]; len(got) != 3 || got[2][1] != 99 || got[0][1] != 97 {
		t.Fatalf("points %v", got)
	}
	if n := mem.LastSeq(record.LaneScore); n != 100 {
		t.Fatalf("the buffer got %d records, want 100", n)
	}
}

func TestTokenGuardsThePageAndItsJSON(t *testing.T) {
	p := New(Options{Token: "s3cret", Health: func() health.Snapshot { return health.Snapshot{Device: "dev-01"} }})
	srv := httptest.NewServer(p)
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, hdr map[string]string) *http.Response {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, path := range []string{"/", "/status.json", "/?token=wrong"} {
		if r := get(path, nil); r.StatusCode != 401 {
			t.Fatalf("GET %s without the token: %d", path, r.StatusCode)
		}
	}
	if r := get("/status.json", map[string]string{"Authorization": "Bearer s3cret"}); r.StatusCode != 200 {
		t.Fatalf("bearer: %d", r.StatusCode)
	}
	r := get("/?token=s3cret", nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/" || len(r.Cookies()) != 1 || !r.Cookies()[0].HttpOnly {
		t.Fatalf("?token=: %d %v %v", r.StatusCode, r.Header, r.Cookies())
	}
	cookie := r.Cookies()[0].Name + "=" + r.Cookies()[0].Value
	for _, path := range []string{"/", "/status.json"} {
		if r := get(path, map[string]string{"Cookie": cookie}); r.StatusCode != 200 {
			t.Fatalf("GET %s with the cookie: %d", path, r.StatusCode)
		}
	}
}

func TestPageIsSelfContained(t *testing.T) {
	html := string(indexHTML)
	for _, bad := range []string{"http://", "https://", "//cdn", "<link", "src=\""} {
		if strings.Contains(strings.ReplaceAll(html, `"http://www.w3.org/2000/svg"`, ""), bad) {
			t.Errorf("index.html refers to an external asset (%q)", bad)
		}
	}
	if strings.Contains(html, "innerHTML") {
		t.Error("index.html uses innerHTML: device values must go in as text")
	}
}
