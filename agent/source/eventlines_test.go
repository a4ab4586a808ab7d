package source

import (
	"strings"
	"testing"
	"time"
)

// TestReadEventLines: an events file is read as the event sources read a
// body (RFC 3339 or Unix milliseconds or seconds), with the anomaly label;
// a bad line is an error naming it.
func TestReadEventLines(t *testing.T) {
	in := `{"event_id":"e1","event_name":"page_view","timestamp":"2025-06-01T12:00:00Z","user_id":"u1"}

{"event_id":"e2","event_name":"form_error","timestamp":1748779201000,"user_id":"u1","anomaly":1}
{"event_name":"payment_ok","timestamp":1748779202,"user_id":"u2","properties":{"amount":12.5},"anomaly":0}
`
	type got struct {
		name      string
		at        time.Time
		anomalous bool
	}
	var evs []got
	err := ReadEventLines(strings.NewReader(in), func(ev Event, anomalous bool) error {
		evs = append(evs, got{ev.Name, ev.Time, anomalous})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	want := []got{{"page_view", t0, false}, {"form_error", t0.Add(time.Second), true}, {"payment_ok", t0.Add(2 * time.Second), false}}
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %v", len(evs), len(want), evs)
	}
	for i := range want {
		if evs[i].name != want[i].name || !evs[i].at.Equal(want[i].at) || evs[i].anomalous != want[i].anomalous {
			t.Errorf("event %d: %+v, want %+v", i, evs[i], want[i])
		}
	}

	for name, c := range map[string]struct{ in, err string }{
		"no timestamp":  {`{"event_name":"a","user_id":"u"}`, "line 1: timestamp: missing"},
		"no user":       {`{"event_name":"a","timestamp":1748779201000}`, "line 1: user_id: missing"},
		"not JSON":      {"\n{\"event_name\":", "line 2: not valid JSON"},
		"bad label":     {`{"event_name":"a","user_id":"u","timestamp":1,"anomaly":"yes"}`, "line 1: anomaly:"},
		"not an object": {`[1]`, "line 1: event must be a JSON object"},
		"bad time":      {`{"event_name":"a","user_id":"u","timestamp":"yesterday"}`, "line 1: timestamp:"},
	} {
		err := ReadEventLines(strings.NewReader(c.in), func(Event, bool) error { return nil })
		if err == nil || !strings.HasPrefix(err.Error(), c.err) {
			t.Errorf("%s: %v, want %q", name, err, c.err)
		}
	}
}

func FuzzReadEventLines(f *testing.F) {
	f.Add([]byte(`{"event_id":"e1","event_name":"page_view","timestamp":"2025-06-01T12:00:00Z","user_id":"u1"}` + "\n"))
	f.Add([]byte(`{"event_name":"x","timestamp":1748779201000,"user_id":"u","properties":{"a":1e400},"anomaly":1}`))
	f.Add([]byte("\n\n[]\n{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		_ = ReadEventLines(strings.NewReader(string(data)), func(ev Event, _ bool) error {
			n++
			if ev.Name == "" || ev.UserID == "" || ev.Time.IsZero() {
				t.Fatalf("event %d without a name, user or time: %+v", n, ev)
			}
			return nil
		})
	})
}
