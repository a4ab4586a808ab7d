package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vigil-edge/vigil/agent/internal/strictjson"
)

// Command names, the last level of <prefix>/<device>/cmd/<name>.
const (
	CmdReload       = "reload"
	CmdSetThreshold = "set-threshold"
	CmdRebirth      = "rebirth"
	CmdFlush        = "flush"
	CmdStatus       = "status"
)

// CommandNames lists the commands the publisher knows.
var CommandNames = []string{CmdReload, CmdSetThreshold, CmdRebirth, CmdFlush, CmdStatus}

// Commands carries out the remote commands; the daemon's wiring implements
// it. Each method returns a short human message for the reply, or an error
// whose text becomes the reply's message with "ok": false. Methods run one
// at a time, on the publisher's command goroutine, with a context bounded by
// Options.CommandTimeout. The publisher handles "rebirth" itself.
type Commands interface {
	// Reload reloads the configuration and models.
	Reload(ctx context.Context) (string, error)
	// SetThreshold sets the alert threshold of a stream.
	SetThreshold(ctx context.Context, stream string, threshold float64) (string, error)
	// Flush makes everything buffered durable (and whatever else the agent
	// means by flushing).
	Flush(ctx context.Context) (string, error)
	// Status summarizes the agent's state in one line.
	Status(ctx context.Context) (string, error)
}

// Command is a decoded command.
type Command struct {
	// Name is the command's name, one of [CommandNames].
	Name string
	// ID is the request's id, echoed in the reply.
	ID string
	// Stream and Threshold are the arguments of set-threshold.
	Stream    string
	Threshold float64
	// Requester optionally says who sent the command (an operator, a
	// console); it is logged and echoed in the reply.
	Requester string
}

// Reply is the answer published on <prefix>/<device>/cmd/<name>/reply.
type Reply struct {
	ID        string `json:"id"`
	Requester string `json:"requester,omitempty"`
	OK        bool   `json:"ok"`
	Message   string `json:"message"`
}

// Limits of a command payload.
const (
	maxCommandBytes = 64 << 10
	maxIDLen        = 128
	maxStreamLen    = 128
)

// ErrUnknownCommand is wrapped by DecodeCommand's error for a name that is
// not one of [CommandNames].
var ErrUnknownCommand = errors.New("unknown command")

// DecodeCommand decodes the payload of command name strictly (see
// [strictjson.Decode]): a JSON object with exactly the command's fields,
// each of the right type, a non-empty "id", no unknown or duplicate field
// (names match exactly, unlike encoding/json's case-insensitive matching),
// nothing after the object. Every problem is reported, each naming its
// field.
//
// reload, rebirth, flush and status take {"id": string}; set-threshold takes
// {"id": string, "stream": string, "threshold": number > 0}. Every command
// may also carry "requester": string, saying who sent it.
func DecodeCommand(name string, payload []byte) (Command, error) {
	cmd := Command{Name: name}
	fields := []string{"id", "requester"}
	switch name {
	case CmdReload, CmdRebirth, CmdFlush, CmdStatus:
	case CmdSetThreshold:
		fields = append(fields, "stream", "threshold")
	default:
		return cmd, fmt.Errorf("%w %q (known: %s)", ErrUnknownCommand, name, strings.Join(CommandNames, ", "))
	}
	o, err := strictjson.Decode(payload, maxCommandBytes, fields...)
	if err != nil {
		return cmd, err
	}
	cmd.ID = o.Str("id", true, maxIDLen)
	cmd.Requester = o.Str("requester", false, maxIDLen)
	if name == CmdSetThreshold {
		cmd.Stream = o.Str("stream", true, maxStreamLen)
		if th, ok := o.Float("threshold", true); ok {
			cmd.Threshold = th
			if !(th > 0) {
				o.Bad("threshold", "must be a positive number, got %v", th)
			}
		}
	}
	return cmd, o.Err()
}

// requestID digs the id out of a payload that failed to decode, so that the
// error reply can still be matched to its request; "" if there is none.
func requestID(payload []byte) string {
	id, _ := requestFields(payload)
	return id
}

// requestFields digs the id and the requester out of a payload that is not
// decoded (it failed to, or it is not to be run); "" for one that is
// absent, too long or has control characters.
func requestFields(payload []byte) (id, requester string) {
	return strictjson.Peek(payload, maxCommandBytes, "id", maxIDLen),
		strictjson.Peek(payload, maxCommandBytes, "requester", maxIDLen)
}
