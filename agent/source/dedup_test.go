package source

import (
	"net/http"
	"testing"
	"time"
)

// TestHTTPEventsDedupPerUser: event ids are per user. Alice's "1" does not
// make Bob's "1" a duplicate; Alice's "1" sent again is one.
func TestHTTPEventsDedupPerUser(t *testing.T) {
	h, sink, counter, _ := newHTTPEvents(t, nil)
	for i, tc := range []struct {
		body string
		code int
	}{
		{`{"event_id":"1","event_name":"tap","user_id":"alice"}`, http.StatusAccepted},
		{`{"event_id":"1","event_name":"tap","user_id":"bob"}`, http.StatusAccepted},
		{`{"event_id":"1","event_name":"tap","user_id":"alice"}`, http.StatusBadRequest},
		{`[{"event_id":"2","event_name":"tap","user_id":"bob"},{"event_id":"2","event_name":"tap","user_id":"carol"}]`, http.StatusAccepted},
	} {
		w := serve(h, httpCase{body: tc.body})
		if w.Code != tc.code {
			t.Fatalf("post %d: status %d, want %d: %s", i, w.Code, tc.code, w.Body)
		}
	}
	if sink.Len() != 4 || counter.Get(DropDuplicate) != 1 {
		t.Fatalf("%d inputs, drops %v; want 4 inputs and 1 duplicate", sink.Len(), counter.n)
	}
}

// TestDedupKeyPerUser: the key MQTT and HTTP events share is per user, and
// no user id and event id can spell another pair's key.
func TestDedupKeyPerUser(t *testing.T) {
	d := newDedup(10, time.Minute)
	now := time.Unix(1e9, 0)
	for _, ev := range []Event{
		{ID: "1", UserID: "alice"},
		{ID: "1", UserID: "bob"},
		{ID: "c", UserID: "a\x00b"},
		{ID: "b\x00c", UserID: "a"},
		{ID: "1:a", UserID: ""},
		{ID: "a", UserID: "1:"},
	} {
		if !d.reserve(dedupKey(&ev), now) {
			t.Errorf("event %q of user %q taken for a duplicate", ev.ID, ev.UserID)
		}
	}
	if d.reserve(dedupKey(&Event{ID: "1", UserID: "alice"}), now) {
		t.Fatal("alice's id again not taken for a duplicate")
	}
}
