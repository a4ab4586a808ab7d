package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/strictjson"
)

// healthLoop publishes the health message every HealthInterval while
// connected.
func (p *Publisher) healthLoop(ctx context.Context) {
	t := time.NewTicker(p.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if !p.Connected() {
			continue
		}
		if err := p.PublishHealth(); err != nil {
			p.healthLog.Warn("health not published", "err", err)
		}
	}
}

// PublishHealth publishes a health message now, at QoS 0, and returns once
// it is written to the connection.
func (p *Publisher) PublishHealth() error {
	s := p.current()
	if s == nil {
		return fmt.Errorf("publish health: %w", ErrNotConnected)
	}
	tok := s.cl.Publish(p.health, 0, false, p.healthPayload())
	if !waitToken(tok, p.opts.WriteTimeout, s.lost) {
		return fmt.Errorf("publish health: %w", tokenErr(tok))
	}
	return nil
}

// healthPayload is {"ts":..,"device":..,"uptime_s":..,"mqtt":Stats, ...}
// followed by the members of the agent's snapshot (Options.Health) when it
// marshals to a JSON object (its own ts, device, uptime_s and mqtt members
// are dropped), or by "agent": snapshot when it is something else.
func (p *Publisher) healthPayload() []byte {
	stats, err := json.Marshal(p.Stats())
	if err != nil { // cannot happen: plain fields
		stats = []byte("null")
	}
	var b bytes.Buffer
	b.WriteString(`{"ts":`)
	ts, _ := json.Marshal(p.now().UTC())
	b.Write(ts)
	b.WriteString(`,"device":`)
	dev, _ := json.Marshal(p.opts.Device)
	b.Write(dev)
	b.WriteString(`,"uptime_s":`)
	fmt.Fprintf(&b, "%.0f", p.now().Sub(p.started).Seconds())
	b.WriteString(`,"mqtt":`)
	b.Write(stats)
	if p.opts.Health != nil {
		snap, err := json.Marshal(p.opts.Health())
		switch {
		case err != nil:
			msg, _ := json.Marshal(err.Error())
			b.WriteString(`,"health_error":`)
			b.Write(msg)
		case strictjson.Kind(snap) == "an object":
			_ = members(snap, func(k, v []byte) error {
				if keyIs(k, "ts") || keyIs(k, "device") || keyIs(k, "uptime_s") || keyIs(k, "mqtt") {
					return nil
				}
				b.WriteByte(',')
				b.Write(k)
				b.WriteByte(':')
				b.Write(v)
				return nil
			})
		default:
			b.WriteString(`,"agent":`)
			b.Write(snap)
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

// cmdReq is a command as received.
type cmdReq struct {
	name     string
	payload  []byte
	retained bool
}

// onCommand runs on paho's callback goroutine: it only queues the command.
func (p *Publisher) onCommand(_ mqtt.Client, m mqtt.Message) {
	name := strings.TrimPrefix(m.Topic(), p.cmdBase)
	select {
	case p.cmdq <- cmdReq{name: name, payload: bytes.Clone(m.Payload()), retained: m.Retained()}:
	default:
		// A flood of commands must not flood the log too: one line per
		// 10 s, with how many it stands for.
		total := p.cmdDropped.Add(1)
		if ok, n := p.cmdDropLog.Allow(""); ok {
			p.log.Warn("command dropped: too many queued", "command", name, "id", requestID(m.Payload()), "suppressed", n, "dropped_total", total)
		}
	}
}

// commandLoop runs the queued commands one at a time and replies.
func (p *Publisher) commandLoop(ctx context.Context) {
	for {
		select {
		case req := <-p.cmdq:
			var rep Reply
			if req.retained {
				rep = p.refuseRetained(req.name, req.payload)
			} else {
				rep = p.execute(ctx, req.name, req.payload)
			}
			p.reply(req.name, rep)
		case <-ctx.Done():
			return
		}
	}
}

// refuseRetained answers a retained command message without running it:
// the broker delivers a retained message again at every connect, so running
// it would repeat it (a threshold of 1e308, say) after every restart, long
// after whoever sent it meant it.
func (p *Publisher) refuseRetained(name string, payload []byte) Reply {
	p.commands.Add(1)
	p.cmdFailed.Add(1)
	id, requester := requestFields(payload)
	rep := Reply{ID: id, Requester: requester, Message: fmt.Sprintf("not executed: %s came as a retained message, which the broker replays at every connect; "+
		"send commands without the retain flag, and clear this one by publishing an empty retained message on its topic", name)}
	p.log.Warn("retained command not executed", "command", name, "id", id, "requester", requester)
	return rep
}

// execute checks, decodes and runs one command. Nothing changes unless the
// command is known, allowed and valid.
func (p *Publisher) execute(ctx context.Context, name string, payload []byte) (rep Reply) {
	p.commands.Add(1)
	log := p.log.With("command", name)
	var cmd Command
	defer func() {
		if r := recover(); r != nil {
			rep = Reply{ID: rep.ID, Requester: rep.Requester, Message: "internal error"}
			log.Error("command handler panicked", "panic", r)
		}
		if !rep.OK {
			p.cmdFailed.Add(1)
		}
		// Who asked for what, and what came of it.
		args := []any{"id", rep.ID, "requester", rep.Requester}
		if name == CmdSetThreshold && cmd.Stream != "" {
			args = append(args, "stream", cmd.Stream, "threshold", cmd.Threshold)
		}
		log.Info("command", append(args, "ok", rep.OK, "message", rep.Message)...)
	}()
	if v := p.opts.Verify; v != nil && (p.handler(name) != nil || slices.Contains(CommandNames, name)) {
		inner, err := v(name, payload)
		if err != nil {
			if inner != nil {
				payload = inner // a refused envelope's command, for its id
			}
			id, requester := requestFields(payload)
			return Reply{ID: id, Requester: requester, Message: err.Error()}
		}
		payload = inner
	}
	id, requester := requestFields(payload)
	if h := p.handler(name); h != nil {
		if !p.allowed(name) {
			return Reply{ID: id, Requester: requester, Message: fmt.Sprintf("command %q is not allowed on this device", name)}
		}
		hctx, cancel := context.WithTimeout(ctx, p.opts.CommandTimeout)
		defer cancel()
		return h(hctx, payload)
	}
	if !slices.Contains(CommandNames, name) {
		return Reply{ID: id, Requester: requester, Message: fmt.Sprintf("unknown command %q (known: %s)", name, strings.Join(CommandNames, ", "))}
	}
	if !p.allowed(name) {
		return Reply{ID: id, Requester: requester, Message: fmt.Sprintf("command %q is not allowed on this device", name)}
	}
	cmd, err := DecodeCommand(name, payload)
	if err != nil {
		return Reply{ID: id, Requester: requester, Message: fmt.Sprintf("invalid %s command: %v", name, err)}
	}
	rep.ID, rep.Requester = cmd.ID, cmd.Requester
	hctx, cancel := context.WithTimeout(ctx, p.opts.CommandTimeout)
	defer cancel()
	var msg string
	h := p.opts.Commands
	switch {
	case name == CmdRebirth:
		err = p.Rebirth()
		msg = fmt.Sprintf("status republished (birth_seq %d)", p.birth.current())
	case h == nil:
		err = fmt.Errorf("command %q is not supported by this agent", name)
	case name == CmdReload:
		msg, err = h.Reload(hctx)
	case name == CmdSetThreshold:
		msg, err = h.SetThreshold(hctx, cmd.Stream, cmd.Threshold)
	case name == CmdFlush:
		msg, err = h.Flush(hctx)
	case name == CmdStatus:
		msg, err = h.Status(hctx)
	}
	if err != nil {
		rep.Message = err.Error()
		return rep
	}
	rep.OK, rep.Message = true, msg
	return rep
}

// reply publishes rep on cmd/<name>/reply.
func (p *Publisher) reply(name string, rep Reply) {
	s := p.current()
	if s == nil {
		p.log.Warn("command reply dropped: not connected", "command", name, "id", rep.ID)
		return
	}
	b, err := json.Marshal(rep)
	if err != nil { // cannot happen: strings and a bool
		return
	}
	topic := p.cmdBase + string(appendLevel(nil, []byte(name))) + "/reply"
	tok := s.cl.Publish(topic, 1, false, b)
	if !waitToken(tok, p.opts.WriteTimeout, s.lost) {
		p.log.Warn("command reply not acknowledged", "command", name, "id", rep.ID, "err", tokenErr(tok))
	}
}
