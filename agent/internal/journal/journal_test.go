package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

func strs(recs [][]byte) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r)
	}
	return out
}

func TestAppendAndReopen(t *testing.T) {
	dir := t.TempDir()
	j, recs, err := Open(dir, time.Hour, nil)
	if err != nil || len(recs) != 0 {
		t.Fatalf("Open empty: %v %q", err, recs)
	}
	if err := j.Append([]byte("a"), []byte("")); err != nil {
		t.Fatal(err)
	}
	if err := j.Append([]byte(`{"event_id":"b"}`)); err != nil {
		t.Fatal(err)
	}
	// No Close: as after a crash.
	_, recs, err = Open(dir, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strs(recs); !slices.Equal(got, []string{"a", "", `{"event_id":"b"}`}) {
		t.Fatalf("records after reopening: %q", got)
	}
}

// A record cut short or with a bad checksum ends the segment: what came
// before it is read, and new records go after it.
func TestTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		tail []byte
	}{
		{"cut header", []byte{5, 0, 0}},
		{"cut payload", []byte{5, 0, 0, 0, 1, 2, 3, 4, 'x'}},
		{"bad checksum", []byte{1, 0, 0, 0, 1, 2, 3, 4, 'x'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			j, _, err := Open(dir, time.Hour, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := j.Append([]byte("kept")); err != nil {
				t.Fatal(err)
			}
			j.Close()
			segs, _ := segments(dir)
			f, err := os.OpenFile(filepath.Join(dir, segs[0].name), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(tc.tail)
			f.Close()
			j, recs, err := Open(dir, time.Hour, nil)
			if err != nil || !slices.Equal(strs(recs), []string{"kept"}) {
				t.Fatalf("Open after a torn tail: %v %q", err, recs)
			}
			if err := j.Append([]byte("next")); err != nil {
				t.Fatal(err)
			}
			if _, recs, _ = Open(dir, time.Hour, nil); !slices.Equal(strs(recs), []string{"kept", "next"}) {
				t.Fatalf("after appending past the cut tail: %q", recs)
			}
		})
	}
}

// Segments rotate every Retention and only the newest two are kept.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	j, _, err := Open(dir, time.Minute, clock)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := j.Append(fmt.Appendf(nil, "r%d", i)); err != nil {
			t.Fatal(err)
		}
		now = now.Add(40 * time.Second)
	}
	// r0,r1 in the first segment (0s, 40s), r2,r3 in the second (80s,
	// 120s), r4 in the third (160s): the first is gone.
	segs, _ := segments(dir)
	_, recs, err := Open(dir, time.Minute, clock)
	if err != nil || len(segs) != 2 || !slices.Equal(strs(recs), []string{"r2", "r3", "r4"}) {
		t.Fatalf("%d segments, records %q, %v; want 2 segments with r2..r4", len(segs), recs, err)
	}
}

// FuzzReadSegment: any bytes read as a segment give records whose framing
// is exactly the valid prefix, and never a panic.
func FuzzReadSegment(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0xe4, 0xa0, 0x6c, 0x8a, 'a'})
	f.Add([]byte{255, 255, 255, 255, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "seg")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		recs, valid, err := readSegment(path)
		if err != nil || valid < 0 || valid > int64(len(b)) {
			t.Fatalf("readSegment: %v, valid %d of %d", err, valid, len(b))
		}
		n := int64(0)
		for _, r := range recs {
			n += 8 + int64(len(r))
		}
		if n != valid {
			t.Fatalf("records frame %d bytes, valid prefix %d", n, valid)
		}
	})
}

// benchEvent is one record of a typical event.
var benchEvent = []byte(`{"ts":"2026-01-01T00:00:00Z","event":{"event_id":"ev-123456","event_name":"form_error","user_id":"user-12345","properties":{"kiosk_id":"kiosk-7"}}}`)

// benchJournal opens a journal in a fresh directory, closed when the
// benchmark ends.
func benchJournal(b *testing.B) *Journal {
	b.Helper()
	j, _, err := Open(b.TempDir(), time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := j.Close(); err != nil {
			b.Error(err)
		}
	})
	return j
}

// BenchmarkAppend is the cost of making one request's events durable: one
// record of a typical event, written and fsynced.
func BenchmarkAppend(b *testing.B) {
	j := benchJournal(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := j.Append(benchEvent); err != nil {
			b.Fatal(err)
		}
	}
}

// Concurrent appends, across rotations, all return durable records: after
// they return, reopening finds every one of the newest two segments' records
// intact, and with a long retention every record at all.
func TestConcurrentAppends(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retention time.Duration
	}{{"one segment", time.Hour}, {"rotating", time.Nanosecond}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			j, _, err := Open(dir, tc.retention, nil)
			if err != nil {
				t.Fatal(err)
			}
			const writers, each = 8, 40
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						if err := j.Append(fmt.Appendf(nil, "w%d-%d", w, i)); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			_, recs, err := Open(dir, tc.retention, nil)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, r := range recs {
				if seen[string(r)] {
					t.Fatalf("record %q twice", r)
				}
				seen[string(r)] = true
			}
			if tc.retention == time.Hour && len(seen) != writers*each {
				t.Fatalf("%d records after %d concurrent appends", len(seen), writers*each)
			}
			if len(seen) == 0 {
				t.Fatal("no record survived")
			}
		})
	}
}

// BenchmarkAppend16 is 16 concurrent requests making their events durable
// at once: with group commit they share fsyncs instead of queueing for one
// each (compare 16 × BenchmarkAppend).
func BenchmarkAppend16(b *testing.B) {
	j := benchJournal(b)
	for b.Loop() {
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				if err := j.Append(benchEvent); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
}
