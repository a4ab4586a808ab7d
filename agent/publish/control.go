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
			if ok, n := p.healthLog.allow(time.Now(), time.Minute); ok {
				p.log.Warn("health not published", "err", err, "suppressed", n)
			}
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
		case jsonKind(snap) == "an object":
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
	name    string
	payload []byte
}

// onCommand runs on paho's callback goroutine: it only queues the command.
func (p *Publisher) onCommand(_ mqtt.Client, m mqtt.Message) {
	name := strings.TrimPrefix(m.Topic(), p.cmdBase)
	select {
	case p.cmdq <- cmdReq{name: name, payload: bytes.Clone(m.Payload())}:
	default:
		p.cmdDropped.Add(1)
		p.log.Warn("command dropped: too many queued", "command", name)
	}
}

// commandLoop runs the queued commands one at a time and replies.
func (p *Publisher) commandLoop(ctx context.Context) {
	for {
		select {
		case req := <-p.cmdq:
			rep := p.execute(ctx, req.name, req.payload)
			p.reply(req.name, rep)
		case <-ctx.Done():
			return
		}
	}
}

// execute checks, decodes and runs one command. Nothing changes unless the
// command is known, allowed and valid.
func (p *Publisher) execute(ctx context.Context, name string, payload []byte) (rep Reply) {
	p.commands.Add(1)
	log := p.log.With("command", name)
	defer func() {
		if r := recover(); r != nil {
			rep = Reply{ID: rep.ID, Message: "internal error"}
			log.Error("command handler panicked", "panic", r)
		}
		if !rep.OK {
			p.cmdFailed.Add(1)
		}
		log.Info("command", "id", rep.ID, "ok", rep.OK, "message", rep.Message)
	}()
	if v := p.opts.Verify; v != nil && (p.handler(name) != nil || slices.Contains(CommandNames, name)) {
		inner, err := v(name, payload)
		if err != nil {
			if inner != nil {
				payload = inner // a refused envelope's command, for its id
			}
			return Reply{ID: requestID(payload), Message: err.Error()}
		}
		payload = inner
	}
	if h := p.handler(name); h != nil {
		if !p.allowed(name) {
			return Reply{ID: requestID(payload), Message: fmt.Sprintf("command %q is not allowed on this device", name)}
		}
		hctx, cancel := context.WithTimeout(ctx, p.opts.CommandTimeout)
		defer cancel()
		return h(hctx, payload)
	}
	if !slices.Contains(CommandNames, name) {
		return Reply{ID: requestID(payload), Message: fmt.Sprintf("unknown command %q (known: %s)", name, strings.Join(CommandNames, ", "))}
	}
	if !p.allowed(name) {
		return Reply{ID: requestID(payload), Message: fmt.Sprintf("command %q is not allowed on this device", name)}
	}
	cmd, err := DecodeCommand(name, payload)
	if err != nil {
		return Reply{ID: requestID(payload), Message: fmt.Sprintf("invalid %s command: %v", name, err)}
	}
	rep.ID = cmd.ID
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
