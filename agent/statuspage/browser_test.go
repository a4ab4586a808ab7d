package statuspage

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
)

// The page in a real Chromium shows each alert's top features and, when
// it has one, its reason (a stuck sensor, a level shift, an episode closed
// after a restart), as text: a reason with markup stays text.
func TestPageShowsAnAlertsReasonInChromium(t *testing.T) {
	testkit.Chromium(t) // skips early without one
	rec := NewRecent(10, 10)
	b := rec.Tap(newBuffer(t))
	p := New(Options{Recent: rec,
		Health: func() health.Snapshot { return health.Snapshot{Device: "dev-01"} },
		Live:   func() []health.Check { return []health.Check{{Name: "pipeline", OK: true}} },
		Ready:  func() []health.Check { return []health.Check{{Name: "pipeline", OK: true}} },
	})
	const reason = "sensor stuck: Temperature has read 77.908 for 70 samples in a row <b>x</b>"
	appendJSON(t, b, record.LaneAlert, record.Alert{ID: "a1", TS: t0, Stream: "pump1", Episode: "e1", State: "open",
		Severity: "warning", Score: 0.5, Threshold: 0.77, TopFeatures: []record.Feature{{Name: "Temperature", Share: 1}}, Reason: reason})
	appendJSON(t, b, record.LaneAlert, record.Alert{ID: "a2", TS: t0.Add(time.Second), Stream: "pump1", Episode: "e2", State: "open",
		Severity: "major", Score: 1.2, Threshold: 0.77, TopFeatures: []record.Feature{{Name: "Pressure", Share: 0.6}}})
	srv := httptest.NewServer(p)
	defer srv.Close()

	dom := testkit.Headless(t, srv.URL+"/", "--dump-dom")
	for _, want := range []string{
		`<tr class="alert-row" data-id="a1">`,
		`Temperature 100%<div class="muted reason">sensor stuck: Temperature has read 77.908 for 70 samples in a row &lt;b&gt;x&lt;/b&gt;</div>`,
		`<tr class="alert-row" data-id="a2">`,
	} {
		if !strings.Contains(dom, want) {
			t.Fatalf("the page lacks %s:\n%s", want, dom)
		}
	}
	if strings.Count(dom, `class="muted reason"`) != 1 {
		t.Fatalf("a reason line under an alert without a reason:\n%s", dom)
	}
}
