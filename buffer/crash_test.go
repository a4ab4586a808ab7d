package buffer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The crash test runs the test binary again as a child (TestCrashChild)
// that appends to two Sync lanes from several goroutines and acks one of
// them out of order, printing every append and ack once it has returned:
//
//	READY
//	A <lane> <seq> <content hash>
//	K <seq>
//
// The parent kills the child with SIGKILL after a random number of lines
// (sometimes before it is even open), reopens the directory and checks that
// everything the child was told is there: every acknowledged record exactly
// once, in order, intact; no sequence number handed out twice; every
// acknowledged ack still acknowledged, and the ack floor never going back.

const (
	crashDirEnv  = "VIGIL_BUFFER_CRASH_DIR"
	crashIterEnv = "VIGIL_BUFFER_CRASH_ITER"
)

func crashOptions(dir string) BadgerOptions {
	bo := DefaultBadgerOptions(dir)
	bo.Lanes = []LaneOptions{
		{Name: "keep", Priority: 10, Durability: Sync},  // no consumer: nothing may go
		{Name: "acked", Priority: 10, Durability: Sync}, // consumer "c" acks
	}
	bo.MaxBytes = 1 << 30
	// Reclaim all the time, so that kills land in segment drops and
	// value-log GC too.
	bo.GCInterval = 20 * time.Millisecond
	return bo
}

func contentHash(d []byte) string {
	h := sha256.Sum256(d)
	return hex.EncodeToString(h[:8])
}

// TestCrashChild is the child of TestCrashRecovery; it does nothing unless
// started by it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process of TestCrashRecovery")
	}
	iter := os.Getenv(crashIterEnv)
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	time.AfterFunc(time.Minute, func() { os.Exit(3) }) // the parent is gone
	b, err := OpenBadger(crashOptions(dir))
	if err != nil {
		fail(err)
	}
	if err := b.RegisterConsumer("c", "acked"); err != nil {
		fail(err)
	}
	os.Stdout.WriteString("READY\n")
	ctx := context.Background()
	for g := range 4 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(g)))
			for n := 0; ; n++ {
				lane := []string{"keep", "acked"}[n%2]
				data := make([][]byte, 1+rng.IntN(3))
				for i := range data {
					d := fmt.Appendf(nil, "it%s-g%d-n%d-r%d:", iter, g, n, i)
					size := rng.IntN(300)
					if rng.IntN(20) == 0 {
						size = 40<<10 + rng.IntN(20<<10) // goes to the value log
					}
					for range size {
						d = append(d, byte(rng.Uint32()))
					}
					data[i] = d
				}
				seqs, err := b.Append(ctx, lane, data...)
				if err != nil {
					fail(err)
				}
				var out []byte
				for i, s := range seqs {
					out = fmt.Appendf(out, "A %s %d %s\n", lane, s, contentHash(data[i]))
				}
				os.Stdout.Write(out) // one write: lines never interleave
			}
		}()
	}
	go func() {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 99))
		for {
			wake := b.Notify("acked")
			recs, err := b.Read("c", "acked", 32)
			if err != nil {
				fail(err)
			}
			if len(recs) == 0 {
				<-wake
				continue
			}
			// A random subset, in random order: out-of-order acks.
			rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
			recs = recs[:1+rng.IntN(len(recs))]
			seqs := seqsOf(recs)
			if err := b.Ack("c", "acked", seqs...); err != nil {
				fail(err)
			}
			var out []byte
			for _, s := range seqs {
				out = fmt.Appendf(out, "K %d\n", s)
			}
			os.Stdout.Write(out)
		}
	}()
	select {}
}

// crashRun runs one child and kills it after it printed killAfter lines
// past READY (at once if killAfter < 0). It returns the lines printed.
func crashRun(t *testing.T, dir string, iter, killAfter int) (lines []string, killedBeforeReady bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashIterEnv+"="+strconv.Itoa(iter))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed, ready := false, false
	kill := func() {
		if !killed {
			killed = true
			killedBeforeReady = !ready
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Errorf("kill child: %v", err)
			}
		}
	}
	if killAfter < 0 {
		kill()
	}
	sc := bufio.NewScanner(out)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "READY" {
			ready = true
			if killAfter == 0 {
				kill()
			}
			continue
		}
		lines = append(lines, line)
		if n++; n >= killAfter {
			kill()
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended by itself: %v\n%s", err, stderr.Bytes())
	}
	if s := stderr.String(); strings.Contains(s, "crash child:") {
		t.Fatalf("child failed before it was killed:\n%s", s)
	}
	return lines, killedBeforeReady
}

