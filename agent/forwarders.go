package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/amplitude"
	"github.com/vigil-edge/vigil/agent/forward/dify"
	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/agent/publish"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

// Consumer names of the buffer.
const consumerMQTT = "mqtt"

// setupForwarders builds the embedded broker, the MQTT publisher and the
// Amplitude and Dify forwarders that the config switches on. Consumers are
// registered on their lanes here, before any source runs, so no record is
// deleted before every consumer of its lane has seen it; consumers switched
// off are removed so they hold nothing back.
func (d *daemon) setupForwarders(ctx context.Context) error {
	cfg := d.cfg
	on := map[string]bool{}

	if broker := d.brokerURL(); broker != "" {
		pw, err := cfg.MQTT.ReadPassword()
		if err != nil {
			return fmt.Errorf("mqtt.password_file: %w", err)
		}
		o := publish.DefaultOptions()
		o.Broker, o.Device, o.Prefix, o.ClientID = broker, cfg.DeviceID, cfg.MQTT.Prefix, cfg.ClientID()
		o.Username, o.Password = cfg.MQTT.Username, pw.Reveal()
		o.TLS = publish.TLSOptions{CAFile: cfg.MQTT.TLS.CAFile, CertFile: cfg.MQTT.TLS.CertFile, KeyFile: cfg.MQTT.TLS.KeyFile,
			ServerName: cfg.MQTT.TLS.ServerName, InsecureSkipVerify: cfg.MQTT.TLS.InsecureSkipVerify}
		o.Consumer = consumerMQTT
		o.ScoreQoS, o.AlertQoS, o.AdviceQoS = byte(cfg.MQTT.QoS.Score), byte(cfg.MQTT.QoS.Alert), byte(cfg.MQTT.QoS.Advice)
		if cfg.MQTT.MaxInflight > 0 {
			o.InFlight = cfg.MQTT.MaxInflight
		}
		o.ReplayRate = float64(cfg.MQTT.ReplayRate)
		o.ReconnectMax = max(cfg.MQTT.ReconnectMax, o.ReconnectMin)
		if cfg.MQTT.KeepAlive > 0 {
			o.KeepAlive = cfg.MQTT.KeepAlive
		}
		if cfg.MQTT.ConnectTimeout > 0 {
			o.ConnectTimeout = cfg.MQTT.ConnectTimeout
		}
		o.Version = version
		o.Models = d.modelList
		o.StateDir = filepath.Join(cfg.DataDir, "mqtt")
		if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
			return fmt.Errorf("mqtt state: %w", err)
		}
		o.HealthInterval = cfg.Health.Interval
		o.Health = func() any { return d.reporter.Snapshot() }
		o.Commands = remoteCommands{d}
		o.CommandsEnabled = cfg.MQTT.Commands.Enabled
		o.AllowCommands = cfg.MQTT.Commands.Allow
		o.Logger = d.log
		p, err := publish.New(d.buf, o)
		if err != nil {
			return fmt.Errorf("mqtt: %w", err)
		}
		if err := d.buf.RegisterConsumer(consumerMQTT, record.LaneScore, record.LaneAlert, record.LaneAdvice); err != nil {
			return fmt.Errorf("register the MQTT publisher: %w", err)
		}
		on[consumerMQTT] = true
		d.publisher = p
		d.consumers = append(d.consumers, consumer{name: "mqtt", run: p.Run, stats: func() health.Forwarder {
			s := p.Stats()
			f := health.Forwarder{State: "disconnected", LastError: s.LastError}
			if s.Connected {
				f.State = "ok"
			}
			for _, l := range s.Lanes {
				f.Sent += l.Published
				f.Backlog += int(l.ReplayBacklog + uint64(l.InFlight))
			}
			return f
		}})
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
		setDur(&o.FlushInterval, cfg.Amplitude.FlushInterval)
		setDur(&o.Timeout, cfg.Amplitude.Timeout)
		setDur(&o.Backoff.Max, cfg.Amplitude.MaxRetryBackoff)
		if cfg.Amplitude.MaxBatch > 0 {
			o.MaxBatch = cfg.Amplitude.MaxBatch
			o.MaxPending = max(o.MaxPending, o.MaxBatch)
		}
		o.AppVersion = version
		o.DeadLetters = forward.BufferDeadLetters{Buffer: d.buf}
		o.Logger = d.log
		f, err := amplitude.New(d.buf, o)
		if err != nil {
			return fmt.Errorf("amplitude: %w", err)
		}
		if err := d.buf.RegisterConsumer(amplitude.Consumer, amplitude.Lanes()...); err != nil {
			return fmt.Errorf("register the Amplitude forwarder: %w", err)
		}
		on[amplitude.Consumer] = true
		d.consumers = append(d.consumers, consumer{name: "amplitude", run: f.Run, stats: func() health.Forwarder {
			s := f.Stats()
			return health.Forwarder{State: string(s.State), Backlog: s.Pending, LagS: s.Lag.Seconds(), DeadLetters: s.DeadLettered, Sent: s.Acked, LastError: s.LastError}
		}})
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
		if err := d.buf.RegisterConsumer(dify.Consumer, dify.Lanes()...); err != nil {
			return fmt.Errorf("register the Dify forwarder: %w", err)
		}
		on[dify.Consumer] = true
		d.consumers = append(d.consumers, consumer{name: "dify", run: f.Run, stats: func() health.Forwarder {
			s := f.Stats()
			return health.Forwarder{State: string(s.State), Backlog: s.Pending, LagS: s.Lag.Seconds(), DeadLetters: s.DeadLettered, Sent: s.Succeeded, LastError: s.LastError}
		}})
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

// brokerURL is the broker Vigil publishes to: mqtt.broker, else the embedded
// broker, else none.
func (d *daemon) brokerURL() string {
	if d.cfg.MQTT.Broker != "" || d.embedded == nil {
		return d.cfg.BrokerURL()
	}
	return d.embeddedURL()
}

// embeddedURL is the URL of the embedded broker as it listens (its port
// may have been 0 in the config).
func (d *daemon) embeddedURL() string {
	host, port, err := net.SplitHostPort(d.embedded.Addr())
	if err != nil {
		return "tcp://" + d.embedded.Addr()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "tcp://" + net.JoinHostPort(host, port)
}

// startEmbeddedBroker binds the embedded broker, when configured, before
// the sources that may subscribe to it are built.
func (d *daemon) startEmbeddedBroker() error {
	listen := d.cfg.MQTT.EmbeddedBroker.Listen
	if listen == "" {
		return nil
	}
	b, err := publish.NewEmbeddedBroker(listen, d.log)
	if err != nil {
		return fmt.Errorf("mqtt.embedded_broker.listen: %w", err)
	}
	d.embedded = b
	return nil
}

// modelList names the model of every stream, for the status message.
func (d *daemon) modelList() []string {
	var out []string
	if g := d.current(); g != nil {
		for name, st := range g.pipe.Stats().Streams {
			if st.Model != "" {
				out = append(out, name+"="+st.Model)
			}
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// remoteCommands carries out the MQTT remote commands on the daemon.
type remoteCommands struct{ d *daemon }

func (c remoteCommands) Reload(ctx context.Context) (string, error) {
	if err := c.d.Reload(ctx); err != nil {
		return "", err
	}
	return "reloaded config and models", nil
}

func (c remoteCommands) SetThreshold(ctx context.Context, stream string, threshold float64) (string, error) {
	if err := c.d.current().pipe.SetThreshold(ctx, stream, threshold); err != nil {
		return "", err
	}
	return fmt.Sprintf("stream %s: threshold %g", stream, threshold), nil
}

func (c remoteCommands) Flush(ctx context.Context) (string, error) {
	st := c.d.buf.Stats()
	var parts []string
	for _, lane := range []string{record.LaneScore, record.LaneAlert, record.LaneAdvice} {
		parts = append(parts, fmt.Sprintf("%s %d", lane, st.Lanes[lane].Records))
	}
	return "buffer durable; records held: " + strings.Join(parts, ", "), nil
}

func (c remoteCommands) Status(ctx context.Context) (string, error) {
	s := c.d.reporter.Snapshot()
	var streams []string
	for name, state := range s.Learning {
		streams = append(streams, name+" "+state)
	}
	sort.Strings(streams)
	return fmt.Sprintf("up %.0fs, %d inputs, %d scores, %d alerts, %d drops; streams: %s",
		s.UptimeS, s.Pipeline.Inputs, s.Pipeline.Scores, s.Pipeline.Alerts, s.Pipeline.DropTotal(), strings.Join(streams, ", ")), nil
}

var _ publish.Commands = remoteCommands{}
