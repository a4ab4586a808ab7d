package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// testLogger logs to t, so that warnings show up with the failing test.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// testOptions returns options with a score lane (priority 0, batched) and an
// alert lane (priority 10, sync), a fake clock and a test logger.
func testOptions(t testing.TB, clock *fakeClock) Options {
	o := DefaultOptions()
	o.Lanes = []LaneOptions{
		{Name: "score", Priority: 0, Durability: Batched},
		{Name: "alert", Priority: 10, Durability: Sync},
	}
	o.FlushInterval = 5 * time.Millisecond
	o.Logger = testLogger(t)
	if clock != nil {
		o.Now = clock.Now
	}
	return o
}

func mustAppend(t testing.TB, b Buffer, lane string, data ...[]byte) []uint64 {
	t.Helper()
	seqs, err := b.Append(context.Background(), lane, data...)
	if err != nil {
		t.Fatalf("Append(%s, %d records): %v", lane, len(data), err)
	}
	if len(seqs) != len(data) {
		t.Fatalf("Append(%s) returned %d seqs for %d records", lane, len(seqs), len(data))
	}
	return seqs
}

func mustRead(t testing.TB, b Buffer, consumer, lane string, max int) []Record {
	t.Helper()
	recs, err := b.Read(consumer, lane, max)
	if err != nil {
		t.Fatalf("Read(%s, %s, %d): %v", consumer, lane, max, err)
	}
	return recs
}

func mustAck(t testing.TB, b Buffer, consumer, lane string, seqs ...uint64) {
	t.Helper()
	if err := b.Ack(consumer, lane, seqs...); err != nil {
		t.Fatalf("Ack(%s, %s, %v): %v", consumer, lane, seqs, err)
	}
}

func mustRegister(t testing.TB, b Buffer, consumer string, lanes ...string) {
	t.Helper()
	if err := b.RegisterConsumer(consumer, lanes...); err != nil {
		t.Fatalf("RegisterConsumer(%s, %v): %v", consumer, lanes, err)
	}
}

// payloads returns n distinct payloads named after prefix.
func payloads(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%d", prefix, i)
	}
	return out
}

func seqsOf(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func dataOf(recs []Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Data)
	}
	return out
}

// tenBytes returns n payloads of exactly 10 bytes: name (5 characters),
// a dash and a 4-digit counter starting at from.
func tenBytes(name string, from, n int) [][]byte {
	if len(name) != 5 {
		panic("tenBytes needs a 5-character name")
	}
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%04d", name, from+i)
	}
	return out
}

// laneOpsFail checks that Append, Read (by consumer), ReadFrom and Ack on
// lane all fail with want.
func laneOpsFail(t testing.TB, b Buffer, consumer, lane string, want error) {
	t.Helper()
	for _, op := range []struct {
		name string
		call func() error
	}{
		{"Append", func() error { _, err := b.Append(context.Background(), lane, []byte("x")); return err }},
		{"Read", func() error { _, err := b.Read(consumer, lane, 1); return err }},
		{"ReadFrom", func() error { _, err := b.ReadFrom(lane, 0, 1); return err }},
		{"Ack", func() error { return b.Ack(consumer, lane, 1) }},
	} {
		if err := op.call(); !errors.Is(err, want) {
			t.Errorf("%s on lane %q: %v, want %v", op.name, lane, err, want)
		}
	}
}
