package pipeline

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/source"
)

// FuzzTimelineAdmission feeds a sensor stream samples whose times step by
// -3..3 ms (many equal, some back), with few distinct values and message
// ids, and checks the admission rules against a model of them: a sample
// at or after the newest time is taken unless it is a duplicate (the id
// of one taken among the last recentIDs, or without an id the values of
// one taken at that time); one before it is dropped; every window scored
// gets its own id. A second stream, with a lateness that lets it follow
// clock steps, must only not crash.
func FuzzTimelineAdmission(f *testing.F) {
	for _, s := range [][]byte{
		{},
		{1, 0, 0, 1, 1, 0, 1, 2, 0},    // increasing
		{0, 0, 0, 0, 0, 0, 0, 1, 0},    // equal times, one duplicate
		{1, 0, 1, 0, 1, 1, 0, 2, 2},    // ids: 1 again is a duplicate
		{3, 0, 0, 0xff, 0, 0, 0, 0, 0}, // back by 1 ms: out of order
		{0, 0, 3, 0, 0, 3, 0xfd, 0, 3}, // same id, then older
		{2, 1, 0, 0, 1, 0, 0, 2, 0, 0, 1, 0, 1, 3, 5, 0, 3, 5},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 3*2000 {
			data = data[:3*2000]
		}
		buf := &memBuffer{}
		m := &meanModel{id: "mean@1", length: 3, hop: 1, chans: chans2, thr: 1e9}
		strict := sensorSpec(m)
		stepping := sensorSpec(m)
		stepping.Name, stepping.MaxLateness = "stepping", time.Second
		p, err := New(Options{Device: "dev-01", Buffer: buf, Streams: []StreamSpec{strict, stepping}, Shards: 1, Queue: 1})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		st, st2 := p.streams["pump"], p.streams["stepping"]
		s := st.shard

		// The model of the rules.
		var last time.Time
		var atVals [][2]float64 // values of id-less samples taken at atTime
		var atTime time.Time
		var ids []string // ids taken, the latest last
		drops := func() uint64 { return p.Stats().DropTotal() }
		ts := t0
		for i := 0; i+3 <= len(data); i += 3 {
			ts = ts.Add(time.Duration(int8(data[i])%4) * time.Millisecond)
			vals := [2]float64{float64(data[i+1] % 4), 0}
			id := ""
			if data[i+2] != 0 {
				id = fmt.Sprint(data[i+2] % 8)
			}
			in := source.Input{Source: "sim", Time: ts, Channels: chans2, Values: vals[:], ID: id}
			var dup bool
			if id != "" {
				dup = slices.Contains(ids[max(0, len(ids)-recentIDs):], id)
			} else {
				dup = ts.Equal(atTime) && slices.Contains(atVals, vals)
			}
			before := drops()
			st.handleSample(ctx, s, in)
			st2.handleSample(ctx, s, in)
			taken := drops() == before
			switch {
			case dup && id != "":
				if taken {
					t.Fatalf("sample %d (id %q at %v): a duplicate id taken", i/3, id, ts)
				}
			case !last.IsZero() && ts.Before(last):
				if taken {
					t.Fatalf("sample %d at %v, before the newest %v: taken", i/3, ts, last)
				}
			case dup:
				if taken {
					t.Fatalf("sample %d (id %q, values %v at %v): a duplicate taken", i/3, id, vals, ts)
				}
			default:
				if !taken {
					t.Fatalf("sample %d (id %q, values %v at %v, newest %v): dropped, want taken", i/3, id, vals, ts, last)
				}
				last = ts
				if id != "" {
					ids = append(ids, id)
					break
				}
				if !ts.Equal(atTime) {
					atTime, atVals = ts, atVals[:0]
				}
				atVals = append(atVals, vals)
			}
			if s.pending >= 64 {
				s.flush(ctx)
			}
		}
		s.flush(ctx)
		seen := map[string]bool{}
		for _, sc := range buf.scores(t) {
			if sc.Stream != "pump" {
				continue
			}
			if seen[sc.ID] {
				t.Fatalf("score id %s (end %v) repeats", sc.ID, sc.TS)
			}
			seen[sc.ID] = true
		}
	})
}
