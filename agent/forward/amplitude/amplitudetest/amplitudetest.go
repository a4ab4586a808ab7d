// Package amplitudetest is a local double of Amplitude's ingestion APIs
// (HTTP V2 POST /2/httpapi and Batch POST /batch) that follows
// ../shared/contracts/amplitude.md strictly, records every request and the
// deduplicated events it ingested, and injects failures on demand.
//
// What it checks, as Amplitude does: POST, Content-Type application/json,
// the API key, a body below 1 MB (20 MB for Batch) and fewer than 2000
// events (else 413), event_type, a user_id or device_id left after
// stripping ids shorter than min_id_length and placeholder ids, time as an
// integer of milliseconds, object properties with string values of at most
// 1024 characters. It deduplicates insert_id for 7 days (per device for
// HTTP V2, globally for Batch), answers 200 with events_ingested, and can
// throttle devices and users above the documented rates (429).
package amplitudetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// Paths of the two APIs.
const (
	PathHTTP  = "/2/httpapi"
	PathBatch = "/batch"
)

// Contract figures.
const (
	httpMaxBody  = 1_000_000  // a body of 1 MB or more is refused (413)
	batchMaxBody = 20_000_000 // Batch: 20 MB
	maxEvents    = 2000       // 2000 events or more are refused (413)
	maxString    = 1024       // characters per string property value
	dedupWindow  = 7 * 24 * time.Hour
	minMillis    = 100_000_000_000 // a time below this is seconds, not ms (before 1973)
)

// placeholders are the ids the contract says Amplitude rejects.
var placeholders = map[string]bool{
	"null": true, "none": true, "undefined": true, "0": true, "-1": true,
	"unknown": true, "n/a": true, "00000000-0000-0000-0000-000000000000": true,
}

// Options configures a Server.
type Options struct {
	// APIKey is the one key the server accepts. Required.
	APIKey string
	// Throttle makes the server answer 429 for devices and users above
	// EPSThreshold events per second averaged over 10 s (HTTP V2), or above
	// 1000 events per second averaged over 30 s (Batch).
	Throttle bool
	// EPSThreshold is the HTTP V2 throttle rate; 0 means 30.
	EPSThreshold int
	// DailyQuota, when positive, is the most events per device or user per
	// UTC day; more are refused with 429 exceeded_daily_quota_*.
	DailyQuota int
	// Now is the server's clock; nil means time.Now.
	Now func() time.Time
	// AfterIngest, if set, is called after a request's events were
	// ingested and before the answer is written (a test can kill the
	// client there).
	AfterIngest func(Request)
}

// Fault is an answer forced on one request instead of the normal one.
type Fault struct {
	// Status is the HTTP status to answer, with the body the contract
	// documents for it (built from the fields below), or Body if set.
	Status int
	Body   string
	// RetryAfter, if set, is sent as the Retry-After header.
	RetryAfter string
	// For a 400: the error text, a missing top-level field, and the
	// listed events.
	Error           string
	MissingField    string
	InvalidFields   map[string][]int
	MissingFields   map[string][]int
	SilencedDevices []string
	SilencedEvents  []int
	// For a 429: the throttled ids and events, and those over their daily
	// quota. A 429 naming nobody names every device of the request.
	ThrottledDevices map[string]float64
	ThrottledUsers   map[string]float64
	ThrottledEvents  []int
	QuotaDevices     map[string]float64
	QuotaUsers       map[string]float64
	// Hang answers nothing until the client gives up (or the server closes).
	Hang bool
	// Reset closes the connection without an answer.
	Reset bool
	// Apply validates and ingests the request normally, then answers
	// Status (default 500): applied but failed, as a 5xx may be.
	Apply bool
}

// Request is one request the server received.
type Request struct {
	// N counts requests from 1.
	N int
	// At is when it arrived, by Options.Now.
	At     time.Time
	Path   string
	Header http.Header
	Body   []byte
	// InsertIDs are the insert_ids of the request's events, in order.
	InsertIDs []string
	// Status is the status answered; 0 for a hang or a reset.
	Status int
	// Fault is true when a Fault decided the answer.
	Fault bool
}

