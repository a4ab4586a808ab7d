package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/internal/testfs"
)

// The disk-full suite: a buffer on a small filesystem of its own (tmpfs and
// ext4 on a loop device, mounted by the test as root), with a cap larger
// than the filesystem, fills it with its own records and then another
// writer fills the rest, under each durability mode. The test process is the
// process that must survive: a SIGBUS in Badger would kill it.

// logCapture collects log lines for assertions, and passes them to t.
type logCapture struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.b.Write(p)
	c.mu.Unlock()
	c.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

func captureLogger(t testing.TB) (*slog.Logger, *logCapture) {
	c := &logCapture{t: t}
	return slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{Level: slog.LevelWarn})), c
}

func TestDiskFull(t *testing.T) {
	for _, kind := range testfs.Kinds {
		for _, mode := range []Durability{Sync, Batched} {
			t.Run(kind+"/"+mode.String(), func(t *testing.T) { testDiskFull(t, kind, mode) })
		}
	}
}

func testDiskFull(t *testing.T, kind string, mode Durability) {
	mnt := testfs.Mount(t, kind, 32<<20)
	log, logs := captureLogger(t)
	bo := DefaultBadgerOptions(filepath.Join(mnt, "buffer"))
	bo.Lanes = []LaneOptions{
		{Name: "score", Priority: 0, Durability: mode},
		{Name: "alert", Priority: 10, Durability: mode, OnFull: Reject},
	}
	bo.MaxBytes = 64 << 20 // more than the filesystem holds
	bo.MaxRecordBytes = 64 << 10
	bo.MemoryBudget = minMemoryBudget
	bo.FlushInterval = DefaultFlushInterval
	bo.Logger = log
	b := openBadger(t, bo)
	defer func() {
		if b != nil {
			closeBadger(t, b)
		}
	}()
	if !strings.Contains(logs.String(), "exceeds what the filesystem can hold") {
		t.Error("no start-up warning that the cap exceeds the filesystem")
	}
	mustRegister(t, b, "c", "score", "alert")
	ctx := context.Background()

	// Our own records fill the disk: the scores are evicted under disk
	// pressure, then alerts are rejected; nothing crashes.
	accepted := map[uint64]string{}
	score := bytes.Repeat([]byte("s"), 2000)
	var full, noSpace int
	for i := 0; full+noSpace < 50; i++ {
		if _, err := b.Append(ctx, "score", score, score, score, score); err != nil && !errors.Is(err, ErrFull) && !errors.Is(err, ErrNoSpace) {
			t.Fatalf("append score: %v", err)
		}
		a := fmt.Sprintf("alert-%06d-%s", i, strings.Repeat("a", 1000))
		seqs, err := b.Append(ctx, "alert", []byte(a))
		switch {
		case err == nil:
			accepted[seqs[0]] = a
		case errors.Is(err, ErrFull):
			full++
		case errors.Is(err, ErrNoSpace):
			noSpace++
		default:
			t.Fatalf("append alert %d: %v", i, err)
		}
		if i > 100000 {
			t.Fatal("the disk never filled")
		}
	}
	st := b.Stats()
	t.Logf("own records: %d alerts accepted, %d rejected (full), %d refused (no space); stored %d bytes, disk %d bytes, %+v",
		len(accepted), full, noSpace, st.Bytes, st.DiskBytes, st.Disk)
	if st.Lanes["score"].Evicted == 0 {
		t.Error("no score was evicted under disk pressure")
	}
	if got := st.Lanes["alert"].Rejected + st.Lanes["alert"].NoSpace; got != uint64(full+noSpace) {
		t.Errorf("alert lane counts %d rejected + %d no space, want %d refused in all", st.Lanes["alert"].Rejected, st.Lanes["alert"].NoSpace, full+noSpace)
	}

	// Another writer fills the rest, as dd would, once Badger is idle (see
	// the package documentation: a table Badger is writing at the very
	// moment another writer takes the last block can still fault).
	waitIdle(t, bo.Dir)
	filler := filepath.Join(mnt, "filler")
	n := testfs.Fill(t, filler)
	t.Logf("filler wrote %d bytes; %d free", n, testfs.Free(t, mnt))
	for range 3 {
		_, err := b.Append(ctx, "alert", []byte("refused"))
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("append on a full disk: %v, want ErrNoSpace", err)
		}
	}
	st = b.Stats()
	if !st.Disk.Full || st.Disk.LastError == "" || st.Lanes["alert"].NoSpace < 3 {
		t.Fatalf("full disk not shown in stats: %+v, alert NoSpace %d", st.Disk, st.Lanes["alert"].NoSpace)
	}
	if !strings.Contains(logs.String(), "filesystem full") {
		t.Error("the full disk was not logged")
	}
	// Reads work; acks are refused, nothing is lost.
	got := readAll(t, b, "c", "alert")
	if err := b.Ack("c", "alert", 1); !errors.Is(err, ErrNoSpace) {
		t.Errorf("ack on a full disk: %v, want ErrNoSpace", err)
	}
	checkExactlyOnce(t, got, accepted)

	// Space returns: the buffer takes changes again by itself (appends of
	// alerts may still be rejected under disk pressure until the consumer
	// has acknowledged enough for the space to be given back).
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if seqs, err := b.Append(ctx, "alert", []byte("after")); err == nil {
		accepted[seqs[0]] = "after"
	} else if !errors.Is(err, ErrFull) {
		t.Fatalf("append after space returned: %v, want success or ErrFull (disk pressure)", err)
	}
	if st := b.Stats(); st.Disk.Full {
		t.Errorf("disk still shown full after space returned: %+v", st.Disk)
	}
	got = readAll(t, b, "c", "alert")
	checkExactlyOnce(t, got, accepted)
	mustAck(t, b, "c", "alert", seqsOf(got)...)
	accepted = map[uint64]string{}
	waitFor(t, 10*time.Second, "space to be given back and alerts taken again", func() bool {
		seqs, err := b.Append(ctx, "alert", []byte("after"))
		if err == nil {
			accepted[seqs[0]] = "after"
		} else if !errors.Is(err, ErrFull) {
			t.Fatalf("append after the consumer caught up: %v", err)
		}
		return err == nil
	})
	// Everything accepted is delivered exactly once, across a restart too.
	closeBadger(t, b)
	b = openBadger(t, bo)
	got = readAll(t, b, "c", "alert")
	checkExactlyOnce(t, got, accepted)
	mustAck(t, b, "c", "alert", seqsOf(got)...)
	if rest := mustRead(t, b, "c", "alert", 10); len(rest) != 0 {
		t.Errorf("%d alerts delivered again after their ack", len(rest))
	}

	// A restart on a full disk: Close either flushes the memtable (the
	// ballast gave it room) or returns ErrNoSpace and leaves the storage
	// engine open until space returns; the open either refuses (ErrNoSpace,
	// or the directory still in use) or opens a buffer that refuses
	// appends. Never a crash; once space returns, nothing accepted is
	// missing.
	seqs, err := b.Append(ctx, "alert", []byte("before restart"))
	if err != nil {
		t.Fatal(err)
	}
	accepted = map[uint64]string{seqs[0]: "before restart"}
	testfs.Fill(t, filler)
	waitFor(t, 10*time.Second, "the disk to be seen full", func() bool {
		seqs, err := b.Append(ctx, "alert", []byte("while filling"))
		if err == nil {
			accepted[seqs[0]] = "while filling" // not full yet
		}
		return errors.Is(err, ErrNoSpace)
	})
	if err := b.Close(); err != nil && !errors.Is(err, ErrNoSpace) {
		t.Fatalf("close on a full disk: %v", err)
	} else if err != nil {
		t.Logf("close on the full disk: %v", err)
	}
	b = nil
	if nb, err := OpenBadger(bo); err != nil {
		if !errors.Is(err, ErrNoSpace) && !strings.Contains(err.Error(), "in use") {
			t.Fatalf("open on a full disk: %v, want ErrNoSpace", err)
		}
		t.Logf("open on the full disk: %v", err)
	} else {
		if _, err := nb.Append(ctx, "alert", []byte("refused")); !errors.Is(err, ErrNoSpace) {
			t.Errorf("append after a restart on the full disk: %v, want ErrNoSpace", err)
		}
		closeBadger(t, nb)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the buffer to open once space returned", func() bool {
		var err error
		b, err = OpenBadger(bo)
		return err == nil
	})
	checkExactlyOnce(t, readAll(t, b, "c", "alert"), accepted)
}

