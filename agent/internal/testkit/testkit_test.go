package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/clock"
)

func TestPollReportsLastError(t *testing.T) {
	n := 0
	err := Poll(20*time.Millisecond, func() error {
		n++
		return errors.New("still " + strings.Repeat("x", min(n, 3)))
	})
	if err == nil || err.Error() != "still xxx" {
		t.Fatalf("Poll: %v", err)
	}
	if err := Poll(time.Second, func() bool { n++; return n > 10 }); err != nil {
		t.Fatalf("Poll of a bool that comes true: %v", err)
	}
	if err := Poll(5*time.Millisecond, func() bool { return false }); !errors.Is(err, ErrNotYet) {
		t.Fatalf("Poll of a bool that stays false: %v", err)
	}
}

func TestFakeClock(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	c := NewFakeClock(t0)
	tm := c.NewTimer(time.Second)
	c.Advance(999 * time.Millisecond)
	select {
	case <-tm.C():
		t.Fatal("timer fired early")
	default:
	}
	if d, ok := c.AdvanceToNext(); !ok || d != time.Millisecond {
		t.Fatalf("AdvanceToNext: %v %v", d, ok)
	}
	<-tm.C()
	if c.Timers() != 0 {
		t.Fatal("fired timer still pending")
	}

	a := NewAutoClock(t0)
	if err := clock.Sleep(context.Background(), a, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := a.Now().Sub(t0); got != time.Hour {
		t.Fatalf("auto clock moved %v, want 1h", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := clock.Sleep(ctx, a, time.Hour); !errors.Is(err, context.Canceled) || a.Now().Sub(t0) != time.Hour {
		t.Fatalf("sleep with an ended context: %v, clock at %v", err, a.Now())
	}
}

// TestAdvanceUntil: a loop sleeping three hours on the fake clock, one
// at a time, goes on as AdvanceUntil moves the clock timer by timer.
func TestAdvanceUntil(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	c := NewFakeClock(t0)
	var woke atomic.Int64
	Run(t, "sleeper", func(ctx context.Context) error {
		for range 3 {
			if err := clock.Sleep(ctx, c, time.Hour); err != nil {
				return err
			}
			woke.Add(1)
		}
		return nil
	})
	c.AdvanceUntil(t, 10*time.Second, "three wake-ups", func() bool { return woke.Load() == 3 },
		func() string { return fmt.Sprintf("%d wake-ups", woke.Load()) })
	if got := c.Now().Sub(t0); got != 3*time.Hour {
		t.Errorf("clock moved %v, want 3h", got)
	}
}

func TestBuffer(t *testing.T) {
	var b Buffer
	b.Logger().Info("hello", "k", 1)
	if !strings.Contains(b.String(), "msg=hello k=1") {
		t.Fatalf("buffer: %q", b.String())
	}
}

func TestGoAndRun(t *testing.T) {
	boom := errors.New("boom")
	stop := Go(func(ctx context.Context) error { <-ctx.Done(); return boom })
	if err := stop(); err != boom {
		t.Fatalf("stop: %v", err)
	}
	if err := stop(); err != boom {
		t.Fatalf("second stop: %v", err)
	}
	ran := make(chan struct{})
	stopRun := Run(t, "runner", func(ctx context.Context) error { close(ran); <-ctx.Done(); return nil })
	<-ran
	stopRun()
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(8)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: want 8 distinct ports", ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
	if len(ports) != 8 {
		t.Fatalf("%d ports, want 8", len(ports))
	}
}
