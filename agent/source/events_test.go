package source

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDecodeEvents(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	lim := DefaultEventLimits()
	lim.MaxEvents = 3
	lim.MaxStringLen = 16
	lim.MaxProperties = 3
	type want struct {
		index  int
		reason string // substring; "" for accepted
	}
	tests := []struct {
		name string
		in   string
		err  string
		want []want
		// checks on the first accepted event
		check func(t *testing.T, ev Event)
	}{
		{name: "single", in: `{"event_id":"e1","event_name":"page_view","timestamp":"2024-06-10T06:13:20.123Z","user_id":"u1","properties":{"page":"/","n":3,"deep":{"a":[1,2.5]}}}`,
			want: []want{{0, ""}},
			check: func(t *testing.T, ev Event) {
				if ev.ID != "e1" || ev.Name != "page_view" || ev.UserID != "u1" || !ev.Time.Equal(time.UnixMilli(1718000000123)) {
					t.Errorf("event %+v", ev)
				}
				if ev.Properties["n"] != 3.0 || ev.Properties["deep"].(map[string]any)["a"].([]any)[1] != 2.5 {
					t.Errorf("properties %#v", ev.Properties)
				}
			}},
		{name: "unix ms, no id, no properties", in: ` {"event_name":"x","user_id":"u","timestamp":1718000000123} `,
			want: []want{{0, ""}},
			check: func(t *testing.T, ev Event) {
				if !strings.HasPrefix(ev.ID, "srv-") || !ev.Time.Equal(time.UnixMilli(1718000000123)) || ev.Properties != nil {
					t.Errorf("event %+v", ev)
				}
			}},
		{name: "no timestamp is now", in: `{"event_name":"x","user_id":"u","timestamp":null}`, want: []want{{0, ""}},
			check: func(t *testing.T, ev Event) {
				if !ev.Time.Equal(now) {
					t.Errorf("time %v", ev.Time)
				}
			}},
		{name: "mixed batch", in: `[
			{"event_id":"a","event_name":"ok","user_id":"u"},
			{"event_id":"b","user_id":"u"},
			{"event_id":"c","event_name":"ok","user_id":"u","properties":[1]}]`,
			want: []want{{0, ""}, {1, "event_name: missing"}, {2, "properties: must be an object"}}},
		{name: "each reason", in: `[
			{"event_name":"x","user_id":7},
			{"event_name":"x","user_id":"u","timestamp":"later"},
			{"event_name":"x","user_id":"a-very-long-user-id-indeed"}]`,
			want: []want{{0, "user_id: must be a string"}, {1, "timestamp"}, {2, "user_id: longer than 16"}}},
		{name: "more", in: `[
			{"event_name":"x","user_id":"u","properties":{"a":1e400}},
			{"event_name":"x","user_id":"u","timestamp":1e400},
			"not an object"]`,
			want: []want{{0, "not finite"}, {1, "out of range"}, {2, "must be a JSON object"}}},
		{name: "too many properties", in: `{"event_name":"x","user_id":"u","properties":{"a":1,"b":2,"c":3,"d":4}}`, want: []want{{0, "more than 3 keys"}}},
		{name: "empty strings", in: `{"event_name":"","user_id":"u"}`, want: []want{{0, "event_name: empty"}}},
		{name: "empty array", in: `[]`},
		{name: "too many events", in: `[{},{},{},{}]`, err: "too many events"},
		{name: "not JSON", in: `{"event_name":`, err: "not valid JSON"},
		{name: "bad array", in: `[{"event_name":"x"},`, err: "not valid JSON"},
		{name: "scalar", in: `42`, err: "object or an array"},
		{name: "empty body", in: " \n", err: "empty body"},
		{name: "BOM", in: "\ufeff{\"event_name\":\"x\",\"user_id\":\"u\"}", want: []want{{0, ""}}},
		{name: "from the future", in: `[
			{"event_id":"f1","event_name":"x","user_id":"u","timestamp":"2999-01-01T00:00:00Z"},
			{"event_id":"f2","event_name":"x","user_id":"u","timestamp":"2025-06-01T12:05:00Z"},
			{"event_id":"f3","event_name":"x","user_id":"u","timestamp":32503680000000}]`,
			want: []want{{0, "timestamp: 2999-01-01T00:00:00Z is 355594 days ahead"}, {1, ""}, {2, "at most 5m0s ahead is accepted"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, rej, err := decodeEvents([]byte(tt.in), now, lim)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(evs)+len(rej) != len(tt.want) {
				t.Fatalf("%d accepted %+v, %d rejected %+v; want %d", len(evs), evs, len(rej), rej, len(tt.want))
			}
			ai, ri := 0, 0
			for _, w := range tt.want {
				if w.reason == "" {
					if ai >= len(evs) {
						t.Fatalf("index %d rejected: %+v", w.index, rej)
					}
					if evs[ai].index != w.index {
						t.Errorf("accepted index %d, want %d", evs[ai].index, w.index)
					}
					ai++
					continue
				}
				if ri >= len(rej) {
					t.Fatalf("index %d accepted, want %q", w.index, w.reason)
				}
				r := rej[ri]
				ri++
				if r.Index != w.index || !strings.Contains(r.Reason, w.reason) {
					t.Errorf("rejection %+v, want index %d %q", r, w.index, w.reason)
				}
				if r.Drop == "" {
					t.Errorf("rejection %+v has no drop reason", r)
				}
			}
			if tt.check != nil && len(evs) > 0 {
				tt.check(t, evs[0].event)
			}
		})
	}
}

// FuzzDecodeEvents checks that no body crashes the decoder, that every
// body gets either a whole-body error or one verdict per event, and that
// accepted events are valid.
func FuzzDecodeEvents(f *testing.F) {
	for _, s := range []string{
		`{"event_id":"e1","event_name":"page_view","timestamp":"2024-06-10T06:13:20Z","user_id":"u1","properties":{"a":1}}`,
		`[{"event_name":"a","user_id":"u","timestamp":1718000000123},{"event_name":"b"}]`,
		`[{"event_name":"a","user_id":"u","properties":{"x":1e999}}]`,
		`{"event_name":"\ud800","user_id":"u","timestamp":-1}`, `[`, `{}`, `[1,"x",null]`, "",
	} {
		f.Add([]byte(s))
	}
	lim := DefaultEventLimits()
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, rej, err := decodeEvents(body, now, lim)
		if err != nil {
			if len(evs)+len(rej) != 0 {
				t.Fatal("whole-body error with per-event results")
			}
			return
		}
		seen := map[int]bool{}
		for _, e := range evs {
			ev := e.event
			if ev.Name == "" || ev.UserID == "" || ev.ID == "" {
				t.Fatalf("accepted an invalid event %+v", ev)
			}
			if len(ev.Name) > lim.MaxStringLen || len(ev.UserID) > lim.MaxStringLen || len(ev.Properties) > lim.MaxProperties {
				t.Fatalf("accepted an event over the limits %+v", ev)
			}
			if _, err := json.Marshal(ev.Properties); err != nil {
				t.Fatalf("accepted properties that do not encode: %v", err)
			}
			seen[e.index] = true
		}
		for _, r := range rej {
			if seen[r.Index] || r.Reason == "" || r.Drop == "" {
				t.Fatalf("bad rejection %+v", r)
			}
			seen[r.Index] = true
		}
		if len(seen) != len(evs)+len(rej) {
			t.Fatal("two verdicts for one event")
		}
	})
}