// Event is one event the server ingested.
type Event struct {
	Path            string
	EventType       string
	DeviceID        string
	UserID          string
	InsertID        string
	Time            int64
	EventProperties map[string]any
	Raw             json.RawMessage
}

// Server is a running double. Its methods are safe for concurrent use.
type Server struct {
	// FaultServer holds URL, the base URL (e.g. http://127.0.0.1:port;
	// post to URL+PathHTTP or URL+PathBatch), the requests and the script
	// of faults.
	testkit.FaultServer[Request, Fault]

	opts Options

	mu     sync.Mutex
	events []Event
	seen   map[string]time.Time // dedup key (global and per device) → ingest time
	swept  time.Time            // when seen was last swept of expired keys
	dups   int
	recent map[string][]time.Time // "d:"/"u:" id → ingest times (throttle)
	daily  map[string]int         // day + id → events
}

// NewServer starts a double on a loopback port.
func NewServer(opts Options) *Server {
	if opts.EPSThreshold <= 0 {
		opts.EPSThreshold = 30
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, seen: map[string]time.Time{}, recent: map[string][]time.Time{}, daily: map[string]int{}}
	s.Start(s)
	return s
}

// HTTPURL is the URL of the HTTP V2 API.
func (s *Server) HTTPURL() string { return s.URL + PathHTTP }

// BatchURL is the URL of the Batch API.
func (s *Server) BatchURL() string { return s.URL + PathBatch }

// Events returns the ingested events, without the duplicates dropped by
// insert_id.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// InsertIDs counts the ingested events by insert_id.
func (s *Server) InsertIDs() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]int{}
	for _, e := range s.events {
		m[e.InsertID]++
	}
	return m
}

// Duplicates is the number of events dropped as repeats of an insert_id.
func (s *Server) Duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dups
}

// ServeHTTP answers one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	limit := httpMaxBody
	if r.URL.Path == PathBatch {
		limit = batchMaxBody
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	n, fault := s.Receive(func(n int) Request {
		return Request{N: n, At: s.opts.Now(), Path: r.URL.Path, Header: r.Header.Clone(), Body: body, InsertIDs: insertIDs(body)}
	}, true, func(req *Request, faulted bool) { req.Fault = faulted })
	status := s.serve(w, r, n, body, fault)
	s.Answered(n, func(req *Request) { req.Status = status })
}

// serve answers and returns the status, 0 when it answered nothing.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, n int, body []byte, fault *Fault) int {
	if fault != nil {
		switch {
		case fault.Reset:
			testkit.ResetConn(w)
			return 0
		case fault.Hang:
			s.Hang(r)
			return 0
		case !fault.Apply:
			return s.answerFault(w, fault, body)
		}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return testkit.ReplyJSON(w, http.StatusMethodNotAllowed, map[string]any{"code": 405, "error": "Method not allowed"})
	}
	if r.URL.Path != PathHTTP && r.URL.Path != PathBatch {
		return testkit.ReplyJSON(w, http.StatusNotFound, map[string]any{"code": 404, "error": "Not found"})
	}
	status, answer, accepted := s.check(r, body)
	if status != http.StatusOK {
		return testkit.ReplyJSON(w, status, answer)
	}
	if st, ans := s.ingest(r.URL.Path, accepted); st != http.StatusOK {
		return testkit.ReplyJSON(w, st, ans)
	}
	if s.opts.AfterIngest != nil {
		s.opts.AfterIngest(s.Request(n))
	}
	if fault != nil {
		st := fault.Status
		if st == 0 {
			st = http.StatusInternalServerError
		}
		return s.answerFault(w, &Fault{Status: st, Body: fault.Body, RetryAfter: fault.RetryAfter}, body)
	}
	return testkit.ReplyJSON(w, http.StatusOK, map[string]any{
		"code": 200, "events_ingested": len(accepted), "payload_size_bytes": len(body),
		"server_upload_time": s.opts.Now().UnixMilli(),
	})
}

