package daemon

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/models"
)

// buildSources makes the sources of cfg, feeding g's pipeline.
func (d *Daemon) buildSources(cfg *config.Config, g *generation) error {
	sink := g.pipe
	for i, sc := range cfg.Sources {
		log := d.log // each source names itself in its log lines
		key := fmt.Sprintf("sources[%d] %s", i, sc.Name)
		switch sc.Type {
		case config.SourceSimulator:
			sim := sc.Simulator
			if sim == nil {
				sim = &config.SimulatorSource{}
			}
			o := source.DefaultSimulatorOptions()
			o.Name, o.Seed, o.Rate, o.Faults, o.Logger = sc.Name, uint64(sim.Seed), float64(sim.Rate), sim.Faults, log
			if sim.Rate > 0 {
				// One sample every 1/rate seconds of wall time, stamped so.
				o.Step = time.Second / time.Duration(sim.Rate)
			}
			if sim.FaultInterval > 0 {
				o.FaultEvery = sim.FaultInterval
			}
			if o.Faults {
				// The demo wants every severity within the first minute.
				o.FirstFault = min(o.FaultEvery, 10*time.Second)
				o.FaultDuration = min(o.FaultDuration, o.FaultEvery/2)
			}
			s, err := source.NewSimulator(o, sink)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			g.sources = append(g.sources, part{name: "source/" + sc.Name, run: s.Run, policy: restartOnError})
			if sim.Users > 0 {
				k := source.DefaultKioskOptions()
				k.Name, k.Seed, k.Users, k.Faults, k.Logger = sc.Name, uint64(sim.Seed), sim.Users, sim.Faults, log
				ks, err := source.NewKioskSimulator(k, sink)
				if err != nil {
					return fmt.Errorf("%s: kiosk users: %w", key, err)
				}
				g.sources = append(g.sources, part{name: "source/" + sc.Name + "/kiosk", run: ks.Run, policy: restartOnError})
			}
		case config.SourceHTTP:
			o := source.DefaultHTTPEventsOptions()
			o.Name, o.AllowedOrigins, o.Counter, o.Logger = sc.Name, cfg.HTTP.CORSOrigins, sink, log
			o.Limits.MaxFuture = cfg.HTTP.MaxClockSkew
			if cfg.HTTP.Durable {
				o.JournalDir, o.JournalRetention = filepath.Join(cfg.DataDir, "events-journal"), cfg.HTTP.JournalRetention
			}
			if cfg.HTTP.MaxBodyBytes > 0 {
				o.MaxBodyBytes = int64(cfg.HTTP.MaxBodyBytes)
			}
			tok, err := cfg.HTTP.ReadToken()
			if err != nil {
				return fmt.Errorf("http.token_file: %w", err)
			}
			if tok != "" {
				o.Token, o.QueryToken = tok.Reveal(), cfg.HTTP.AllowQueryToken
			}
			h, err := source.NewHTTPEvents(o, sink)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			g.events = h
			g.sources = append(g.sources, part{name: "source/" + sc.Name, run: h.Run, policy: restartOnError})
		case config.SourceMQTT:
			m := sc.MQTT
			o := source.DefaultMQTTOptions()
			o.Name, o.Device, o.Broker, o.Topics, o.QoS = sc.Name, cfg.DeviceID, d.sourceBroker(cfg, m), m.Topics, byte(m.QoS)
			if bs := cfg.SourceBrokers(m); len(bs) > 1 && (m.Broker == "" || len(m.Brokers) > 0) { // a cluster's nodes
				o.Broker, o.Brokers = "", bs
			}
			if m.CleanSession != nil {
				o.CleanSession = *m.CleanSession
			}
			o.Counter, o.Logger, o.StreamMap = sink, log, m.StreamMap
			o.Retained, o.MaxFuture = m.Retained, m.MaxClockSkew
			if m.Broker == "" {
				pw, err := cfg.MQTT.ReadPassword()
				if err != nil {
					return fmt.Errorf("mqtt.password_file: %w", err)
				}
				o.Username, o.Password = cfg.MQTT.Username, pw.Reveal()
				if o.TLS, err = tlsConfig(cfg.MQTT.TLS, cfg.SourceBrokerURL(m)); err != nil {
					return fmt.Errorf("mqtt.tls: %w", err)
				}
			}
			o.Payload.Fields = m.Fields.Values
			if len(o.Payload.Fields) == 0 && m.Format != "events" {
				o.Payload.Fields = sameNameFields(cfg, sc.Name)
			}
			o.Payload.TimeField = m.Fields.Timestamp
			o.Payload.TimeFormat = timeFormat(m.Fields.TimestampFormat)
			o.Payload.IDField = m.Fields.ID
			o.Payload.Events = m.Format == "events"
			if f, ok := cutPrefix(m.StreamFrom, "field:"); ok {
				o.Payload.StreamField = f
			}
			if streams := streamsOf(cfg, sc.Name); len(streams) == 1 {
				o.Stream = streams[0] // what stream_map does not route goes to the only stream
			}
			s, err := source.NewMQTT(o, sink)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			g.sources = append(g.sources, part{name: "source/" + sc.Name, run: s.Run, policy: restartOnError, connected: s.Connected})
		case config.SourceReplay:
			r := sc.Replay
			o := source.DefaultReplayOptions()
			o.Name, o.Path, o.Format, o.Speed, o.Loop = sc.Name, r.Path, r.Format, r.Speed, r.Loop
			o.Counter, o.Logger = sink, log
			o.Stream = r.Stream
			if o.Stream == "" {
				if streams := streamsOf(cfg, sc.Name); len(streams) == 1 {
					o.Stream = streams[0]
				}
			}
			if r.Delimiter != "" {
				o.CSV.Delimiter = []rune(r.Delimiter)[0]
			}
			o.CSV.TimeColumn, o.CSV.TimeFormat, o.CSV.Columns = r.TimestampColumn, timeFormat(r.TimestampFormat), r.Columns
			o.Payload.TimeField, o.Payload.TimeFormat = r.TimestampColumn, timeFormat(r.TimestampFormat)
			s, err := source.NewReplay(o, sink)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			// A file that cannot be read does not mend, and a replay run
			// again would start over: its error ends Run.
			g.sources = append(g.sources, part{name: "source/" + sc.Name, run: s.Run, policy: restartNever})
		default:
			return fmt.Errorf("%s: unknown type %q", key, sc.Type)
		}
	}
	return nil
}

