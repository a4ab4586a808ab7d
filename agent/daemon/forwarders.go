package daemon

import (
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
	if cfg.Amplitude.On() {
		key, err := cfg.Amplitude.ReadAPIKey()
		if err != nil {
			return fmt.Errorf("amplitude.api_key_file: %w", err)
		}
		o := amplitude.DefaultOptions()
		o.APIKey, o.Endpoint, o.DeviceID = key, cfg.Amplitude.URL(), cfg.DeviceID
		if cfg.Amplitude.Region != "" {
			o.Region = cfg.Amplitude.Region
		}
		o.API = amplitude.APIHTTP
		if cfg.Amplitude.API == "batch" {
			o.API = amplitude.APIBatch
		}
		setStr(&o.MinSeverity, cfg.Amplitude.MinSeverity)
		o.MinConfidence = cfg.Amplitude.MinConfidence
		setDur(&o.FlushInterval, cfg.Amplitude.FlushInterval)
		setDur(&o.Timeout, cfg.Amplitude.Timeout)
		setDur(&o.Backoff.Max, cfg.Amplitude.MaxRetryBackoff)
		if cfg.Amplitude.MaxBatch > 0 {
			o.MaxBatch = cfg.Amplitude.MaxBatch
			o.MaxPending = max(o.MaxPending, o.MaxBatch)
		}
		o.AppVersion = d.opts.Version
		o.DeadLetters = forward.BufferDeadLetters{Buffer: d.buf}
		o.Logger = d.log
		f, err := amplitude.New(d.buf, o)
		if err != nil {
			return fmt.Errorf("amplitude: %w", err)
		}
		err = d.addConsumer("register the Amplitude forwarder", amplitude.Consumer, amplitude.Lanes(), consumer{name: "amplitude", run: f.Run, stats: func() health.Forwarder {
			s := f.Stats()
			return health.Forwarder{State: string(s.State), Backlog: s.Pending, LagS: s.Lag.Seconds(), DeadLetters: s.DeadLettered, Sent: s.Acked, LastError: s.LastError}
		}})
		if err != nil {
			return err
		}
		on[amplitude.Consumer] = true
	}
	if cfg.Dify.On() {
		key, err := cfg.Dify.ReadAPIKey()
		if err != nil {
			return fmt.Errorf("dify.api_key_file: %w", err)
		}
		o := dify.DefaultOptions()
		o.APIKey, o.User, o.RateLimit, o.Cooldown = key, cfg.DifyUser(), dify.Rate(cfg.Dify.RateLimit), cfg.Dify.Cooldown
		setStr(&o.BaseURL, cfg.Dify.BaseURL)
		setStr(&o.ResponseMode, cfg.Dify.ResponseMode)
		setStr(&o.MinSeverity, cfg.Dify.MinSeverity)
		o.MinConfidence = cfg.Dify.MinConfidence
		setDur(&o.Timeout, cfg.Dify.Timeout)
		setDur(&o.Backoff.Max, cfg.Dify.MaxRetryBackoff)
		if len(cfg.Dify.Inputs) > 0 {
			o.Inputs = cfg.Dify.Inputs
		}
		if cfg.Dify.MaxConcurrency > 0 {
			o.MaxConcurrency = cfg.Dify.MaxConcurrency
		}
		o.DeadLetters = forward.BufferDeadLetters{Buffer: d.buf}
		o.Logger = d.log
		f, err := dify.New(d.buf, o)
		if err != nil {
			return fmt.Errorf("dify: %w", err)
		}
		err = d.addConsumer("register the Dify forwarder", dify.Consumer, dify.Lanes(), consumer{name: "dify", run: f.Run, stats: func() health.Forwarder {
			s := f.Stats()
			return health.Forwarder{State: string(s.State), Backlog: s.Pending, LagS: s.Lag.Seconds(), DeadLetters: s.DeadLettered, Sent: s.Succeeded, LastError: s.LastError}
		}})
		if err != nil {
			return err
		}
		on[dify.Consumer] = true
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
