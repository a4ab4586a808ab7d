package source

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

type httpCase struct {
	method string
	target string
	body   string
	header map[string]string
	chunk  bool // send without a Content-Length
}

func serve(h http.Handler, c httpCase) *httptest.ResponseRecorder {
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.target == "" {
		c.target = EventsPath
	}
	var body io.Reader = strings.NewReader(c.body)
	if c.chunk {
		body = io.MultiReader(body) // hides the length
	}
	r := httptest.NewRequest(c.method, c.target, body)
	if c.chunk {
		r.ContentLength = -1
	}
	for k, v := range c.header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func decodeResp(t *testing.T, w *httptest.ResponseRecorder) eventsResponse {
	t.Helper()
	var r eventsResponse
	if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
		t.Fatalf("response %q: %v", w.Body.String(), err)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	return r
}

func newHTTPEvents(t *testing.T, edit func(*HTTPEventsOptions)) (*HTTPEvents, *fakeSink, *fakeCounter, *testkit.FakeClock) {
	t.Helper()
	sink, counter, clock := &fakeSink{}, &fakeCounter{}, newFakeClock()
	o := DefaultHTTPEventsOptions()
	o.Counter, o.Clock = counter, clock
	if edit != nil {
		edit(&o)
	}
	h, err := NewHTTPEvents(o, sink)
	if err != nil {
		t.Fatal(err)
	}
	return h, sink, counter, clock
}

const ev1 = `{"event_id":"e1","event_name":"form_error","timestamp":1718000000123,"user_id":"u1","properties":{"kiosk_id":"kiosk-3"}}`

func TestHTTPEventsAccepts(t *testing.T) {
	h, sink, _, clock := newHTTPEvents(t, func(o *HTTPEventsOptions) { o.Stream = "behaviour" })
	for _, tt := range []struct {
		name string
		c    httpCase
		n    int
	}{
		{"json", httpCase{body: ev1, header: map[string]string{"Content-Type": "application/json"}}, 1},
		{"beacon text/plain array", httpCase{
			body:   `[{"event_id":"e2","event_name":"a","user_id":"u"},{"event_id":"e3","event_name":"b","user_id":"u"}]`,
			header: map[string]string{"Content-Type": "text/plain;charset=UTF-8"}}, 2},
		{"no content type, no timestamp", httpCase{body: `{"event_name":"c","user_id":"u"}`}, 1},
		{"json with charset, chunked", httpCase{body: `{"event_name":"d","user_id":"u"}`, chunk: true,
			header: map[string]string{"Content-Type": "application/json; charset=utf-8"}}, 1},
	} {
		before := sink.Len()
		w := serve(h, tt.c)
		if w.Code != http.StatusAccepted {
			t.Fatalf("%s: status %d %s", tt.name, w.Code, w.Body)
		}
		if r := decodeResp(t, w); r.Accepted != tt.n || len(r.Rejected) != 0 {
			t.Fatalf("%s: response %+v", tt.name, r)
		}
		if sink.Len()-before != tt.n {
			t.Fatalf("%s: %d inputs", tt.name, sink.Len()-before)
		}
	}
	ins := sink.Inputs()
	in := ins[0]
	if in.Source != "http" || in.Stream != "behaviour" || in.Event == nil || in.Event.ID != "e1" ||
		!in.Time.Equal(time.UnixMilli(1718000000123)) || in.Event.Properties["kiosk_id"] != "kiosk-3" {
		t.Fatalf("input %+v %+v", in, in.Event)
	}
	if !ins[3].Time.Equal(clock.Now()) {
		t.Fatalf("event without timestamp at %v, want the server's %v", ins[3].Time, clock.Now())
	}
}

func TestHTTPEventsCORS(t *testing.T) {
	const origin = "https://kiosk.example:8443"
	h, sink, counter, _ := newHTTPEvents(t, func(o *HTTPEventsOptions) { o.AllowedOrigins = []string{origin} })
	preflight := map[string]string{"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}

	w := serve(h, httpCase{method: http.MethodOptions, header: preflight})
	if w.Code != http.StatusNoContent || w.Header().Get("Access-Control-Allow-Origin") != origin ||
		!strings.Contains(w.Header().Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "Content-Type") ||
		w.Header().Get("Access-Control-Max-Age") == "" || w.Header().Get("Vary") != "Origin" {
		t.Fatalf("preflight: %d %v", w.Code, w.Header())
	}

	preflight["Origin"] = "https://evil.example"
	w = serve(h, httpCase{method: http.MethodOptions, header: preflight})
	if w.Code != http.StatusForbidden || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight from another origin: %d %v", w.Code, w.Header())
	}

	w = serve(h, httpCase{body: ev1, header: map[string]string{"Origin": origin, "Content-Type": "text/plain;charset=UTF-8"}})
	if w.Code != http.StatusAccepted || w.Header().Get("Access-Control-Allow-Origin") != origin {
		t.Fatalf("beacon from the allowed origin: %d %v", w.Code, w.Header())
	}
	// A beacon is a simple request, not preflighted: refuse it here.
	w = serve(h, httpCase{body: `{"event_name":"x","user_id":"u"}`, header: map[string]string{"Origin": "https://evil.example", "Content-Type": "text/plain"}})
	if w.Code != http.StatusForbidden || sink.Len() != 1 || counter.Get(DropUnauthorized) != 1 {
		t.Fatalf("beacon from another origin: %d, %d inputs, drops %v", w.Code, sink.Len(), counter.n)
	}

	star, _, _, _ := newHTTPEvents(t, func(o *HTTPEventsOptions) { o.AllowedOrigins = []string{"*"} })
	w = serve(star, httpCase{body: ev1, header: map[string]string{"Origin": "https://any.example"}})
	if w.Code != http.StatusAccepted || w.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("with *: %d %v", w.Code, w.Header())
	}

	if _, err := NewHTTPEvents(HTTPEventsOptions{AllowedOrigins: []string{"kiosk.example/"}, MaxBodyBytes: 1024, Limits: DefaultEventLimits()}, &fakeSink{}); err == nil || !strings.Contains(err.Error(), "AllowedOrigins[0]") {
		t.Fatalf("bad origin accepted: %v", err)
	}
}