func streamsOf(cfg *config.Config, src string) []string {
	var out []string
	for _, s := range cfg.Streams {
		if s.Source == src {
			out = append(out, s.Name)
		}
	}
	return out
}

// timeFormat maps the config's "auto" to the sources' "".
func timeFormat(f string) string {
	if f == "auto" {
		return ""
	}
	return f
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// tlsConfig builds the TLS configuration for a broker URL from the config;
// nil for a broker that does not use TLS.
func tlsConfig(c config.TLS, broker string) (*tls.Config, error) {
	if !mqttconn.IsTLSURL(broker) {
		return nil, nil
	}
	return mqttconn.TLS(c).Config()
}

// sourceBroker is the broker an mqtt source subscribes to: its own, else
// the configured one, else the embedded broker as it listens.
func (d *Daemon) sourceBroker(cfg *config.Config, m *config.MQTTSource) string {
	if (m != nil && (m.Broker != "" || len(m.Brokers) > 0)) || cfg.MQTT.Broker != "" || len(cfg.MQTT.Brokers) > 0 || d.embedded == nil {
		return cfg.SourceBrokerURL(m)
	}
	return d.embeddedURL()
}

// sameNameFields maps each channel of the models of the streams fed by
// source src to the payload field of the same name: an MQTT source whose
// fields.values is empty.
func sameNameFields(cfg *config.Config, src string) map[string]string {
	out := map[string]string{}
	for _, st := range cfg.Streams {
		if st.Source != src {
			continue
		}
		chans := st.Channels
		if len(chans) == 0 {
			if man, _, err := models.ReadFiles(filepath.Join(cfg.ModelsDir, st.Model)); err == nil {
				chans = man.Input.Channels
			}
		}
		for _, c := range chans {
			out[c] = c
		}
	}
	return out
}