func TestDedup(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := newDedup(3, time.Minute)
	if !d.reserve("a", t0) || d.reserve("a", t0.Add(time.Second)) {
		t.Fatal("a: want new, then duplicate")
	}
	// Released ids can come again.
	d.release("a")
	if !d.reserve("a", t0.Add(2*time.Second)) {
		t.Fatal("a after release: want new")
	}
	// Expiry by time.
	if !d.reserve("b", t0.Add(3*time.Second)) {
		t.Fatal("b")
	}
	if !d.reserve("a", t0.Add(62500*time.Millisecond)) {
		t.Fatal("a after the window: want new")
	}
	if d.reserve("b", t0.Add(62500*time.Millisecond)) {
		t.Fatal("b within the window: want duplicate")
	}
	// Eviction by size: c, d, e push the oldest ids out.
	for i, id := range []string{"c", "d", "e"} {
		if !d.reserve(id, t0.Add(time.Duration(64+i)*time.Second)) {
			t.Fatalf("%s: want new", id)
		}
	}
	if !d.reserve("a", t0.Add(70*time.Second)) {
		t.Fatal("a evicted by size: want new")
	}
	if len(d.seen) > 3 {
		t.Fatalf("%d ids remembered, cap 3", len(d.seen))
	}
	var off *dedup
	first := off.reserve("x", t0)
	if second := off.reserve("x", t0); !first || !second {
		t.Fatal("a nil dedup finds no duplicates")
	}
}