func TestHTTPEventsToken(t *testing.T) {
	h, _, counter, _ := newHTTPEvents(t, func(o *HTTPEventsOptions) { o.Token = "s3cret" })
	hq, _, _, _ := newHTTPEvents(t, func(o *HTTPEventsOptions) { o.Token, o.QueryToken = "s3cret", true })
	for _, tt := range []struct {
		name string
		h    http.Handler
		c    httpCase
		want int
	}{
		{"none", h, httpCase{body: ev1}, 401},
		{"wrong", h, httpCase{body: ev1, header: map[string]string{"Authorization": "Bearer s3cre"}}, 401},
		{"basic", h, httpCase{body: ev1, header: map[string]string{"Authorization": "Basic s3cret"}}, 401},
		{"right", h, httpCase{body: ev1, header: map[string]string{"Authorization": "Bearer s3cret"}}, 202},
		{"query not enabled", h, httpCase{body: ev1, target: EventsPath + "?token=s3cret"}, 401},
		{"query", hq, httpCase{body: ev1, target: EventsPath + "?token=s3cret"}, 202},
		{"query wrong", hq, httpCase{body: ev1, target: EventsPath + "?token=nope"}, 401},
		{"preflight needs no token", h, httpCase{method: http.MethodOptions}, 204},
	} {
		w := serve(tt.h, tt.c)
		if w.Code != tt.want {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, w.Code, tt.want, w.Body)
		}
		if w.Code == 401 && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tt.name)
		}
	}
	if counter.Get(DropUnauthorized) != 4 {
		t.Errorf("unauthorized drops %d, want 4", counter.Get(DropUnauthorized))
	}
}

func TestHTTPEventsRefusals(t *testing.T) {
	h, sink, _, _ := newHTTPEvents(t, func(o *HTTPEventsOptions) { o.MaxBodyBytes = 256 })
	big := `[` + strings.Repeat(`{"event_name":"x","user_id":"u"},`, 10) + `{}]`
	for _, tt := range []struct {
		name string
		c    httpCase
		want int
		msg  string
	}{
		{"too large", httpCase{body: big}, 413, "larger than 256"},
		{"too large, chunked", httpCase{body: big, chunk: true}, 413, "larger than 256"},
		{"xml", httpCase{body: ev1, header: map[string]string{"Content-Type": "application/xml"}}, 415, "Content-Type"},
		{"latin-1", httpCase{body: ev1, header: map[string]string{"Content-Type": "text/plain; charset=iso-8859-1"}}, 415, "UTF-8"},
		{"GET", httpCase{method: http.MethodGet}, 405, "method"},
		{"not JSON", httpCase{body: `{"event_name":`}, 400, "not valid JSON"},
		{"empty", httpCase{body: ``}, 400, "empty body"},
	} {
		w := serve(h, tt.c)
		if w.Code != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, w.Code, tt.want)
			continue
		}
		if r := decodeResp(t, w); r.Accepted != 0 || !strings.Contains(r.Error, tt.msg) {
			t.Errorf("%s: response %+v, want error %q", tt.name, r, tt.msg)
		}
	}
	if w := serve(h, httpCase{method: http.MethodGet}); w.Header().Get("Allow") == "" {
		t.Error("405 without Allow")
	}
	if sink.Len() != 0 {
		t.Fatalf("%d inputs", sink.Len())
	}
}

