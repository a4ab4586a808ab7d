package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// The field-inputs suite feeds what users and hostile clients actually send
// through the real sources (a real mosquitto, real HTTP on loopback) into a
// daemon running in the test, and checks what the user gets.

// postEvents posts evs to the daemon's /v1/events with an optional bearer
// token and query string, and returns the status and the body.
func postEvents(t *testing.T, d *daemon, bearer, query string, evs ...map[string]any) (int, string) {
	t.Helper()
	body, _ := json.Marshal(evs)
	req, err := http.NewRequest(http.MethodPost, "http://"+d.addr+"/v1/events"+query, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// rewrite replaces old, which must be there, with new in the file at path.
func rewrite(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// event is a behaviour event for user at t.
func event(id, user string, t time.Time) map[string]any {
	return map[string]any{"event_id": id, "event_name": "page_view", "user_id": user, "timestamp": t.UTC().Format(time.RFC3339Nano)}
}

// A token in the URL is refused unless http.allow_query_token says
// otherwise; the header always works.
func TestFieldQueryTokenIsOffByDefault(t *testing.T) {
	const tok = "field-token-0123456789"
	for _, tc := range []struct {
		allow     bool
		wantQuery int
	}{{false, http.StatusUnauthorized}, {true, http.StatusAccepted}} {
		t.Run(fmt.Sprintf("allow_query_token=%v", tc.allow), func(t *testing.T) {
			cfgPath, _ := testConfig(t, 100, "")
			rewrite(t, cfgPath, `http: {listen: "127.0.0.1:0"}`, fmt.Sprintf(`http: {listen: "127.0.0.1:0", token: %q, allow_query_token: %v}`, tok, tc.allow))
			d, _ := startDaemon(t, cfgPath)
			now := time.Now()
			if code, body := postEvents(t, d, "", "?token="+tok, event("q1", "user-1", now)); code != tc.wantQuery {
				t.Errorf("token in the query: %d %s, want %d", code, body, tc.wantQuery)
			}
			if code, body := postEvents(t, d, tok, "", event("h1", "user-1", now)); code != http.StatusAccepted {
				t.Errorf("token in the header: %d %s, want 202", code, body)
			}
		})
	}
}
