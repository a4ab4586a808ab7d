package watch

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzApply feeds arbitrary topics and payloads to the view: whatever a
// device (or anyone else on the broker) publishes, the view neither panics
// nor renders something that is not text (the compact view: no control
// character, no line wider than the terminal), and every event it reports
// marshals to JSON for --json.
func FuzzApply(f *testing.F) {
	f.Add("vigil/dev-1/status", []byte(`{"state":"online","birth":3,"version":"v1"}`), true)
	f.Add("vigil/dev-1/health", []byte(`{"uptime_s":12,"rates":{"inputs":10.5},"forwarders":{"mqtt":{"state":"ok"}}}`), false)
	f.Add("vigil/dev-1/alerts/pump1", []byte(`{"id":"a1","stream":"pump1","severity":"major","score":3.2,"threshold":1}`), false)
	f.Add("vigil/dev-1/status", []byte{}, true)
	f.Add("vigil//status", []byte(`null`), false)
	f.Add("vigil/dev-1/health", []byte(`[1,2,{"a":NaN}]`), false)
	f.Add("other/dev/status", []byte("\xff\xfe"), false)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, topic string, payload []byte, retained bool) {
		v := newView("vigil")
		for i := range 2 { // twice: updates of a known device too
			ev, ok := v.apply(topic, payload, retained, now.Add(time.Duration(i)*time.Second))
			if ok {
				if _, err := json.Marshal(ev); err != nil {
					t.Fatalf("event does not marshal: %v", err)
				}
			}
		}
		_ = v.render("tcp://127.0.0.1:1883", true, 0, now.Add(time.Minute))
		frame := v.renderCompact("tcp://127.0.0.1:1883", true, 0, now.Add(time.Minute), Filter{}, time.Minute, 80, 23)
		if strings.ContainsFunc(frame, func(r rune) bool { return r != '\n' && isControl(r) }) {
			t.Fatalf("a control character reached the compact view: %q", frame)
		}
		for l := range strings.SplitSeq(frame, "\n") {
			if n := len([]rune(l)); n > 80 {
				t.Fatalf("a line of %d columns in an 80-column view: %q", n, l)
			}
		}
	})
}
