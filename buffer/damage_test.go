package buffer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The damage suite, after Prometheus' WAL repair tests: a buffer holds
// alerts in every kind of file Badger writes (a table from before a
// restart, the memtable log since, the value log for large alerts), plus
// its own watermark file, and is "killed": the directory is copied while
// the buffer is open, as a SIGKILL would leave it. Each case damages one
// file of one kind (truncated at several offsets, bytes flipped, head
// zeroed, deleted) and opens the copy. It asserts that the open neither
// panics nor fails, that every alert stored outside the damaged file is
// delivered exactly once through the consumer API, that every lost alert
// is counted (CorruptSkipped) and reported (Stats.Damage or the log), and
// that the buffer takes new alerts above every number it handed out.

const damageBig = 24 << 10 // above the value threshold: goes to the value log

// damageFixture is the directory of a killed buffer and where each alert
// lives.
type damageFixture struct {
	dir      string
	opts     BadgerOptions
	alerts   map[uint64]string // seq -> data
	inTable  map[uint64]bool   // stored inline in a table (before the restart)
	inLog    map[uint64]bool   // stored inline in the memtable log (after it)
	inVlog   map[uint64]bool   // value in the value log
	maxSeq   uint64
	fileKind map[string][]string // kind -> files
}

func damageOptions(t testing.TB, dir string) BadgerOptions {
	bo := DefaultBadgerOptions(dir)
	bo.Lanes = []LaneOptions{
		{Name: "score", Priority: 0, Durability: Batched},
		{Name: "alert", Priority: 10, Durability: Sync},
	}
	bo.MaxBytes = 64 << 20
	bo.MaxRecordBytes = 64 << 10
	bo.MemoryBudget = minMemoryBudget
	bo.GCInterval = 1 << 40 // no value-log GC moving things around
	bo.Logger = testLogger(t)
	return bo
}

func alertData(i int) string {
	if i%6 == 0 {
		return fmt.Sprintf("alert-%03d-%s", i, strings.Repeat("B", damageBig))
	}
	return fmt.Sprintf("alert-%03d", i)
}

