package publish

import (
	"context"
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
