package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDecodeCommand(t *testing.T) {
	tests := []struct {
		name, cmd, payload string
		want               Command
		wantErr            []string // substrings, all required
	}{
		{name: "reload", cmd: "reload", payload: `{"id":"r1"}`, want: Command{Name: "reload", ID: "r1"}},
		{name: "set-threshold", cmd: "set-threshold", payload: ` {"id":"t1","stream":"pump","threshold":1.25} `,
			want: Command{Name: "set-threshold", ID: "t1", Stream: "pump", Threshold: 1.25}},
		{name: "unknown command", cmd: "selfdestruct", payload: `{"id":"x"}`, wantErr: []string{`unknown command "selfdestruct"`}},
		{name: "missing id", cmd: "flush", payload: `{}`, wantErr: []string{`missing field "id"`}},
		{name: "empty id", cmd: "flush", payload: `{"id":""}`, wantErr: []string{`field "id": must not be empty`}},
		{name: "id of the wrong type", cmd: "status", payload: `{"id":7}`, wantErr: []string{`field "id": want a string, got a number`}},
		{name: "unknown field", cmd: "reload", payload: `{"id":"a","force":true}`, wantErr: []string{`unknown field "force"`}},
		{name: "field names match exactly", cmd: "reload", payload: `{"ID":"a"}`, wantErr: []string{`unknown field "ID"`, `missing field "id"`}},
		{name: "duplicate field", cmd: "reload", payload: `{"id":"a","id":"b"}`, wantErr: []string{`duplicate field "id"`}},
		{name: "threshold of the wrong type", cmd: "set-threshold", payload: `{"id":"a","stream":"s","threshold":"high"}`,
			wantErr: []string{`field "threshold": want a number, got a string`}},
		{name: "every problem at once", cmd: "set-threshold", payload: `{"id":"a","threshold":null,"extra":1}`,
			wantErr: []string{`unknown field "extra"`, `field "threshold": want a number, got null`, `missing field "stream"`}},
		{name: "threshold must be positive", cmd: "set-threshold", payload: `{"id":"a","stream":"s","threshold":-1}`,
			wantErr: []string{`field "threshold": must be a positive number`}},
		{name: "threshold out of range", cmd: "set-threshold", payload: `{"id":"a","stream":"s","threshold":1e400}`,
			wantErr: []string{`field "threshold"`}},
		{name: "stream empty", cmd: "set-threshold", payload: `{"id":"a","stream":"","threshold":1}`,
			wantErr: []string{`field "stream": must not be empty`}},
		{name: "not an object", cmd: "reload", payload: `["id"]`, wantErr: []string{"payload must be a JSON object, got an array"}},
		{name: "null", cmd: "reload", payload: `null`, wantErr: []string{"payload must be a JSON object, got null"}},
		{name: "malformed", cmd: "reload", payload: `{"id":"a",}`, wantErr: []string{"malformed JSON at offset"}},
		{name: "trailing data", cmd: "reload", payload: `{"id":"a"} {}`, wantErr: []string{"malformed JSON"}},
		{name: "empty payload", cmd: "reload", payload: ``, wantErr: []string{"empty payload"}},
		{name: "control characters in id", cmd: "reload", payload: `{"id":"a\u0007"}`, wantErr: []string{"control characters"}},
		{name: "requester", cmd: "set-threshold", payload: `{"id":"t2","requester":"ops-console","stream":"pump","threshold":2}`,
			want: Command{Name: "set-threshold", ID: "t2", Stream: "pump", Threshold: 2, Requester: "ops-console"}},
		{name: "empty requester", cmd: "flush", payload: `{"id":"f1","requester":""}`, want: Command{Name: "flush", ID: "f1"}},
		{name: "requester of the wrong type", cmd: "flush", payload: `{"id":"f1","requester":7}`, wantErr: []string{`field "requester": want a string, got a number`}},
		{name: "control characters in requester", cmd: "status", payload: `{"id":"a","requester":"x\u001b[2J"}`, wantErr: []string{`field "requester": must not contain control characters`}},
		{name: "id too long", cmd: "reload", payload: `{"id":"` + strings.Repeat("x", 129) + `"}`, wantErr: []string{"longer than 128"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCommand(tt.cmd, []byte(tt.payload))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("DecodeCommand(%s, %s) = %+v; want an error", tt.cmd, tt.payload, got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeCommand(%s, %s): %v", tt.cmd, tt.payload, err)
			}
			if got != tt.want {
				t.Fatalf("DecodeCommand(%s, %s) = %+v; want %+v", tt.cmd, tt.payload, got, tt.want)
			}
		})
	}
	if _, err := DecodeCommand("nope", nil); !errors.Is(err, ErrUnknownCommand) {
		t.Errorf("unknown command error %v does not wrap ErrUnknownCommand", err)
	}
}