func newDamageFixture(t *testing.T) *damageFixture {
	t.Helper()
	src := filepath.Join(t.TempDir(), "buffer")
	bo := damageOptions(t, src)
	f := &damageFixture{opts: bo, alerts: map[uint64]string{}, inTable: map[uint64]bool{},
		inLog: map[uint64]bool{}, inVlog: map[uint64]bool{}, fileKind: map[string][]string{}}
	ctx := context.Background()
	appendAlerts := func(b *Badger, from, to int, inline map[uint64]bool) {
		for i := from; i <= to; i++ {
			d := alertData(i)
			seqs, err := b.Append(ctx, "alert", []byte(d))
			if err != nil {
				t.Fatal(err)
			}
			f.alerts[seqs[0]] = d
			if len(d) >= damageBig {
				f.inVlog[seqs[0]] = true
			} else {
				inline[seqs[0]] = true
			}
			f.maxSeq = max(f.maxSeq, seqs[0])
		}
	}
	b := openBadger(t, bo)
	mustRegister(t, b, "c", "alert")
	appendAlerts(b, 1, 60, f.inTable)
	closeBadger(t, b) // the memtable goes to a table
	b = openBadger(t, bo)
	appendAlerts(b, 61, 120, f.inLog)
	// Killed: the directory as it is now, every append having returned.
	f.dir = filepath.Join(t.TempDir(), "killed")
	copyDir(t, src, f.dir)
	closeBadger(t, b)
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, _ := e.Info()
		kind := ""
		switch name := e.Name(); {
		case strings.HasSuffix(name, ".sst"):
			kind = "sst"
		case strings.HasSuffix(name, ".vlog"):
			kind = "vlog"
		case strings.HasSuffix(name, ".mem"):
			kind = "mem"
		case name == "MANIFEST":
			kind = "MANIFEST"
		case name == syncedName:
			kind = "synced"
		}
		if kind != "" && fi.Size() > 0 {
			f.fileKind[kind] = append(f.fileKind[kind], e.Name())
		}
		t.Logf("killed buffer: %s %d bytes", e.Name(), fi.Size())
	}
	for _, k := range []string{"sst", "vlog", "mem", "MANIFEST", "synced"} {
		if len(f.fileKind[k]) == 0 {
			t.Fatalf("the fixture has no %s file", k)
		}
	}
	return f
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() || e.Name() == "LOCK" || e.Name() == ballastName {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// usedSize is the end of a file's data: memtable logs and value-log files
// are sparse files of twice their limit, mostly zeros.
func usedSize(data []byte) int {
	n := len(data)
	for n > 0 && data[n-1] == 0 {
		n--
	}
	return n
}

type damageCase struct {
	name string
	fn   func(t testing.TB, path string)
}

func damageCases() []damageCase {
	rewrite := func(t testing.TB, path string, fn func([]byte) []byte) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, fn(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	truncAt := func(frac func(used int) int) func(testing.TB, string) {
		return func(t testing.TB, path string) {
			rewrite(t, path, func(d []byte) []byte { return d[:min(len(d), frac(usedSize(d)))] })
		}
	}
	return []damageCase{
		{"truncated-head", truncAt(func(int) int { return 16 })},
		{"truncated-half", truncAt(func(u int) int { return u / 2 })},
		{"truncated-tail", truncAt(func(u int) int { return max(u-3, 0) })},
		{"flipped", func(t testing.TB, path string) {
			rewrite(t, path, func(d []byte) []byte {
				mid := usedSize(d) / 2
				for i := mid; i < min(mid+64, len(d)); i++ {
					d[i] ^= 0x5a
				}
				return d
			})
		}},
		{"zeroed-head", func(t testing.TB, path string) {
			rewrite(t, path, func(d []byte) []byte {
				clear(d[:min(len(d), 4096)])
				return d
			})
		}},
		{"deleted", func(t testing.TB, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	}
}

func TestDamage(t *testing.T) {
	f := newDamageFixture(t)
	for _, kind := range []string{"sst", "vlog", "mem", "MANIFEST", "synced"} {
		for _, dc := range damageCases() {
			t.Run(kind+"/"+dc.name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "buffer")
				copyDir(t, f.dir, dir)
				for _, name := range f.fileKind[kind] {
					dc.fn(t, filepath.Join(dir, name))
				}
				// Alerts whose bytes are all outside the damaged kind must
				// survive.
				mustKeep := map[uint64]bool{}
				for seq := range f.alerts {
					switch kind {
					case "sst":
						mustKeep[seq] = f.inLog[seq]
					case "mem":
						mustKeep[seq] = f.inTable[seq]
					case "vlog":
						mustKeep[seq] = !f.inVlog[seq]
					default:
						mustKeep[seq] = true
					}
				}
				checkDamaged(t, f, dir, mustKeep)
			})
		}
	}
}

func checkDamaged(t *testing.T, f *damageFixture, dir string, mustKeep map[uint64]bool) {
	log, logs := captureLogger(t)
	bo := f.opts
	bo.Dir = dir
	bo.Logger = log
	var b *Badger
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("OpenBadger panicked: %v", r)
			}
		}()
		var err error
		b, err = OpenBadger(bo)
		if err != nil {
			t.Fatalf("OpenBadger: %v", err)
		}
	}()
	defer closeBadger(t, b)
	mustRegister(t, b, "c", "alert")
	got := mustRead(t, b, "c", "alert", 1000)
	seen := map[uint64]bool{}
	for _, r := range got {
		if seen[r.Seq] {
			t.Errorf("seq %d delivered twice", r.Seq)
		}
		seen[r.Seq] = true
		if want, ok := f.alerts[r.Seq]; !ok || want != string(r.Data) {
			t.Errorf("seq %d: delivered %.24q, which was never appended under it", r.Seq, r.Data)
		}
	}
	var lost []uint64
	for seq := range f.alerts {
		if !seen[seq] {
			lost = append(lost, seq)
			if mustKeep[seq] {
				t.Errorf("alert %d, stored outside the damaged file, is lost", seq)
			}
		}
	}
	slices.Sort(lost)
	st := b.Stats()
	corrupt := st.Lanes["alert"].CorruptSkipped
	t.Logf("%d of %d alerts delivered, %d lost %v; CorruptSkipped %d; damage %q", len(got), len(f.alerts), len(lost), lost, corrupt, st.Damage)
	if uint64(len(lost)) > corrupt {
		t.Errorf("%d alerts lost but only %d counted in CorruptSkipped", len(lost), corrupt)
	}
	if len(lost) > 0 && len(st.Damage) == 0 && !strings.Contains(logs.String(), "damaged") {
		t.Error("alerts were lost without a message")
	}
	if moved := strings.Contains(strings.Join(st.Damage, " "), "moved to"); moved && !bytes.Contains([]byte(logs.String()), []byte("level=ERROR")) {
		t.Error("damaged files were moved aside without an error in the log")
	}
	mustAck(t, b, "c", "alert", seqsOf(got)...)
	seqs := mustAppend(t, b, "alert", []byte("after"))
	if seqs[0] <= f.maxSeq {
		t.Errorf("new alert got seq %d, not above the %d handed out before", seqs[0], f.maxSeq)
	}
	if rest := mustRead(t, b, "c", "alert", 10); len(rest) != 1 || string(rest[0].Data) != "after" {
		t.Errorf("after acking everything the consumer reads %q, want only the new alert", dataOf(rest))
	}
}

// TestNoFalseLosses: records that left the middle of a lane by an
// acknowledgement, a consumer registered after that, and restarts are not
// reported as lost.
func TestNoFalseLosses(t *testing.T) {
	bo := damageOptions(t, filepath.Join(t.TempDir(), "buffer"))
	b := openBadger(t, bo)
	mustRegister(t, b, "c", "alert")
	mustAppend(t, b, "alert", payloads("a", 5)...)
	mustAck(t, b, "c", "alert", 2, 4) // out of order: 2 and 4 leave the middle
	mustRegister(t, b, "d", "alert")  // never saw 2 and 4
	mustAppend(t, b, "score", payloads("s", 3)...)
	closeBadger(t, b)
	for range 2 {
		b = openBadger(t, bo)
		st := b.Stats()
		if len(st.Damage) > 0 || st.Lanes["alert"].CorruptSkipped > 0 || st.Lanes["score"].CorruptSkipped > 0 {
			t.Errorf("clean restart reported damage: %q, %+v", st.Damage, st.Lanes)
		}
		if got := dataOf(mustRead(t, b, "d", "alert", 10)); !slices.Equal(got, []string{"a-0", "a-2", "a-4"}) {
			t.Errorf("d reads %q", got)
		}
		closeBadger(t, b)
	}
}
