package daemon

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/agent/publish"
	"github.com/vigil-edge/vigil/agent/record"
)

// Consumer names of the buffer.
const consumerMQTT = "mqtt"

// setupPublisher builds the MQTT publisher (with its remote commands and
// its status and health messages) for the broker brokerURL names, and
// registers it on its lanes.
func (d *Daemon) setupPublisher() error {
	cfg := d.cfg
	broker := d.brokerURL()
	pw, err := cfg.MQTT.ReadPassword()
	if err != nil {
		return fmt.Errorf("mqtt.password_file: %w", err)
	}
	o := publish.DefaultOptions()
	o.Broker, o.Device, o.Prefix, o.ClientID = broker, cfg.DeviceID, cfg.MQTT.Prefix, cfg.ClientID()
	if len(cfg.MQTT.Brokers) > 0 { // a cluster's nodes, tried in order
		o.Broker, o.Brokers = "", cfg.MQTT.Brokers
	}
	o.PersistentSession = cfg.MQTT.PersistentSession
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
	o.Version = d.opts.Version
	o.Models = d.modelList
	o.StateDir = filepath.Join(cfg.DataDir, "mqtt")
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return fmt.Errorf("mqtt state: %w", err)
	}
	o.HealthInterval = cfg.Health.Interval
	o.StatusInterval = cfg.MQTT.StatusInterval
	o.Health = func() any { return d.reporter.Snapshot() }
	o.Commands = remoteCommands{d}
	o.Handlers = d.handlers()
	o.Verify = d.auth.verify
	o.CommandsEnabled = cfg.MQTT.Commands.Enabled
	o.AllowCommands = cfg.MQTT.Commands.Allow
	o.Logger = d.log
	o.Shadow = true // the buffer has the shadow lane (buffer.go)
	p, err := publish.New(d.buf, o)
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	lanes := []string{record.LaneScore, record.LaneAlert, record.LaneAdvice, record.LaneShadow}
	err = d.addConsumer("register the MQTT publisher", consumerMQTT, lanes, consumer{name: "mqtt", run: p.Run, stats: func() health.Forwarder {
		s := p.Stats()
		f := health.Forwarder{State: "disconnected", LastError: s.LastError, Broker: s.Broker, Failovers: s.Failovers}
		if s.Connected {
			f.State = "ok"
		}
		if o.CommandsEnabled {
			sub := s.CommandsSubscribed
			f.CommandsSubscribed = &sub
			f.CommandSubscribeFailures = s.CommandSubscribeFailures
		}
		for _, l := range s.Lanes {
			f.Sent += l.Published
			f.Backlog += int(l.ReplayBacklog + uint64(l.InFlight))
		}
		return f
	}})
	if err != nil {
		return err
	}
	d.publisher = p
	return nil
}

// brokerURL is the broker Vigil publishes to: mqtt.broker, else the embedded
// broker, else none.
func (d *Daemon) brokerURL() string {
	if d.cfg.MQTT.Broker != "" || len(d.cfg.MQTT.Brokers) > 0 || d.embedded == nil {
		return d.cfg.BrokerURL()
	}
	return d.embeddedURL()
}

// embeddedURL is the URL of the embedded broker as it listens (its port
// may have been 0 in the config).
func (d *Daemon) embeddedURL() string {
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
func (d *Daemon) startEmbeddedBroker() error {
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
func (d *Daemon) modelList() []string {
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
