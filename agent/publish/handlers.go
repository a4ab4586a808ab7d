package publish

import (
	"context"
	"slices"
)

// CommandHandler carries out a command beyond [CommandNames] (the daemon's
// relearn, reset, deploy-model...): it decodes payload itself, strictly, and
// returns the reply, whose ID it takes from the payload when it can. It
// runs like the built-in commands: one at a time on the command goroutine,
// with a context bounded by Options.CommandTimeout, only when the command
// is allowed (Options.AllowCommands).
type CommandHandler func(ctx context.Context, payload []byte) Reply

// handler returns the Options.Handlers entry for a command name that is not
// one of the built-in commands.
func (p *Publisher) handler(name string) CommandHandler {
	if slices.Contains(CommandNames, name) {
		return nil
	}
	return p.opts.Handlers[name]
}

// CommandVerifier checks a command's payload before it is decoded (the
// daemon's signed commands): it returns the payload to decode (a signed
// envelope's inner payload), or an error that becomes the reply (with the
// id of the payload returned beside it, if any).
type CommandVerifier func(name string, payload []byte) ([]byte, error)
