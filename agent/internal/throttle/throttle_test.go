package throttle

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 5 * time.Minute}
	for attempt, want := range map[int]time.Duration{
		0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second,
		9: 256 * time.Second, 10: 5 * time.Minute, 1000: 5 * time.Minute,
	} {
		for range 100 {
			d := b.Delay(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %v, want within [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
	if err := (Backoff{Initial: time.Second, Max: time.Millisecond}).Validate("B"); err == nil {
		t.Error("Max < Initial accepted")
	}
	if err := (Backoff{}).Validate("B"); err == nil {
		t.Error("zero Initial accepted")
	}
}

func TestTokenBucket(t *testing.T) {
	t0 := time.Unix(0, 0)
	b := NewBucket(PerSecond(10), 2) // 10/s, burst 2
	for i := range 2 {
		if w := b.Take(t0); w != 0 {
			t.Fatalf("take %d of the burst waits %v", i, w)
		}
	}
	if w := b.Take(t0); w != 100*time.Millisecond {
		t.Fatalf("empty bucket: wait %v; want 100ms", w)
	}
	if w := b.Take(t0.Add(50 * time.Millisecond)); w != 50*time.Millisecond {
		t.Fatalf("half a token: wait %v; want 50ms", w)
	}
	if w := b.Take(t0.Add(100 * time.Millisecond)); w != 0 {
		t.Fatalf("a token later: wait %v", w)
	}
	// Idle time refills up to the burst only.
	later := t0.Add(time.Hour)
	for i := range 2 {
		if w := b.Take(later); w != 0 {
			t.Fatalf("after idling, take %d waits %v", i, w)
		}
	}
	if w := b.Take(later); w == 0 {
		t.Fatal("burst exceeded after idling")
	}
	unlimited := NewBucket(PerSecond(0), 0)
	for range 1000 {
		if unlimited.Take(t0) != 0 {
			t.Fatal("rate 0 waits")
		}
	}
}

// TestBucketWaitOnClock: Wait sleeps on the clock it is given until a
// token is due.
func TestBucketWaitOnClock(t *testing.T) {
	clk := testkit.NewAutoClock(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC))
	start := clk.Now()
	b := NewBucket(10*time.Second, 1)
	for range 3 {
		if !b.Wait(t.Context(), clk) {
			t.Fatal("Wait ended early")
		}
	}
	if got := clk.Now().Sub(start); got != 20*time.Second {
		t.Fatalf("3 tokens of a 1-burst, 10s bucket took %v; want 20s", got)
	}
}

// TestLogCountsSuppressed: within the interval a key logs once and counts
// the rest, which the next message reports; keys are independent and Reset
// makes a key loud again.
func TestLogCountsSuppressed(t *testing.T) {
	var out bytes.Buffer
	clk := testkit.NewFakeClock(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC))
	l := NewLog(slog.New(slog.NewTextHandler(&out, nil)), clk, time.Minute)
	for range 4 {
		l.Warn("full")
	}
	l.Log(slog.LevelError, "other", "failed")
	clk.Advance(time.Minute)
	l.Warn("full again")
	l.Log(slog.LevelError, "other", "failed")
	l.Reset("other")
	l.Log(slog.LevelError, "other", "failed loudly")
	got := out.String()
	for _, want := range []string{"msg=full\n", "msg=failed\n", `msg="full again" suppressed=3`, `msg="failed loudly"`} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n"); n != 5 {
		t.Errorf("%d lines logged, want 5:\n%s", n, got)
	}
}
