package buffer

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestBadgerSync: Sync fsyncs the records of a Batched lane at once (the
// flush interval is an hour here) and says how many per lane; records
// already fsynced are not counted again.
func TestBadgerSync(t *testing.T) {
	opts := testOptions(t, nil)
	opts.FlushInterval = time.Hour
	bo := DefaultBadgerOptions(t.TempDir())
	bo.Options = opts
	b, err := OpenBadger(bo)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mustAppend(t, b, "alert", payloads("a", 2)...) // fsynced by its Append
	mustAppend(t, b, "score", payloads("s", 5)...)
	mustAppend(t, b, "score", payloads("t", 2)...)
	if !b.dirty.Load() {
		t.Fatal("the batched records are not waiting for an fsync")
	}
	rounds := b.syncer.rounds.Load()
	res, err := b.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Disk {
		t.Error("Disk = false for Badger")
	}
	if got := b.syncer.rounds.Load(); got != rounds+1 {
		t.Errorf("fsync rounds: %d -> %d, want one more", rounds, got)
	}
	if got := res.Lanes["score"]; got != (LaneSync{Synced: 7, Durable: 7, Records: 7}) {
		t.Errorf("score: %+v, want 7 synced, durable to 7, 7 held", got)
	}
	if got := res.Lanes["alert"]; got != (LaneSync{Synced: 0, Durable: 2, Records: 2}) {
		t.Errorf("alert: %+v, want 0 synced (its Append did), durable to 2, 2 held", got)
	}
	res, err = b.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Lanes["score"]; got.Synced != 0 || got.Durable != 7 {
		t.Errorf("second Sync, score: %+v, want nothing synced, durable to 7", got)
	}
	b.Close()
	if _, err := b.Sync(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close: %v, want ErrClosed", err)
	}
	// What the Syncs made durable is there after a reopen.
	b2, err := OpenBadger(bo)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if got := b2.LastSeq("score"); got != 7 {
		t.Errorf("after reopen: score LastSeq %d, want 7", got)
	}
}

func TestMemorySync(t *testing.T) {
	m, err := NewMemory(testOptions(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, m, "score", payloads("s", 3)...)
	res, err := m.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Disk || res.Lanes["score"] != (LaneSync{Records: 3}) || res.Lanes["alert"] != (LaneSync{}) {
		t.Errorf("Memory.Sync = %+v, want no disk, 3 score records held, nothing synced", res)
	}
	m.Close()
	if _, err := m.Sync(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close: %v, want ErrClosed", err)
	}
}
