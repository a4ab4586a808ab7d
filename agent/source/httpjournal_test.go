package source

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// TestHTTPEventsJournalReplayDeduplicatesPerUser: after a restart, the
// events replayed from the journal are reserved under the same per-user key
// as the handler uses, so a client's retry of one is a duplicate, while
// another user's event with the same id is accepted.
func TestHTTPEventsJournalReplayDeduplicatesPerUser(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "journal")
	journalled := func(o *HTTPEventsOptions) { o.JournalDir, o.JournalRetention = dir, time.Hour }
	run := func(h *HTTPEvents) {
		ctx, cancel := context.WithCancel(context.Background())
		wait := runAsync(func() error { return h.Run(ctx) })
		t.Cleanup(func() {
			cancel()
			if err := wait(t); err != nil {
				t.Error(err)
			}
		})
		testkit.WaitFor(t, 10*time.Second, "the journal to be replayed", h.replayed.Load)
	}

	first, _, _, _ := newHTTPEvents(t, journalled)
	run(first)
	if w := serve(first, httpCase{body: ev1}); w.Code != 202 {
		t.Fatalf("first run: %d %s", w.Code, w.Body)
	}
	// A new process: the journal is opened again and its events are handed out.
	journals.Lock()
	if err := journals.m[filepath.Clean(dir)].j.Close(); err != nil {
		t.Fatal(err)
	}
	delete(journals.m, filepath.Clean(dir))
	journals.Unlock()

	second, sink, counter, _ := newHTTPEvents(t, journalled)
	run(second)
	if sink.Len() != 1 {
		t.Fatalf("%d events replayed from the journal, want 1", sink.Len())
	}
	if w := serve(second, httpCase{body: ev1}); w.Code != 400 || decodeResp(t, w).Rejected[0].Reason != "duplicate event_id" {
		t.Fatalf("retry of a journalled event: %d %s, want 400 duplicate", w.Code, w.Body)
	}
	other := `{"event_id":"e1","event_name":"form_error","timestamp":1718000000123,"user_id":"u2"}`
	if w := serve(second, httpCase{body: other}); w.Code != 202 {
		t.Fatalf("another user's event with the same id: %d %s, want 202", w.Code, w.Body)
	}
	if sink.Len() != 2 || counter.Get(DropDuplicate) != 1 {
		t.Fatalf("%d inputs, drops %v", sink.Len(), counter.n)
	}
}