// waitIdle waits until the files of dir have kept the same names and sizes
// for a while: Badger has finished its flushes and compactions.
func waitIdle(t testing.TB, dir string) {
	t.Helper()
	var last string
	same := 0
	waitFor(t, 20*time.Second, "the storage engine to settle", func() bool {
		var sb strings.Builder
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				fmt.Fprintf(&sb, "%s %d %d\n", e.Name(), fi.Size(), allocated(fi))
			}
		}
		if sb.String() == last {
			same++
		} else {
			last, same = sb.String(), 0
		}
		return same >= 300 // 300 polls of a millisecond or more
	})
}

// readAll reads every record consumer has not acknowledged on lane, without
// acknowledging.
func readAll(t testing.TB, b Buffer, consumer, lane string) []Record {
	t.Helper()
	recs := mustRead(t, b, consumer, lane, 1<<30)
	return recs
}

// checkExactlyOnce checks that got holds every record of want (by sequence
// number and data) exactly once, and nothing else.
func checkExactlyOnce(t testing.TB, got []Record, want map[uint64]string) {
	t.Helper()
	seen := map[uint64]bool{}
	for _, r := range got {
		if seen[r.Seq] {
			t.Errorf("seq %d delivered twice", r.Seq)
		}
		seen[r.Seq] = true
		w, ok := want[r.Seq]
		if !ok {
			t.Errorf("seq %d (%.20q) was never accepted", r.Seq, r.Data)
		} else if w != string(r.Data) {
			t.Errorf("seq %d: got %.20q, want %.20q", r.Seq, r.Data, w)
		}
	}
	missing := 0
	for seq := range want {
		if !seen[seq] {
			if missing < 5 {
				t.Errorf("accepted seq %d is lost", seq)
			}
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d accepted records lost", missing, len(want))
	}
}