// answerFault writes the documented answer for a forced status.
func (s *Server) answerFault(w http.ResponseWriter, f *Fault, body []byte) int {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.Body != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		io.WriteString(w, f.Body)
		return f.Status
	}
	switch f.Status {
	case http.StatusBadRequest:
		m := map[string]any{"code": 400, "error": f.Error}
		if f.Error == "" {
			m["error"] = "Request contains invalid fields"
		}
		if f.MissingField != "" {
			m["missing_field"] = f.MissingField
		}
		if f.InvalidFields != nil {
			m["events_with_invalid_fields"] = f.InvalidFields
		}
		if f.MissingFields != nil {
			m["events_with_missing_fields"] = f.MissingFields
		}
		if f.SilencedEvents != nil {
			m["silenced_events"] = f.SilencedEvents
			m["silenced_devices"] = f.SilencedDevices
		}
		return testkit.ReplyJSON(w, 400, m)
	case http.StatusRequestEntityTooLarge:
		return testkit.ReplyJSON(w, 413, map[string]any{"code": 413, "error": "Payload too large"})
	case http.StatusTooManyRequests:
		td, tu, te := f.ThrottledDevices, f.ThrottledUsers, f.ThrottledEvents
		if td == nil && tu == nil && te == nil && f.QuotaDevices == nil && f.QuotaUsers == nil {
			td = map[string]float64{}
			var req struct {
				Events []struct {
					DeviceID string `json:"device_id"`
				} `json:"events"`
			}
			json.Unmarshal(body, &req)
			for i, e := range req.Events {
				if e.DeviceID != "" {
					td[e.DeviceID] = float64(s.opts.EPSThreshold + 1)
					te = append(te, i)
				}
			}
		}
		m := map[string]any{"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": s.opts.EPSThreshold}
		for k, v := range map[string]any{"throttled_devices": td, "throttled_users": tu, "throttled_events": te,
			"exceeded_daily_quota_devices": f.QuotaDevices, "exceeded_daily_quota_users": f.QuotaUsers} {
			m[k] = v
		}
		return testkit.ReplyJSON(w, 429, m)
	}
	// 5xx and anything else: no documented body.
	w.WriteHeader(f.Status)
	return f.Status
}

// wireRequest is a request body; pointers tell absent from empty.
type wireRequest struct {
	APIKey  *string           `json:"api_key"`
	Events  []json.RawMessage `json:"events"`
	Options *struct {
		MinIDLength *json.Number `json:"min_id_length"`
	} `json:"options"`
}

// check validates a request as the contract says and returns 200 with the
// accepted events (their invalid ids stripped, as Amplitude strips them),
// or the status and body of the refusal.
func (s *Server) check(r *http.Request, body []byte) (int, any, []Event) {
	limit := httpMaxBody
	if r.URL.Path == PathBatch {
		limit = batchMaxBody
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return 400, map[string]any{"code": 400, "error": "Content-Type must be application/json"}, nil
	}
	if len(body) >= limit {
		return 413, map[string]any{"code": 413, "error": "Payload too large"}, nil
	}
	var req wireRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return 400, map[string]any{"code": 400, "error": "Invalid JSON request body: " + err.Error()}, nil
	}
	if req.APIKey == nil || *req.APIKey == "" {
		return 400, map[string]any{"code": 400, "error": "Request missing required field", "missing_field": "api_key"}, nil
	}
	if *req.APIKey != s.opts.APIKey {
		// Amplitude echoes the key it refused; clients must not log it.
		return 400, map[string]any{"code": 400, "error": "Invalid API key: " + *req.APIKey}, nil
	}
	if req.Events == nil {
		return 400, map[string]any{"code": 400, "error": "Request missing required field", "missing_field": "events"}, nil
	}
	if len(req.Events) >= maxEvents {
		return 413, map[string]any{"code": 413, "error": "Payload too large"}, nil
	}
	minLen := 5
	if req.Options != nil && req.Options.MinIDLength != nil {
		n, err := req.Options.MinIDLength.Int64()
		if err != nil || n < 1 {
			return 400, map[string]any{"code": 400, "error": "Invalid options.min_id_length"}, nil
		}
		minLen = int(n)
	}
	invalid, missing := map[string][]int{}, map[string][]int{}
	var out []Event
	for i, raw := range req.Events {
		ev, bad, miss := validateEvent(raw, minLen)
		for _, f := range bad {
			invalid[f] = append(invalid[f], i)
		}
		for _, f := range miss {
			missing[f] = append(missing[f], i)
		}
		if len(bad) == 0 && len(miss) == 0 {
			ev.Path = r.URL.Path
			out = append(out, ev)
		}
	}
	if len(invalid) > 0 || len(missing) > 0 {
		m := map[string]any{"code": 400, "error": "Request contains invalid or missing fields"}
		if len(invalid) > 0 {
			m["events_with_invalid_fields"] = invalid
		}
		if len(missing) > 0 {
			m["events_with_missing_fields"] = missing
		}
		return 400, m, nil
	}
	return 200, nil, out
}

