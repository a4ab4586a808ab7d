// Package forwardtest holds what the forwarders' tests share beyond the
// agent's test kit (agent/internal/testkit): an in-memory buffer with the
// lanes the forwarders use.
package forwardtest

import (
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
