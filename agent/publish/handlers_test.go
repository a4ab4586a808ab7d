package publish

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestExecuteHandlers: a command of Options.Handlers is run by its handler
// with a bounded context, unless AllowCommands leaves it out; a built-in
// name is never taken over by a handler.
func TestExecuteHandlers(t *testing.T) {
	opts := testOptions("tcp://127.0.0.1:1")
	var got []string
	opts.Handlers = map[string]CommandHandler{
		"relearn": func(ctx context.Context, payload []byte) Reply {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("handler without a deadline")
			}
			got = append(got, string(payload))
			return Reply{ID: "h", OK: true, Message: "relearning"}
		},
		"status": func(context.Context, []byte) Reply { t.Error("a handler took over status"); return Reply{} },
	}
	opts.CommandTimeout = time.Minute
	p, err := New(newMemBuffer(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep := p.execute(context.Background(), "relearn", []byte(`{"x":1}`)); rep != (Reply{ID: "h", OK: true, Message: "relearning"}) || len(got) != 1 {
		t.Fatalf("relearn: %+v, handler saw %q", rep, got)
	}
	p.execute(context.Background(), "status", []byte(`{"id":"s"}`))

	opts.AllowCommands = []string{CmdStatus}
	p, err = New(newMemBuffer(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep := p.execute(context.Background(), "relearn", []byte(`{"id":"2"}`)); rep.OK || rep.ID != "2" || rep.Message != `command "relearn" is not allowed on this device` {
		t.Fatalf("relearn not allowed: %+v", rep)
	}
	opts.AllowCommands = []string{"relearn", "nope"}
	if _, err := New(newMemBuffer(t), opts); err == nil {
		t.Fatal("AllowCommands with an unknown command accepted")
	}
}

// TestExecuteVerify: Options.Verify sees every known command first; what
// it returns is decoded; its refusal is the reply, with the id of the
// payload it returned.
func TestExecuteVerify(t *testing.T) {
	fc := &fakeCommands{}
	opts := testOptions("tcp://127.0.0.1:1")
	opts.Commands = fc
	opts.Verify = func(name string, payload []byte) ([]byte, error) {
		switch string(payload) {
		case "wrapped":
			return []byte(`{"id":"in"}`), nil
		case "refused":
			return []byte(`{"id":"in2"}`), errors.New("refused: replayed command")
		}
		return payload, nil
	}
	p, err := New(newMemBuffer(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep := p.execute(context.Background(), "status", []byte("wrapped")); !rep.OK || rep.ID != "in" {
		t.Fatalf("wrapped: %+v", rep)
	}
	if rep := p.execute(context.Background(), "reload", []byte("refused")); rep.OK || rep.ID != "in2" || rep.Message != "refused: replayed command" {
		t.Fatalf("refused: %+v", rep)
	}
	if calls := fc.Calls(); len(calls) != 1 || calls[0] != "status" {
		t.Fatalf("calls %q", calls)
	}
}