// validateEvent checks one event and returns it with invalid ids stripped,
// and the fields that are invalid or missing.
func validateEvent(raw json.RawMessage, minLen int) (ev Event, invalid, missing []string) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || m == nil {
		return ev, []string{"event"}, nil
	}
	ev.Raw = append(json.RawMessage(nil), raw...)
	if t, ok := m["event_type"].(string); ok && t != "" {
		ev.EventType = t
	} else {
		missing = append(missing, "event_type")
	}
	stripped := ""
	for _, f := range []string{"user_id", "device_id"} {
		v, ok := m[f]
		if !ok || v == nil {
			continue
		}
		id, isStr := v.(string)
		if !isStr || utf8.RuneCountInString(id) < minLen || placeholders[strings.ToLower(strings.TrimSpace(id))] {
			if stripped == "" {
				stripped = f
			}
			continue
		}
		if f == "user_id" {
			ev.UserID = id
		} else {
			ev.DeviceID = id
		}
	}
	if ev.UserID == "" && ev.DeviceID == "" {
		if stripped != "" {
			invalid = append(invalid, stripped)
		} else {
			missing = append(missing, "device_id")
		}
	}
	if v, ok := m["time"]; ok {
		num, isNum := v.(json.Number)
		ms, err := strconv.ParseInt(string(num), 10, 64)
		if !isNum || err != nil || ms < minMillis {
			invalid = append(invalid, "time")
		} else {
			ev.Time = ms
		}
	}
	if v, ok := m["insert_id"]; ok {
		if id, isStr := v.(string); isStr {
			ev.InsertID = id
		} else {
			invalid = append(invalid, "insert_id")
		}
	}
	for _, f := range []string{"event_properties", "user_properties"} {
		v, ok := m[f]
		if !ok || v == nil {
			continue
		}
		obj, isObj := v.(map[string]any)
		if !isObj || !stringsFit(obj) {
			invalid = append(invalid, f)
			continue
		}
		if f == "event_properties" {
			ev.EventProperties = obj
		}
	}
	return ev, invalid, missing
}

// stringsFit reports whether every string in v has at most 1024
// characters.
func stringsFit(v any) bool {
	switch x := v.(type) {
	case string:
		return utf8.RuneCountInString(x) <= maxString
	case map[string]any:
		for _, e := range x {
			if !stringsFit(e) {
				return false
			}
		}
	case []any:
		for _, e := range x {
			if !stringsFit(e) {
				return false
			}
		}
	}
	return true
}

