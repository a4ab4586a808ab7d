package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/amplitude"
	"github.com/vigil-edge/vigil/agent/forward/dify"
	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/buffer"
)

// setupForwarders builds the MQTT publisher and the Amplitude and Dify
// forwarders that the config switches on. Consumers are
// registered on their lanes here, before any source runs, so no record is
// deleted before every consumer of its lane has seen it; consumers switched
// off are removed so they hold nothing back.
func (d *Daemon) setupForwarders() error {
	cfg := d.cfg
	on := map[string]bool{}

	if d.brokerURL() != "" {
		if err := d.setupPublisher(); err != nil {
			return err
		}
		on[consumerMQTT] = true
	}
	for _, fw := range []struct {
		on       bool
		id, what string
		lanes    []string
		build    func() (consumer, error)
	}{
		{cfg.Amplitude.On(), amplitude.Consumer, "Amplitude", amplitude.Lanes(), d.amplitudeForwarder},
		{cfg.Dify.On(), dify.Consumer, "Dify", dify.Lanes(), d.difyForwarder},
	} {
		if !fw.on {
			continue
		}
		c, err := fw.build()
		if err != nil {
			return err
		}
		if err := d.addConsumer("register the "+fw.what+" forwarder", fw.id, fw.lanes, c); err != nil {
			return err
		}
		on[fw.id] = true
	}
	for _, name := range []string{consumerMQTT, amplitude.Consumer, dify.Consumer} {
		if !on[name] {
			if err := d.buf.RemoveConsumer(name); err != nil && !errors.Is(err, buffer.ErrUnknownConsumer) {
				d.log.Warn("removing a consumer that is switched off", "consumer", name, "err", err)
			}
		}
	}
	return nil
}

// amplitudeForwarder builds the Amplitude forwarder the config describes.
func (d *Daemon) amplitudeForwarder() (consumer, error) {
	c := d.cfg.Amplitude
	key, err := c.ReadAPIKey()
	if err != nil {
		return consumer{}, fmt.Errorf("amplitude.api_key_file: %w", err)
	}
	o := amplitude.DefaultOptions()
	o.APIKey, o.Endpoint, o.DeviceID, o.AppVersion = key, c.URL(), d.cfg.DeviceID, d.opts.Version
	setStr(&o.Region, c.Region)
	o.API = amplitude.APIHTTP
	if c.API == "batch" {
		o.API = amplitude.APIBatch
	}
	setStr(&o.MinSeverity, c.MinSeverity)
	o.MinConfidence = c.MinConfidence
	setDur(&o.FlushInterval, c.FlushInterval)
	setDur(&o.Timeout, c.Timeout)
	setDur(&o.Backoff.Max, c.MaxRetryBackoff)
	if c.MaxBatch > 0 {
		o.MaxBatch = c.MaxBatch
		o.MaxPending = max(o.MaxPending, o.MaxBatch)
	}
	o.DeadLetters, o.Logger = forward.BufferDeadLetters{Buffer: d.buf}, d.log
	f, err := amplitude.New(d.buf, o)
	return forwarderConsumer("amplitude", f, err, func(s amplitude.Stats) health.Forwarder {
		return health.Forwarder{State: string(s.State), Backlog: s.Pending, LagS: s.Lag.Seconds(), DeadLetters: s.DeadLettered, Sent: s.Acked, LastError: s.LastError}
	})
}

// difyForwarder builds the Dify forwarder the config describes.
func (d *Daemon) difyForwarder() (consumer, error) {
	c := d.cfg.Dify
	key, err := c.ReadAPIKey()
	if err != nil {
		return consumer{}, fmt.Errorf("dify.api_key_file: %w", err)
	}
	o := dify.DefaultOptions()
	o.APIKey, o.User, o.RateLimit, o.Cooldown = key, d.cfg.DifyUser(), dify.Rate(c.RateLimit), c.Cooldown
	setStr(&o.BaseURL, c.BaseURL)
	setStr(&o.ResponseMode, c.ResponseMode)
	setStr(&o.MinSeverity, c.MinSeverity)
	o.MinConfidence = c.MinConfidence
	setDur(&o.Timeout, c.Timeout)
	setDur(&o.Backoff.Max, c.MaxRetryBackoff)
	if len(c.Inputs) > 0 {
		o.Inputs = c.Inputs
	}
	if c.MaxConcurrency > 0 {
		o.MaxConcurrency = c.MaxConcurrency
	}
	o.DeadLetters, o.Logger = forward.BufferDeadLetters{Buffer: d.buf}, d.log
	f, err := dify.New(d.buf, o)
	return forwarderConsumer("dify", f, err, func(s dify.Stats) health.Forwarder {
		return health.Forwarder{State: string(s.State), Backlog: s.Pending, LagS: s.Lag.Seconds(), DeadLetters: s.DeadLettered, Sent: s.Succeeded, LastError: s.LastError}
	})
}

// forwarderConsumer is the consumer that runs f, a forwarder New returned
// with err, under name; show turns its stats into what /healthz shows.
func forwarderConsumer[S any, F interface {
	Run(context.Context) error
	Stats() S
}](name string, f F, err error, show func(S) health.Forwarder) (consumer, error) {
	if err != nil {
		return consumer{}, fmt.Errorf("%s: %w", name, err)
	}
	return consumer{name: name, run: f.Run, stats: func() health.Forwarder { return show(f.Stats()) }}, nil
}

// addConsumer registers c as the buffer consumer id of lanes and adds it
// to the consumers Run starts; what says what failed, in the error.
func (d *Daemon) addConsumer(what, id string, lanes []string, c consumer) error {
	if err := d.buf.RegisterConsumer(id, lanes...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	d.consumers = append(d.consumers, c)
	return nil
}

// setStr and setDur copy a config value over a default unless it is zero.
func setStr(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func setDur(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}
