package amplitudetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

const key = "test-key-123"

func post(t *testing.T, url, contentType, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func ev(fields string) string {
	return `{"event_type":"x","device_id":"device-1","insert_id":"i-1","time":1740830400000` + fields + `}`
}

func body(events ...string) string {
	return `{"api_key":"` + key + `","events":[` + strings.Join(events, ",") + `]}`
}

// TestContract: the double refuses what the contract says Amplitude
// refuses, with the documented answers.
func TestContract(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body string
		status         int
		want           string // a fragment of the answer, as JSON
	}{
		{"ok", "application/json", body(ev("")), 200, `"events_ingested":1`},
		{"charset ok", "application/json; charset=utf-8", body(ev("")), 200, `"code":200`},
		{"content type", "text/plain", body(ev("")), 400, `Content-Type`},
		{"bad json", "application/json", `{"api_key":`, 400, `Invalid JSON`},
		{"no key", "application/json", `{"events":[]}`, 400, `"missing_field":"api_key"`},
		{"wrong key", "application/json", `{"api_key":"nope","events":[]}`, 400, `Invalid API key: nope`},
		{"no events", "application/json", `{"api_key":"` + key + `"}`, 400, `"missing_field":"events"`},
		{"2000 events", "application/json", body(strings.Split(strings.Repeat(ev("")+"|", 2000), "|")[:2000]...), 413, `Payload too large`},
		{"1 MB", "application/json", body(ev(`,"event_properties":{"p":"`+strings.Repeat("x", 1000)+`"}`) + strings.Repeat(" ", 1_000_000)), 413, `Payload too large`},
		{"no event_type", "application/json", body(`{"device_id":"device-1"}`, ev("")), 400, `"events_with_missing_fields":{"event_type":[0]}`},
		{"no id", "application/json", body(ev(""), `{"event_type":"x"}`), 400, `"events_with_missing_fields":{"device_id":[1]}`},
		{"short id", "application/json", body(`{"event_type":"x","device_id":"abcd"}`), 400, `"events_with_invalid_fields":{"device_id":[0]}`},
		{"placeholder id", "application/json", body(`{"event_type":"x","user_id":"Undefined"}`), 400, `"events_with_invalid_fields":{"user_id":[0]}`},
		{"zero uuid", "application/json", body(`{"event_type":"x","device_id":"00000000-0000-0000-0000-000000000000"}`), 400, `invalid_fields`},
		{"short id, valid other", "application/json", body(`{"event_type":"x","user_id":"ab","device_id":"device-1"}`), 200, `"code":200`},
		{"min_id_length", "application/json", `{"api_key":"` + key + `","events":[{"event_type":"x","device_id":"abc"}],"options":{"min_id_length":3}}`, 200, `"code":200`},
		{"time string", "application/json", body(`{"event_type":"x","device_id":"device-1","time":"2025-03-01"}`), 400, `{"time":[0]}`},
		{"time float", "application/json", body(`{"event_type":"x","device_id":"device-1","time":1740830400000.5}`), 400, `{"time":[0]}`},
		{"time seconds", "application/json", body(`{"event_type":"x","device_id":"device-1","time":1740830400}`), 400, `{"time":[0]}`},
		{"long string", "application/json", body(ev(`,"event_properties":{"a":{"b":["` + strings.Repeat("é", 1025) + `"]}}`)), 400, `{"event_properties":[0]}`},
		{"1024 characters", "application/json", body(ev(`,"event_properties":{"a":"` + strings.Repeat("é", 1024) + `"}`)), 200, `"code":200`},
		{"properties not an object", "application/json", body(ev(`,"user_properties":[1]`)), 400, `{"user_properties":[0]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewServer(Options{APIKey: key})
			defer s.Close()
			status, m := post(t, s.HTTPURL(), tc.ct, tc.body)
			got, _ := json.Marshal(m)
			if status != tc.status || !strings.Contains(string(got), tc.want) {
				t.Errorf("%d %s, want %d with %s", status, got, tc.status, tc.want)
			}
			if status != 200 && len(s.Events()) != 0 {
				t.Error("a refused request ingested events")
			}
		})
	}
}

func TestDedup(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	s := NewServer(Options{APIKey: key, Now: func() time.Time { return now }})
	defer s.Close()
	e := func(dev string) string {
		return `{"event_type":"x","device_id":"` + dev + `","insert_id":"same"}`
	}
	post(t, s.HTTPURL(), "application/json", body(e("device-1"), e("device-1"), e("device-2")))
	if n := len(s.Events()); n != 2 || s.Duplicates() != 1 {
		t.Errorf("HTTP V2: %d events, %d duplicates; want per-device dedup", n, s.Duplicates())
	}
	post(t, s.BatchURL(), "application/json", body(e("device-3")))
	if n := len(s.Events()); n != 2 {
		t.Errorf("Batch: %d events; want global dedup", n)
	}
	now = now.Add(8 * 24 * time.Hour)
	post(t, s.HTTPURL(), "application/json", body(e("device-1")))
	if n := len(s.Events()); n != 3 {
		t.Errorf("after 7 days: %d events, want the id accepted again", n)
	}
}

func TestThrottle(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	s := NewServer(Options{APIKey: key, Throttle: true, DailyQuota: 500, Now: func() time.Time { return now }})
	defer s.Close()
	var evs []string
	for i := range 250 {
		evs = append(evs, fmt.Sprintf(`{"event_type":"x","device_id":"device-1","user_id":"user-%d","insert_id":"i-%d"}`, i%2, i))
	}
	if st, _ := post(t, s.HTTPURL(), "application/json", body(evs...)); st != 200 {
		t.Fatalf("250 events in 10 s: %d", st)
	}
	st, m := post(t, s.HTTPURL(), "application/json", body(evs[:100]...))
	if st != 429 || m["throttled_devices"].(map[string]any)["device-1"] == nil || len(m["throttled_events"].([]any)) != 100 || m["eps_threshold"] != 30.0 {
		t.Errorf("over 30/s: %d %v", st, m)
	}
	now = now.Add(11 * time.Second)
	if st, _ := post(t, s.HTTPURL(), "application/json", body(evs[:200]...)); st != 200 {
		t.Errorf("after the window: %d", st)
	}
	now = now.Add(11 * time.Second)
	st, m = post(t, s.HTTPURL(), "application/json", body(evs[:100]...))
	if st != 429 || m["exceeded_daily_quota_devices"].(map[string]any)["device-1"] == nil {
		t.Errorf("over the daily quota: %d %v", st, m)
	}
}

func TestFaults(t *testing.T) {
	s := NewServer(Options{APIKey: key})
	defer s.Close()
	s.Script(
		Fault{Status: 400, InvalidFields: map[string][]int{"time": {1}}},
		Fault{Status: 503, RetryAfter: "9"},
		Fault{Status: 429, ThrottledUsers: map[string]float64{"u-1": 40}},
		Fault{Apply: true, Status: 502},
		Fault{Reset: true},
	)
	b := body(ev(""))
	if st, m := post(t, s.HTTPURL(), "application/json", b); st != 400 || m["events_with_invalid_fields"] == nil {
		t.Errorf("scripted 400: %d %v", st, m)
	}
	resp, _ := http.Post(s.HTTPURL(), "application/json", strings.NewReader(b))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "9" {
		t.Errorf("scripted 503: %d %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	resp.Body.Close()
	if st, m := post(t, s.HTTPURL(), "application/json", b); st != 429 || m["throttled_users"] == nil {
		t.Errorf("scripted 429: %d %v", st, m)
	}
	if st, _ := post(t, s.HTTPURL(), "application/json", b); st != 502 || len(s.Events()) != 1 {
		t.Errorf("applied but failed: %d, %d events", st, len(s.Events()))
	}
	if _, err := http.Post(s.HTTPURL(), "application/json", strings.NewReader(b)); err == nil {
		t.Error("reset: no error")
	}
	reqs := s.Requests()
	if len(reqs) != 5 || reqs[4].Status != 0 || !reqs[0].Fault {
		t.Errorf("requests %+v", reqs)
	}
}
