package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
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

// DecodeCommand decodes the payload of command name strictly: a JSON object
// with exactly the command's fields, each of the right type, a non-empty
// "id", no unknown or duplicate field (names match exactly, unlike
// encoding/json's case-insensitive matching), nothing after the object.
// Every problem is reported, each naming its field.
//
// reload, rebirth, flush and status take {"id": string}; set-threshold takes
// {"id": string, "stream": string, "threshold": number > 0}. Every command
// may also carry "requester": string, saying who sent it.
func DecodeCommand(name string, payload []byte) (Command, error) {
	cmd := Command{Name: name}
	var fields []string
	switch name {
	case CmdReload, CmdRebirth, CmdFlush, CmdStatus:
		fields = []string{"id"}
	case CmdSetThreshold:
		fields = []string{"id", "stream", "threshold"}
	default:
		return cmd, fmt.Errorf("%w %q (known: %s)", ErrUnknownCommand, name, strings.Join(CommandNames, ", "))
	}
	fields = append(fields, "requester")
	if len(payload) > maxCommandBytes {
		return cmd, fmt.Errorf("payload of %d bytes exceeds %d", len(payload), maxCommandBytes)
	}
	if len(strings.TrimSpace(string(payload))) == 0 {
		return cmd, errors.New("empty payload: want a JSON object with an \"id\"")
	}
	if !json.Valid(payload) {
		var v any
		err := json.Unmarshal(payload, &v)
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return cmd, fmt.Errorf("malformed JSON at offset %d: %v", se.Offset, se)
		}
		return cmd, fmt.Errorf("malformed JSON: %v", err)
	}
	var errs []error
	seen := make(map[string]bool, len(fields))    // present
	decoded := make(map[string]bool, len(fields)) // present and of the right type
	err := members(payload, func(rawKey, v []byte) error {
		var key string
		if json.Unmarshal(rawKey, &key) != nil {
			return errNotObject // cannot happen for valid JSON
		}
		if !slices.Contains(fields, key) {
			errs = append(errs, fmt.Errorf("unknown field %q", key))
			return nil
		}
		if seen[key] {
			errs = append(errs, fmt.Errorf("duplicate field %q", key))
			return nil
		}
		seen[key] = true
		switch key {
		case "id", "stream", "requester":
			s, err := decodeString(key, v)
			if err != nil {
				errs = append(errs, err)
				return nil
			}
			switch key {
			case "id":
				cmd.ID = s
			case "stream":
				cmd.Stream = s
			default:
				cmd.Requester = s
			}
			decoded[key] = true
		case "threshold":
			if kind := jsonKind(v); kind != "a number" {
				errs = append(errs, fmt.Errorf("field %q: want a number, got %s", key, kind))
				return nil
			}
			var f float64
			if err := json.Unmarshal(v, &f); err != nil {
				errs = append(errs, fmt.Errorf("field %q: %s is not a representable number", key, v))
				return nil
			}
			cmd.Threshold = f
			decoded[key] = true
		}
		return nil
	})
	if errors.Is(err, errNotObject) {
		return cmd, fmt.Errorf("payload must be a JSON object, got %s", jsonKind(payload))
	}
	for _, f := range fields {
		if !seen[f] && f != "requester" {
			errs = append(errs, fmt.Errorf("missing field %q", f))
		}
	}
	if decoded["id"] {
		errs = appendTextErr(errs, "id", cmd.ID, maxIDLen)
	}
	if decoded["requester"] {
		switch {
		case len(cmd.Requester) > maxIDLen:
			errs = append(errs, fmt.Errorf(`field "requester": longer than %d bytes`, maxIDLen))
		case strings.ContainsFunc(cmd.Requester, unicode.IsControl):
			errs = append(errs, errors.New(`field "requester": must not contain control characters`))
		}
	}
	if decoded["stream"] {
		errs = appendTextErr(errs, "stream", cmd.Stream, maxStreamLen)
	}
	if decoded["threshold"] && (!(cmd.Threshold > 0) || math.IsInf(cmd.Threshold, 0)) {
		errs = append(errs, fmt.Errorf(`field "threshold": must be a positive number, got %v`, cmd.Threshold))
	}
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return cmd, errors.New(strings.Join(msgs, "; "))
	}
	return cmd, nil
}

func decodeString(key string, v []byte) (string, error) {
	if kind := jsonKind(v); kind != "a string" {
		return "", fmt.Errorf("field %q: want a string, got %s", key, kind)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("field %q: %v", key, err)
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("field %q: invalid UTF-8", key)
	}
	return s, nil
}

// jsonKind names the kind of a raw JSON value, for "want X, got Y".
func jsonKind(v []byte) string {
	i := skipSpace(v, 0)
	if i >= len(v) {
		return "nothing"
	}
	switch v[i] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
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
	if len(payload) > maxCommandBytes || !json.Valid(payload) {
		return "", ""
	}
	_ = members(payload, func(k, v []byte) error {
		for _, f := range []struct {
			name string
			dst  *string
		}{{"id", &id}, {"requester", &requester}} {
			if keyIs(k, f.name) {
				if s, err := decodeString(f.name, v); err == nil && len(s) <= maxIDLen && !strings.ContainsFunc(s, unicode.IsControl) {
					*f.dst = s
				}
			}
		}
		return nil
	})
	return id, requester
}

// appendTextErr appends what is wrong with the text field name of a
// command, if anything: empty, longer than maxLen bytes, or with control
// characters.
func appendTextErr(errs []error, name, v string, maxLen int) []error {
	switch {
	case v == "":
		return append(errs, fmt.Errorf("field %q: must not be empty", name))
	case len(v) > maxLen:
		return append(errs, fmt.Errorf("field %q: longer than %d bytes", name, maxLen))
	case strings.ContainsFunc(v, unicode.IsControl):
		return append(errs, fmt.Errorf("field %q: must not contain control characters", name))
	}
	return errs
}