// FuzzDecodeCommand checks that the decoder never panics, that what it
// accepts is exactly what a strict reading of the payload gives, and that
// the id it reports for an error reply comes from the payload.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"id":"r1"}`, `{"id":"t1","stream":"pump","threshold":1.25}`, `{"id":7}`, `{"ID":"a"}`, `{"id":"a","id":"b"}`,
		`{"id":"a","threshold":"x"}`, `[]`, `null`, `{"id":"a"} {}`, `{"id":"\u00e9\ud800"}`, `{"threshold":1e400}`, ``,
	} {
		for _, name := range CommandNames {
			f.Add(name, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, name string, payload []byte) {
		cmd, err := DecodeCommand(name, payload)
		id := requestID(payload)
		if err != nil {
			return
		}
		if !slices.Contains(CommandNames, name) {
			t.Fatalf("accepted unknown command %q", name)
		}
		if cmd.ID == "" || cmd.ID != id {
			t.Fatalf("accepted %q with id %q (requestID %q)", payload, cmd.ID, id)
		}
		// What was accepted decodes with encoding/json to the same values,
		// and has no other field.
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatalf("accepted %q that encoding/json refuses: %v", payload, err)
		}
		if m["id"] != cmd.ID {
			t.Fatalf("id %q; encoding/json says %v", cmd.ID, m["id"])
		}
		want := 1
		if name == CmdSetThreshold {
			want = 3
			if m["stream"] != cmd.Stream || m["threshold"] != cmd.Threshold || !(cmd.Threshold > 0) {
				t.Fatalf("set-threshold %+v; encoding/json says %v", cmd, m)
			}
		}
		if len(m) != want {
			t.Fatalf("accepted %q with %d members; want %d", payload, len(m), want)
		}
	})
}

// fakeCommands records the calls of the wiring.
type fakeCommands struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (f *fakeCommands) record(s string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
	if f.err != nil {
		return "", f.err
	}
	return "done " + s, nil
}

func (f *fakeCommands) Reload(context.Context) (string, error) { return f.record("reload") }
func (f *fakeCommands) SetThreshold(_ context.Context, stream string, th float64) (string, error) {
	b, _ := json.Marshal([]any{stream, th})
	return f.record("set-threshold " + string(b))
}
func (f *fakeCommands) Flush(context.Context) (string, error)  { return f.record("flush") }
func (f *fakeCommands) Status(context.Context) (string, error) { return f.record("status") }