func TestCrashRecovery(t *testing.T) {
	iterations := 60
	if testing.Short() {
		iterations = 10
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	appended := map[string]map[uint64]string{"keep": {}, "acked": {}} // acknowledged appends
	acked := map[uint64]bool{}                                        // acknowledged acks on "acked"
	lastSeq := map[string]uint64{}                                    // LastSeq after the previous crash
	var floor uint64
	var nAppends, nAcks, early int

	for iter := range iterations {
		lines, beforeReady := crashRun(t, dir, iter, rng.IntN(260)-20)
		if beforeReady {
			early++
		}
		for _, line := range lines {
			f := strings.Fields(line)
			switch {
			case len(f) == 4 && f[0] == "A":
				lane, hash := f[1], f[3]
				seq, _ := strconv.ParseUint(f[2], 10, 64)
				if seq <= lastSeq[lane] {
					t.Fatalf("iteration %d: %s seq %d handed out again (last seq before was %d)", iter, lane, seq, lastSeq[lane])
				}
				if prev, dup := appended[lane][seq]; dup {
					t.Fatalf("iteration %d: %s seq %d acknowledged twice (%s, %s)", iter, lane, seq, prev, hash)
				}
				appended[lane][seq] = hash
				nAppends++
			case len(f) == 2 && f[0] == "K":
				seq, _ := strconv.ParseUint(f[1], 10, 64)
				acked[seq] = true
				nAcks++
			default:
				t.Fatalf("iteration %d: unexpected line %q", iter, line)
			}
		}
		floor = verifyAfterCrash(t, iter, dir, appended, acked, lastSeq, floor)
	}
	t.Logf("%d kills (%d before the child was ready): %d appends and %d acks acknowledged, all accounted for; final ack floor %d",
		iterations, early, nAppends, nAcks, floor)
}

// verifyAfterCrash reopens the buffer and checks it against what the
// children were told. It returns the ack floor and updates lastSeq.
func verifyAfterCrash(t *testing.T, iter int, dir string, appended map[string]map[uint64]string, acked map[uint64]bool, lastSeq map[string]uint64, prevFloor uint64) uint64 {
	t.Helper()
	bo := crashOptions(dir)
	bo.Logger = testLogger(t)
	b, err := OpenBadger(bo)
	if err != nil {
		t.Fatalf("iteration %d: reopen after SIGKILL: %v", iter, err)
	}
	defer closeBadger(t, b)

	b.mu.Lock()
	c := b.st.lanes["acked"].cursors["c"]
	var cur cursor
	if c != nil {
		cur = cursor{floor: c.floor, pending: make(map[uint64]struct{}, len(c.pending))}
		for q := range c.pending {
			cur.pending[q] = struct{}{}
		}
	}
	b.mu.Unlock()
	if c == nil && len(acked) > 0 {
		t.Fatalf("iteration %d: consumer c lost", iter)
	}
	if cur.floor < prevFloor {
		t.Fatalf("iteration %d: ack floor went back from %d to %d", iter, prevFloor, cur.floor)
	}
	for seq := range acked {
		if !cur.acked(seq) {
			t.Fatalf("iteration %d: acknowledged ack of %d lost (floor %d)", iter, seq, cur.floor)
		}
	}

	st := b.Stats()
	for lane, want := range appended {
		if n := st.Lanes[lane].CorruptSkipped; n != 0 {
			t.Fatalf("iteration %d: %d corrupt records in %s after SIGKILL", iter, n, lane)
		}
		last := b.LastSeq(lane)
		present := map[uint64]string{}
		contents := map[string]uint64{}
		var prev uint64
		for from := uint64(0); ; {
			recs, err := b.ReadFrom(lane, from, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if r.Seq <= prev {
					t.Fatalf("iteration %d: %s seq %d after %d", iter, lane, r.Seq, prev)
				}
				prev = r.Seq
				if other, dup := contents[string(r.Data)]; dup {
					t.Fatalf("iteration %d: %s holds the same record as seq %d and %d", iter, lane, other, r.Seq)
				}
				contents[string(r.Data)] = r.Seq
				present[r.Seq] = contentHash(r.Data)
				if lane == "acked" && cur.acked(r.Seq) {
					t.Fatalf("iteration %d: acked record %d still served", iter, r.Seq)
				}
			}
			from = prev + 1
		}
		if prev > last {
			t.Fatalf("iteration %d: %s has seq %d above LastSeq %d", iter, lane, prev, last)
		}
		for seq, hash := range want {
			got, ok := present[seq]
			switch {
			case ok && got != hash:
				t.Fatalf("iteration %d: %s seq %d changed: content hash %s, acknowledged %s", iter, lane, seq, got, hash)
			case !ok && (lane == "keep" || !cur.acked(seq)): // an ack may be stored before Ack returns
				t.Fatalf("iteration %d: acknowledged %s record %d lost", iter, lane, seq)
			case seq > last:
				t.Fatalf("iteration %d: acknowledged %s seq %d above LastSeq %d: it could be handed out again", iter, lane, seq, last)
			}
		}
		lastSeq[lane] = last
	}
	return cur.floor
}
