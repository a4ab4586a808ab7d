package testkit

import (
	"context"
	"errors"
	"testing"
)

func TestLanes(t *testing.T) {
	var l Lanes
	ctx := context.Background()
	rec := []byte(`{"n":1}`)
	if seqs, err := l.Append(ctx, "a", rec, []byte(`{"n":2}`)); err != nil || len(seqs) != 2 || seqs[0] != 1 || seqs[1] != 2 {
		t.Fatalf("Append = %v, %v; want seqs 1, 2", seqs, err)
	}
	rec[2] = 'x' // the lane keeps its own copy
	if seqs, _ := l.Append(ctx, "b", []byte(`{"n":3}`)); seqs[0] != 1 {
		t.Fatalf("lane b numbered from %d, want 1", seqs[0])
	}
	got := Decode[struct{ N int }](t, &l, "a")
	if len(got) != 2 || got[0].N != 1 || got[1].N != 2 {
		t.Fatalf("Decode = %+v", got)
	}
	l.Err = errors.New("disk full")
	if _, err := l.Append(ctx, "a", []byte(`{}`)); err == nil || len(l.Lane("a")) != 2 {
		t.Fatalf("Append with Err set: %v, lane %q", err, l.Lane("a"))
	}
}