func TestHTTPEventsPartialAndDuplicates(t *testing.T) {
	h, sink, counter, _ := newHTTPEvents(t, nil)
	w := serve(h, httpCase{body: `[
		{"event_id":"a","event_name":"x","user_id":"u"},
		{"event_id":"b","event_name":"x"},
		{"event_id":"a","event_name":"x","user_id":"u"},
		{"event_id":"c","event_name":"x","user_id":"u","properties":"nope"},
		{"event_id":"d","event_name":"x","user_id":"u"}]`})
	if w.Code != http.StatusBadRequest {
		t.Fatalf("status %d", w.Code)
	}
	want := `{"accepted":2,"rejected":[{"index":1,"event_id":"b","reason":"user_id: missing"},{"index":2,"event_id":"a","reason":"duplicate event_id"},{"index":3,"event_id":"c","reason":"properties: must be an object"}]}` + "\n"
	if w.Body.String() != want {
		t.Fatalf("body\n%s\nwant\n%s", w.Body, want)
	}
	// Sent again: all duplicates now, but still answered per event.
	w = serve(h, httpCase{body: `{"event_id":"d","event_name":"x","user_id":"u"}`})
	if r := decodeResp(t, w); w.Code != 400 || r.Accepted != 0 || r.Rejected[0].Reason != "duplicate event_id" {
		t.Fatalf("resend: %d %+v", w.Code, r)
	}
	if sink.Len() != 2 || counter.Get(DropDuplicate) != 2 || counter.Get(DropMissing) != 1 || counter.Get(DropInvalid) != 1 {
		t.Fatalf("%d inputs, drops %v", sink.Len(), counter.n)
	}
}

func TestHTTPEventsFull(t *testing.T) {
	h, sink, counter, _ := newHTTPEvents(t, func(o *HTTPEventsOptions) { o.RetryAfter = 1500 * time.Millisecond })
	sink.capacity = 2
	body := `[{"event_id":"1","event_name":"x","user_id":"u"},{"event_id":"2","event_name":"x","user_id":"u"},` +
		`{"event_id":"3","event_name":"x","user_id":"u"},{"event_id":"4","event_name":"x"}]`
	w := serve(h, httpCase{body: body})
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "2" {
		t.Fatalf("status %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	r := decodeResp(t, w)
	if r.Accepted != 2 || len(r.Rejected) != 2 || r.Rejected[0].Index != 2 || !strings.Contains(r.Rejected[0].Reason, "full") ||
		r.Rejected[1].Index != 3 || !strings.Contains(r.Rejected[1].Reason, "user_id") {
		t.Fatalf("response %+v", r)
	}
	if counter.Get(DropQueueFull) != 1 {
		t.Fatalf("drops %v", counter.n)
	}
	// Room again: the retry of the whole batch accepts what was refused
	// (not a duplicate) and rejects what was accepted (a duplicate).
	sink.capacity = 0
	w = serve(h, httpCase{body: body})
	r = decodeResp(t, w)
	if w.Code != 400 || r.Accepted != 1 || len(r.Rejected) != 3 || sink.Len() != 3 {
		t.Fatalf("retry: %d %+v, %d inputs", w.Code, r, sink.Len())
	}
}

func TestHTTPEventsStreamFromField(t *testing.T) {
	h, sink, _, _ := newHTTPEvents(t, func(o *HTTPEventsOptions) { o.Stream, o.StreamFromField = "default", "kiosk_id" })
	serve(h, httpCase{body: `[` + ev1 + `,{"event_name":"x","user_id":"u"}]`})
	byName, _, _, _ := newHTTPEvents(t, func(o *HTTPEventsOptions) { o.StreamFromField = "event_name" })
	serve(byName, httpCase{body: ev1})
	ins := sink.Inputs()
	if len(ins) != 2 || ins[0].Stream != "kiosk-3" || ins[1].Stream != "default" {
		t.Fatalf("streams %+v", ins)
	}
}

func TestHTTPEventsStopped(t *testing.T) {
	h, sink, _, _ := newHTTPEvents(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	wait := runAsync(func() error { return h.Run(ctx) })
	if w := serve(h, httpCase{body: ev1}); w.Code != 202 {
		t.Fatalf("running: %d", w.Code)
	}
	cancel()
	if err := wait(t); err != nil {
		t.Fatal(err)
	}
	w := serve(h, httpCase{body: `{"event_name":"x","user_id":"u"}`})
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || sink.Len() != 1 {
		t.Fatalf("stopped: %d, %d inputs", w.Code, sink.Len())
	}
}

// TestHTTPEventsServer runs the handler behind a real server, as the
// daemon mounts it.
func TestHTTPEventsServer(t *testing.T) {
	h, sink, _, _ := newHTTPEvents(t, nil)
	mux := http.NewServeMux()
	mux.Handle(EventsPath, h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Post(srv.URL+EventsPath, "text/plain;charset=UTF-8", strings.NewReader(ev1))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 202 || string(b) != `{"accepted":1}`+"\n" || sink.Len() != 1 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}