func (f *fakeCommands) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func TestExecute(t *testing.T) {
	fc := &fakeCommands{}
	opts := testOptions("tcp://127.0.0.1:1")
	opts.Commands = fc
	opts.AllowCommands = []string{CmdReload, CmdSetThreshold, CmdRebirth, CmdStatus}
	p, err := New(newMemBuffer(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, payload string
		want          Reply
		call          string
	}{
		{"reload", `{"id":"1"}`, Reply{ID: "1", OK: true, Message: "done reload"}, "reload"},
		{"set-threshold", `{"id":"2","stream":"pump","threshold":2.5}`, Reply{ID: "2", OK: true, Message: `done set-threshold ["pump",2.5]`}, `set-threshold ["pump",2.5]`},
		{"set-threshold", `{"id":"3","stream":"pump","threshold":"2.5"}`, Reply{ID: "3", Message: `invalid set-threshold command: field "threshold": want a number, got a string`}, ""},
		{"flush", `{"id":"4"}`, Reply{ID: "4", Message: `command "flush" is not allowed on this device`}, ""},
		{"format", `{"id":"5"}`, Reply{ID: "5", Message: `unknown command "format" (known: reload, set-threshold, rebirth, flush, status)`}, ""},
		{"rebirth", `{"id":"6"}`, Reply{ID: "6", Message: "rebirth: not connected to the broker"}, ""},
		{"status", `{"id":"7","x":1}`, Reply{ID: "7", Message: `invalid status command: unknown field "x"`}, ""},
	}
	for _, tt := range tests {
		before := len(fc.Calls())
		got := p.execute(context.Background(), tt.name, []byte(tt.payload))
		if got != tt.want {
			t.Errorf("execute(%s, %s) = %+v\nwant %+v", tt.name, tt.payload, got, tt.want)
		}
		calls := fc.Calls()[before:]
		if tt.call == "" && len(calls) > 0 || tt.call != "" && (len(calls) != 1 || calls[0] != tt.call) {
			t.Errorf("execute(%s, %s) called %q; want %q", tt.name, tt.payload, calls, tt.call)
		}
	}
	fc.err = errors.New("stream pump is unknown")
	if got := p.execute(context.Background(), "status", []byte(`{"id":"8"}`)); got != (Reply{ID: "8", Message: "stream pump is unknown"}) {
		t.Errorf("failing handler: %+v", got)
	}
	st := p.Stats()
	if st.Commands != 8 || st.CommandsFailed != 6 {
		t.Errorf("Commands = %d, CommandsFailed = %d; want 8, 6", st.Commands, st.CommandsFailed)
	}
}

func TestExecuteWithoutHandler(t *testing.T) {
	p, err := New(newMemBuffer(t), testOptions("tcp://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	got := p.execute(context.Background(), "reload", []byte(`{"id":"1"}`))
	if got.OK || !strings.Contains(got.Message, "not supported") {
		t.Fatalf("reload without a Commands handler: %+v", got)
	}
}

func TestExecuteRecoversPanics(t *testing.T) {
	opts := testOptions("tcp://127.0.0.1:1")
	opts.Commands = &panicky{}
	p, err := New(newMemBuffer(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.execute(context.Background(), "flush", []byte(`{"id":"p"}`)); got != (Reply{ID: "p", Message: "internal error"}) {
		t.Fatalf("panicking handler: %+v", got)
	}
}

type panicky struct{ fakeCommands }

func (*panicky) Flush(context.Context) (string, error) { panic("boom") }

// fakeMessage is a paho.Message for calling the handler directly.
type fakeMessage struct {
	topic    string
	payload  []byte
	retained bool
}

func (m fakeMessage) Duplicate() bool   { return false }
func (m fakeMessage) Qos() byte         { return 1 }
func (m fakeMessage) Retained() bool    { return m.retained }
func (m fakeMessage) Topic() string     { return m.topic }
func (m fakeMessage) MessageID() uint16 { return 0 }
func (m fakeMessage) Payload() []byte   { return m.payload }
func (m fakeMessage) Ack()              {}

// TestCommandFloodLogsOnce: commands dropped from a full queue are counted
// one by one but logged once per interval, with how many were suppressed.
func TestCommandFloodLogsOnce(t *testing.T) {
	var logs bytes.Buffer
	opts := testOptions("tcp://127.0.0.1:1")
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	opts.Now = func() time.Time { return now }
	p, err := New(buf(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing runs the queue (64 commands): 300 commands drop 236.
	for i := range 300 {
		p.onCommand(nil, fakeMessage{topic: "vigil/dev1/cmd/status", payload: fmt.Appendf(nil, `{"id":"c%d"}`, i)})
	}
	now = now.Add(10 * time.Second)
	p.onCommand(nil, fakeMessage{topic: "vigil/dev1/cmd/status", payload: []byte(`{"id":"last"}`)})
	if got := p.cmdDropped.Load(); got != 237 {
		t.Fatalf("%d commands counted as dropped, want 237", got)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "id=c64") || !strings.Contains(lines[1], "suppressed=235") || !strings.Contains(lines[1], "dropped_total=237") {
		t.Fatalf("log of a command flood:\n%s\nwant two lines: the first drop, then one standing for the 235 suppressed", logs.String())
	}
}

// BenchmarkDecodeCommand decodes a set-threshold command and digs the id
// and requester out of a refused one, as the command goroutine does.
func BenchmarkDecodeCommand(b *testing.B) {
	ok := []byte(`{"id":"t1","requester":"ops-console","stream":"pump","threshold":1.25}`)
	bad := []byte(`{"id":"t2","requester":"ops-console","stream":"pump","threshold":"high"}`)
	for b.Loop() {
		if _, err := DecodeCommand(CmdSetThreshold, ok); err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeCommand(CmdSetThreshold, bad); err == nil {
			b.Fatal("accepted a string threshold")
		}
		if id, req := requestFields(bad); id != "t2" || req != "ops-console" {
			b.Fatalf("requestFields = %q, %q", id, req)
		}
	}
}
