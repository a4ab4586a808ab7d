package daemon

import (
	"net/http"
	"strings"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/statuspage"
)

// brokerState is the publisher's connection, for /readyz, metrics and the
// status page: the broker in use (a node of mqtt.brokers) once connected.
func (d *Daemon) brokerState() health.Broker {
	p := d.publisher
	if p == nil {
		return health.Broker{}
	}
	s := p.Stats()
	url := s.Broker
	if url == "" {
		d.mu.Lock()
		url = d.brokerURL()
		d.mu.Unlock()
	}
	return health.Broker{Configured: true, URL: url, Connected: s.Connected, Connects: s.Connects, LastError: s.LastError}
}

// laneCaps are the configured lanes' byte caps, for /readyz and metrics.
func laneCaps(cfg *config.Config) map[string]health.Lane {
	m := map[string]health.Lane{}
	for name, l := range map[string]config.Lane{record.LaneScore: cfg.Buffer.Lanes.Score,
		record.LaneAlert: cfg.Buffer.Lanes.Alert, record.LaneAdvice: cfg.Buffer.Lanes.Advice} {
		m[name] = health.Lane{MaxBytes: int64(l.MaxBytes), Reject: l.OnFull == "reject"}
	}
	return m
}

// statusPage is the page on / and its /status.json, behind http.token when
// one is set.
func (d *Daemon) statusPage() http.Handler {
	tok, err := d.cfg.HTTP.ReadToken()
	if err != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "http.token_file: "+err.Error(), http.StatusInternalServerError)
		})
	}
	return statuspage.New(statuspage.Options{
		Recent: d.recent, Health: d.reporter.Snapshot, Live: d.reporter.Live, Ready: d.reporter.Ready,
		Broker: d.brokerState, Lanes: laneCaps(d.cfg), MaxBytes: int64(d.cfg.Buffer.MaxBytes), Token: tok.Reveal(),
	})
}

// appender is what the pipeline appends to: the buffer, through the
// episode ledger and the status page's tap on the latest scores and alerts.
func (d *Daemon) appender() pipeline.Appender {
	if d.recent == nil {
		d.recent = statuspage.NewRecent(8192, 256)
	}
	if d.episodes == nil {
		return d.recent.Tap(d.buf)
	}
	return d.recent.Tap(d.episodes.Wrap(d.buf))
}

// inputChecks are the readiness checks of the sources: each MQTT source is
// connected to its broker and subscribed.
func (d *Daemon) inputChecks() []health.Check {
	g := d.current()
	if g == nil {
		return nil
	}
	var cs []health.Check
	for _, p := range g.sources {
		if p.connected == nil {
			continue // no broker connection (not an MQTT source)
		}
		c := health.Check{Name: strings.Replace(p.name, "/", " ", 1), OK: p.connected(), Reason: "connected and subscribed"}
		if !c.OK {
			c.Reason = "not connected to its broker; retrying (see the log)"
		}
		cs = append(cs, c)
	}
	return cs
}
