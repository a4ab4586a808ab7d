package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/agent/statuspage"
)

// startWatchdog pings systemd's watchdog at half its interval (WATCHDOG_USEC
// is set by WatchdogSec=) while the pipeline makes progress — the liveness
// probe's check — so that systemd restarts a wedged pipeline. It returns a
// stop function.
func startWatchdog(ctx context.Context, r *health.Reporter, log *slog.Logger) func() {
	usec := os.Getenv("WATCHDOG_USEC")
	var n int64
	if _, err := fmt.Sscan(usec, &n); err != nil || n <= 0 {
		return func() {}
	}
	w := &health.Watchdog{Check: func() error { return firstFailure(r.Live()) }, Notify: notifySystemd, Log: log}
	ctx, cancel := context.WithCancel(ctx)
	t := time.NewTicker(time.Duration(n) * time.Microsecond / 2)
	go func() {
		defer t.Stop()
		w.Run(t.C, ctx.Done())
	}()
	return cancel
}

func firstFailure(cs []health.Check) error {
	for _, c := range cs {
		if !c.OK {
			return fmt.Errorf("%s: %s", c.Name, c.Reason)
		}
	}
	return nil
}

// brokerState is the publisher's connection, for /readyz, metrics and the
// status page.
func (d *daemon) brokerState() health.Broker {
	p := d.publisher
	if p == nil {
		return health.Broker{}
	}
	s := p.Stats()
	d.mu.Lock()
	url := d.brokerURL()
	d.mu.Unlock()
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
func (d *daemon) statusPage() http.Handler {
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

// appender is what the pipeline appends to: the buffer, through the status
// page's tap on the latest scores and alerts.
func (d *daemon) appender() pipeline.Appender {
	if d.recent == nil {
		d.recent = statuspage.NewRecent(8192, 256)
	}
	return d.recent.Tap(d.buf)
}

// inputChecks are the readiness checks of the sources: each MQTT source is
// connected to its broker and subscribed.
func (d *daemon) inputChecks() []health.Check {
	g := d.current()
	if g == nil {
		return nil
	}
	var cs []health.Check
	for _, s := range g.sources {
		m, ok := s.(*source.MQTT)
		if !ok {
			continue
		}
		c := health.Check{Name: "source " + m.Name(), OK: m.Connected(), Reason: "connected and subscribed"}
		if !c.OK {
			c.Reason = "not connected to its broker; retrying (see the log)"
		}
		cs = append(cs, c)
	}
	return cs
}
