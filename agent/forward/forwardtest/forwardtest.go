// Package forwardtest holds what the forwarders' tests share beyond the
// agent's test kit (agent/internal/testkit): an in-memory buffer with the
// lanes the forwarders use.
package forwardtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

// Lanes are the buffer lanes the forwarders need: alert, advice,
// deadletter and the Dify forwarder's journal.
func Lanes() []buffer.LaneOptions {
	return []buffer.LaneOptions{
		{Name: record.LaneAlert, Priority: 2},
		{Name: record.LaneAdvice, Priority: 1},
		{Name: forward.LaneDeadLetter, Priority: 1},
		{Name: "dify-journal", Priority: 3},
	}
}

// NewMemory returns an in-memory buffer with Lanes, closed at the end of
// the test.
func NewMemory(tb testing.TB) *buffer.Memory {
	tb.Helper()
	opts := buffer.DefaultOptions()
	opts.Lanes = Lanes()
	b, err := buffer.NewMemory(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}

// DeadLetters returns the dead letters stored in buf's lane
// forward.LaneDeadLetter.
func DeadLetters(tb testing.TB, buf *buffer.Memory) []forward.DeadLetter {
	tb.Helper()
	recs, err := buf.ReadFrom(forward.LaneDeadLetter, 0, 1000)
	if err != nil {
		tb.Fatal(err)
	}
	var out []forward.DeadLetter
	for _, r := range recs {
		var d forward.DeadLetter
		if err := json.Unmarshal(r.Data, &d); err != nil {
			tb.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// Unacked returns how many records of lane consumer has not acknowledged.
func Unacked(tb testing.TB, buf *buffer.Memory, consumer, lane string) int {
	tb.Helper()
	recs, err := buf.Read(consumer, lane, 10000)
	if err != nil {
		tb.Fatal(err)
	}
	return len(recs)
}

// CheckOptionErrors checks that newFn accepts good and refuses each case's
// change of it (Mut) with an error naming Options.<Field> and never
// showing key.
func CheckOptionErrors[O any](t *testing.T, good O, key string, newFn func(O) error, cases []struct {
	Field string
	Mut   func(*O)
}) {
	t.Helper()
	if err := newFn(good); err != nil {
		t.Fatalf("good options: %v", err)
	}
	for _, tc := range cases {
		o := good
		tc.Mut(&o)
		err := newFn(o)
		if err == nil || !strings.Contains(err.Error(), "Options."+tc.Field) {
			t.Errorf("%s: got %v, want an error naming Options.%s", tc.Field, err, tc.Field)
		}
		if err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("%s: the error shows the API key: %v", tc.Field, err)
		}
	}
}

// T0 is the forwarders' tests' start time.
var T0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Alert returns alert number i of device's sensor stream at severity: it
// ended i seconds after T0.
func Alert(device, stream string, i int, severity string) record.Alert {
	end := T0.Add(time.Duration(i) * time.Second)
	a := record.Alert{
		TS: end, Device: device, Stream: stream, Kind: "sensor", Score: 0.93, Threshold: 0.5,
		Severity: severity, Episode: fmt.Sprintf("ep-%d", i), State: "open",
		Window:      record.Window{Start: end.Add(-6 * time.Second), End: end},
		TopFeatures: []record.Feature{{Name: "a1", Share: 0.6}, {Name: "p1", Share: 0.3}},
		Model:       "pump8@3",
	}
	a.ID = record.ID("alert", device, a.Stream, "", end, a.Model)
	return a
}

// Append appends recs, each encoded as JSON, to lane.
func Append[T any](tb testing.TB, buf forward.Buffer, lane string, recs ...T) {
	tb.Helper()
	var data [][]byte
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			tb.Fatal(err)
		}
		data = append(data, b)
	}
	if _, err := buf.Append(context.Background(), lane, data...); err != nil {
		tb.Fatal(err)
	}
}

// ExactlyOnce checks that counts holds each id of want once and no other
// id; what says what was counted (e.g. "ingested insert_ids").
func ExactlyOnce(t *testing.T, counts map[string]int, want []string, what string) {
	t.Helper()
	for _, id := range want {
		if counts[id] != 1 {
			t.Errorf("%s: %s counted %d times, want 1", what, id, counts[id])
		}
	}
	if len(counts) != len(want) {
		t.Errorf("%s: %d distinct ids, want %d", what, len(counts), len(want))
	}
}