// ingest throttles, deduplicates and stores accepted events. It returns
// 200, or 429 with its body when a device or user is over its rate or
// quota (then nothing is ingested).
func (s *Server) ingest(path string, evs []Event) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if now.Sub(s.swept) > time.Hour {
		s.swept = now
		for k, t := range s.seen {
			if now.Sub(t) > dedupWindow {
				delete(s.seen, k)
			}
		}
	}
	ids := func(e Event) []string {
		var out []string
		if e.DeviceID != "" {
			out = append(out, "d:"+e.DeviceID)
		}
		if e.UserID != "" {
			out = append(out, "u:"+e.UserID)
		}
		return out
	}
	if st, body := s.limit(path, evs, ids, now); st != 0 {
		return st, body
	}
	day := now.UTC().Format("2006-01-02") + "/"
	for _, a := range evs {
		for _, id := range ids(a) {
			if s.opts.Throttle {
				s.recent[id] = append(s.recent[id], now)
			}
			if s.opts.DailyQuota > 0 {
				s.daily[day+id]++
			}
		}
		if a.InsertID != "" {
			// Both keys are kept for every event; HTTP V2 checks the one per
			// device (or user), Batch the global one.
			who := "d:" + a.DeviceID
			if a.DeviceID == "" {
				who = "u:" + a.UserID
			}
			global, local := "g\x00"+a.InsertID, who+"\x00"+a.InsertID
			key := local
			if path == PathBatch {
				key = global
			}
			if t, dup := s.seen[key]; dup && now.Sub(t) <= dedupWindow {
				s.dups++
				continue
			}
			s.seen[global], s.seen[local] = now, now
		}
		s.events = append(s.events, a)
	}
	return http.StatusOK, nil
}

// limit returns 429 and its body when a device or user of evs is over its
// rate (with Throttle) or daily quota, else 0.
func (s *Server) limit(path string, evs []Event, ids func(Event) []string, now time.Time) (int, any) {
	window, eps := 10*time.Second, float64(s.opts.EPSThreshold)
	if path == PathBatch {
		window, eps = 30*time.Second, 1000
	}
	allowed := int(eps * window.Seconds())
	count := map[string]int{}
	for _, a := range evs {
		for _, id := range ids(a) {
			count[id]++
		}
	}
	day := now.UTC().Format("2006-01-02") + "/"
	thrDev, thrUser, quotaDev, quotaUser := map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
	over := map[string]bool{}
	for id, n := range count {
		if s.opts.Throttle {
			kept := s.recent[id][:0]
			for _, t := range s.recent[id] {
				if now.Sub(t) < window {
					kept = append(kept, t)
				}
			}
			s.recent[id] = kept
			if len(kept)+n > allowed {
				rate := float64(len(kept)+n) / window.Seconds()
				over[id] = true
				if strings.HasPrefix(id, "d:") {
					thrDev[id[2:]] = rate
				} else {
					thrUser[id[2:]] = rate
				}
			}
		}
		if q := s.opts.DailyQuota; q > 0 && s.daily[day+id]+n > q {
			over[id] = true
			if strings.HasPrefix(id, "d:") {
				quotaDev[id[2:]] = float64(s.daily[day+id])
			} else {
				quotaUser[id[2:]] = float64(s.daily[day+id])
			}
		}
	}
	if len(over) == 0 {
		return 0, nil
	}
	var events []int
	for i, a := range evs {
		for _, id := range ids(a) {
			if over[id] {
				events = append(events, i)
				break
			}
		}
	}
	return http.StatusTooManyRequests, map[string]any{
		"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": eps,
		"throttled_devices": thrDev, "throttled_users": thrUser, "throttled_events": events,
		"exceeded_daily_quota_devices": quotaDev, "exceeded_daily_quota_users": quotaUser,
	}
}

// insertIDs lists the insert_ids of a body's events, for Request.
func insertIDs(body []byte) []string {
	var req struct {
		Events []struct {
			InsertID string `json:"insert_id"`
		} `json:"events"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil
	}
	out := make([]string, len(req.Events))
	for i, e := range req.Events {
		out[i] = e.InsertID
	}
	return out
}

// String describes the server, for test failure messages.
func (s *Server) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("amplitudetest %s: %d requests, %d events, %d duplicates", s.URL, len(s.Requests()), len(s.events), s.dups)
}
