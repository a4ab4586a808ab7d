// Package forwardtest holds what the forwarders' tests share beyond the
// agent's test kit (agent/internal/testkit): an in-memory buffer with the
// lanes the forwarders use.
package forwardtest

import (
	"encoding/json"
	"strings"
	"testing"

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
